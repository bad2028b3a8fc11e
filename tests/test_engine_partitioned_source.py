"""A partitioned source table on PostgreSQL: a batch moves its own rows and no other partition's.

The same-server move finds each batch row by its ctid, which is unique only
within one partition: the first row of every partition is (0,1). The rows
of the old partition and of the recent one below sit at the same ctids, so
a move that matched on the ctid alone would take the recent rows too.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connections

from archival import engine
from archival.backends import backend_for
from archival.demo import source_schema
from archival.engine.dates import subtract_months
from governance.models import TableConfig
from tests.engine_fixtures import drop_archive_tables, snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)
ROWS = 300  # per partition: several batches of the size below


@pytest.fixture
def ledger(settings):
    """SourceDB1's "Ledger", partitioned on its key: ids 1-300 old, 1001-1300 recent, inserted in step."""
    if connections["SourceDB1"].vendor != "postgresql" or settings.ARCHIVAL.get("STREAMING_SOURCES"):
        pytest.skip("partitioned tables moved in one statement: PostgreSQL, same server")
    settings.ARCHIVAL = {**settings.ARCHIVAL, "DEFAULT_BATCH_SIZE": 70}
    drop_archive_tables()
    src = backend_for("SourceDB1")
    schema = source_schema("SourceDB1")
    q = src.quote
    table = src.qualified(schema, "Ledger")
    old, recent = date(2020, 1, 1), date(2026, 11, 1)
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f'CREATE TABLE {table} ("id" integer NOT NULL, "bookedOn" date NOT NULL, "amount" numeric(12, 2), '
            f'PRIMARY KEY ("id")) PARTITION BY RANGE ("id")'
        )
        cur.execute(
            f"CREATE TABLE {src.qualified(schema, 'Ledger_old')} PARTITION OF {table} FOR VALUES FROM (1) TO (1000)"
        )
        cur.execute(
            f"CREATE TABLE {src.qualified(schema, 'Ledger_recent')} PARTITION OF {table} FOR VALUES FROM (1000) TO (2000)"
        )
        for i in range(1, ROWS + 1):
            cur.execute(
                f'INSERT INTO {table} ("id", "bookedOn", "amount") VALUES (%s, %s, %s), (%s, %s, %s)',
                [i, old + timedelta(days=i), f"{i}.25", 1000 + i, recent, f"{i}.75"],
            )
    config = TableConfig(
        source_db="SourceDB1",
        schema_name=schema,
        table_name="Ledger",
        table_type="OPERATIONAL",
        date_column="bookedOn",
        months_retention_source=12,
    )
    config.full_clean()
    config.save()
    yield config
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    drop_archive_tables()


def test_a_partitioned_table_moves_the_old_partitions_rows_and_leaves_the_recent_one_whole(ledger):
    assert subtract_months(CUTOFF, 12) > date(2020, 1, 1) + timedelta(days=ROWS)
    original = snapshot([ledger])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["Ledger"])

    assert result.ok and result.moved == ROWS
    counts = union_check([ledger], original)
    assert counts[str(ledger)] == (ROWS, ROWS)
    left = snapshot([ledger])[str(ledger)]
    assert sorted(k for (k,) in left) == list(range(1001, 1001 + ROWS))
