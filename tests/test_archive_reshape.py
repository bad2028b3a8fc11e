"""The archive table shape, and ``reshape_archive_tables`` bringing an older table to it (every engine here)."""

from __future__ import annotations

import hashlib
import re
from datetime import date

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connections, transaction

from archival import engine
from archival.backends import backend_for, namespace_for
from archival.engine import archive_tables
from archival.engine.archive_tables import _index_name, key_constraint_name
from archival.engine.reshape import plan_reshape
from governance.models import AuditEvent, TableConfig

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)


def _config(name: str) -> TableConfig:
    return TableConfig.objects.active().get(table_name=name)


def _qualified(config) -> str:
    return backend_for("archive").qualified(namespace_for(config.source_db), config.table_name)


def _indexes(config) -> dict[str, tuple]:
    arc = backend_for("archive")
    return {
        i.name: (i.columns, i.primary, i.unique)
        for i in arc.archive_indexes(namespace_for(config.source_db), config.table_name)
    }


def _key_index(config):
    return next(v for v in _indexes(config).values() if v[2] and v[0] == tuple(config.pk_columns))


def _rows_digest(config) -> tuple[int, str]:
    """Row count and a digest of every row in key order (the archived data itself)."""
    arc = backend_for("archive")
    order = ", ".join(arc.quote(c) for c in config.pk_columns)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT * FROM {_qualified(config)} ORDER BY {order}")
        rows = cur.fetchall()
    digest = hashlib.sha256(repr([tuple(str(v) for v in row) for row in rows]).encode()).hexdigest()
    return len(rows), digest


def _make_old_shape(config) -> None:
    """Turn a current archive table into the shape earlier versions made: a UNIQUE key and a reference_date index."""
    arc = backend_for("archive")
    q = arc.quote
    ns, table = namespace_for(config.source_db), config.table_name
    qualified = _qualified(config)
    key = ", ".join(q(c) for c in config.pk_columns)
    name = key_constraint_name(table)
    refdate = _index_name(table, "refdate")
    vendor = connections["archive"].vendor
    with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
        if vendor == "postgresql":
            cur.execute(f"ALTER TABLE {qualified} DROP CONSTRAINT {q(name)}, ADD CONSTRAINT {q(name)} UNIQUE ({key})")
            cur.execute(f'CREATE INDEX {q(refdate)} ON {qualified} ("reference_date")')
        elif vendor == "mysql":
            cur.execute(
                f"ALTER TABLE {qualified} DROP PRIMARY KEY, ADD CONSTRAINT {q(name)} UNIQUE ({key}), "
                f"ADD INDEX {q(refdate)} (`reference_date`)"
            )
        else:
            cur.execute(f"SELECT sql FROM {q(ns)}.sqlite_master WHERE type = 'table' AND name = %s", [table])
            create = cur.fetchone()[0]
            cur.execute(f"SELECT sql FROM {q(ns)}.sqlite_master WHERE type = 'index' AND tbl_name = %s", [table])
            index_sql = [row[0] for row in cur.fetchall() if row[0]]
            old = re.sub(r"^CREATE TABLE [^(]*\(", f"CREATE TABLE {qualified} (", create, count=1)
            old = old.replace(f"{q(name)} PRIMARY KEY", f"{q(name)} UNIQUE")
            assert old != create
            cur.execute(f"CREATE TABLE {q(ns)}.{q('copy')} AS SELECT * FROM {qualified}")
            cur.execute(f"DROP TABLE {qualified}")
            cur.execute(old)
            cur.execute(f"INSERT INTO {qualified} SELECT * FROM {q(ns)}.{q('copy')}")
            cur.execute(f"DROP TABLE {q(ns)}.{q('copy')}")
            for sql in index_sql:
                cur.execute(re.sub(r"^CREATE INDEX ", f"CREATE INDEX {q(ns)}.", sql, count=1))
            cur.execute(f'CREATE INDEX {q(ns)}.{q(refdate)} ON {q(table)} ("reference_date")')


def _duplicate_refused(config) -> bool:
    arc = backend_for("archive")
    first = " AND ".join(f"{arc.quote(c)} = %s" for c in config.pk_columns)
    order = ", ".join(arc.quote(c) for c in config.pk_columns)
    with connections["archive"].cursor() as cur:
        cur.execute(arc.limit_sql(f"SELECT {order} FROM {_qualified(config)} ORDER BY {order}", "%s"), [1])
        key = list(cur.fetchone())
    try:
        with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
            cur.execute(f"INSERT INTO {_qualified(config)} SELECT * FROM {_qualified(config)} WHERE {first}", key)
    except IntegrityError:
        return True
    return False


def test_a_new_archive_table_has_the_key_as_primary_key_and_only_the_indexes_readers_need(demo):
    engine.run_cycle(cutoff=CUTOFF)
    position = _config("Position")
    indexes = _indexes(position)
    key = tuple(position.pk_columns)
    assert (key, True, True) in indexes.values()
    secondary = {v[0] for v in indexes.values() if not v[2]}
    assert secondary == {("retention_until",), ("contractId",)}
    prices = _config("PriceHistory")
    assert {v[0] for v in _indexes(prices).values() if not v[2]} == {("retention_until",)}
    assert _duplicate_refused(position) and _duplicate_refused(prices)
    # A new table is in shape: nothing to do.
    assert not plan_reshape(position).changes and not plan_reshape(prices).changes


def _run_seeing_indexes(config):
    """Run ``config``'s table alone; return the result and its secondary indexes as seen after each batch."""
    seen = []

    def on_batch(_rows):
        seen.append({v[0] for v in _indexes(config).values() if not v[2]})

    result = engine.run_cycle(cutoff=CUTOFF, tables=[config.table_name], on_batch=on_batch)
    assert all(t.done for t in result.tables), result.tables
    return result, seen


def test_a_run_builds_a_new_tables_secondary_indexes_after_its_batches(demo, monkeypatch):
    """The batches of a table with many rows to move write into the key alone; the indexes exist
    before Verify, with every row in them."""
    monkeypatch.setattr(archive_tables, "INDEXES_AFTER_ROWS", 1)  # the demo's Position counts as large
    position = _config("Position")
    _, seen_during_batches = _run_seeing_indexes(position)
    assert seen_during_batches and all(s == set() for s in seen_during_batches)
    assert {v[0] for v in _indexes(position).values() if not v[2]} == {("retention_until",), ("contractId",)}
    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {_qualified(position)} WHERE {arc.quote('retention_until')} IS NOT NULL")
        indexed = cur.fetchone()[0]
    assert indexed == _rows_digest(position)[0] > 0


def test_a_small_table_gets_its_secondary_indexes_with_the_table(demo):
    """Under INDEXES_AFTER_ROWS eligible rows the indexes are there from the first batch on
    (where the first batch makes the table, knowing Mark's count)."""
    from archival.engine.archive_tables import created_by_first_batch
    from archival.engine.spec import build_spec

    if not created_by_first_batch(build_spec(_config("Position"), CUTOFF)):
        pytest.skip("the table is made at Mark, before its count: its indexes come after its batches")
    TableConfig.objects.filter(table_name="Position").update(batch_size=300)  # several batches
    position = _config("Position")
    result, seen_during_batches = _run_seeing_indexes(position)
    eligible = result.tables[0].eligible
    assert 0 < eligible < archive_tables.INDEXES_AFTER_ROWS
    assert len(seen_during_batches) > 1
    assert all(s == {("retention_until",), ("contractId",)} for s in seen_during_batches)
    assert _rows_digest(position)[0] == eligible


def test_indexes_a_stopped_run_did_not_build_are_built_when_the_table_is_next_opened(demo):
    from archival.engine.archive_tables import ensure_archive_table
    from archival.engine.spec import build_spec

    prices = _config("PriceHistory")
    first = build_spec(prices, CUTOFF)
    ensure_archive_table(first)  # created by a run that then stopped before its indexes
    assert first.indexes_pending
    assert {v[0] for v in _indexes(prices).values() if not v[2]} == set()
    statements = ensure_archive_table(build_spec(prices, CUTOFF))
    assert any("retention" in sql for sql in statements), statements
    assert {v[0] for v in _indexes(prices).values() if not v[2]} == {("retention_until",)}
    assert ensure_archive_table(build_spec(prices, CUTOFF)) == []


def test_reshape_brings_an_older_table_to_the_shape_and_keeps_every_row(demo, capsys):
    engine.run_cycle(cutoff=CUTOFF)
    configs = [_config("Position"), _config("PriceHistory")]
    for config in configs:
        _make_old_shape(config)
        assert _index_name(config.table_name, "refdate") in _indexes(config)
        assert not _key_index(config)[1]  # a UNIQUE key, not the primary key
    before = {c.label: _rows_digest(c) for c in configs}
    assert all(n > 0 for n, _ in before.values())

    call_command("reshape_archive_tables", "--dry-run", "Position", "PriceHistory")
    assert "would run" in capsys.readouterr().out
    assert _index_name("Position", "refdate") in _indexes(configs[0])  # a dry run changes nothing

    call_command("reshape_archive_tables", "Position", "PriceHistory")
    out = capsys.readouterr().out

    vendor = connections["archive"].vendor
    for config in configs:
        assert _rows_digest(config) == before[config.label]
        indexes = _indexes(config)
        assert _index_name(config.table_name, "refdate") not in indexes
        assert _index_name(config.table_name, "retention") in indexes
        # SQLite keeps the UNIQUE key (the same index as a composite PRIMARY KEY there).
        assert _key_index(config)[1] == (vendor != "sqlite")
        assert _duplicate_refused(config)
        event = AuditEvent.objects.get(action="archive_table.reshaped", table_label=config.label)
        assert _index_name(config.table_name, "refdate") in event.details["dropped"]
    assert _index_name("Position", "contract") in _indexes(configs[0])
    assert "reshaped" in out

    # A second run changes nothing and records nothing.
    call_command("reshape_archive_tables")
    out = capsys.readouterr().out
    assert "already in shape" in out and "reshaped" not in out
    assert AuditEvent.objects.filter(action="archive_table.reshaped").count() == 2

    # The engine archives into the reshaped table: a new eligible row goes in, and a conflicting copy is refused.
    prices = configs[1]
    src = backend_for(prices.source_db)
    cols = '"instrumentId", "asOfDate", "closePrice", "volume"'
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {_qualified(prices)} ORDER BY {cols} LIMIT 1")
        row = list(cur.fetchone())
    row[1] = date(1990, 1, 2)
    with connections[prices.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(prices.schema_name, 'PriceHistory')} ({cols}) VALUES (%s, %s, %s, %s)", row
        )
    count = _rows_digest(prices)[0]
    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    assert result.ok, result.failed
    assert _rows_digest(prices)[0] == count + 1
    row[3] = int(row[3]) + 1  # the same key again, other values: the engine's conflict check must stop it
    with connections[prices.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(prices.schema_name, 'PriceHistory')} ({cols}) VALUES (%s, %s, %s, %s)", row
        )
    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    assert not result.ok and "different values" in result.failed[0].error
    assert _rows_digest(prices)[0] == count + 1


def test_reshape_refuses_a_table_it_did_not_create_and_goes_on_with_the_others(demo, capsys):
    engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    prices = _config("PriceHistory")
    trade = _config("Trade")
    arc = backend_for("archive")
    if not arc.schema_exists(namespace_for(trade.source_db)):
        arc.create_namespace(namespace_for(trade.source_db))
    with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
        cur.execute(f'CREATE TABLE {_qualified(trade)} ("tradeId" BIGINT NOT NULL PRIMARY KEY, "note" VARCHAR(20))')
    _make_old_shape(prices)

    with pytest.raises(CommandError, match="1 table"):
        call_command("reshape_archive_tables", "Trade", "PriceHistory")
    out = capsys.readouterr().out
    assert "not created by this tool" in out
    assert _index_name("PriceHistory", "refdate") not in _indexes(prices)
    assert arc.table_exists(namespace_for(trade.source_db), "Trade")
    assert not AuditEvent.objects.filter(action="archive_table.reshaped", table_label=trade.label).exists()


def test_reshape_names_an_unknown_table(demo):
    with pytest.raises(CommandError, match="no table config named Nope"):
        call_command("reshape_archive_tables", "Nope")
