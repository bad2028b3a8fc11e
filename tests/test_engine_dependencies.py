"""Table dependencies: a child table (foreign key or contract join) moves before its parent, on every path."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections

from archival import dispatch, engine
from archival.backends import backend_for
from archival.demo import source_schema
from archival.engine.dependencies import children, dependency_order
from archival.engine.runner import ordered_states
from governance.models import ArchivalRun, AuditEvent, TableConfig
from tests.engine_fixtures import snapshot, union_check

CUTOFF = date(2026, 11, 25)
ALIAS = "SourceDB1"


@pytest.fixture
def invoices(demo):
    """Invoice and InvoiceLine (a foreign key to Invoice, no contract join), both configured, every row old.

    The child's execution_priority comes after its parent's: ordered by
    priority alone, Invoice would go first and its referenced rows could not
    move.
    """
    src = backend_for(ALIAS)
    schema = source_schema(ALIAS)
    invoice, line = src.qualified(schema, "Invoice"), src.qualified(schema, "InvoiceLine")
    # SQLite names a parent table without its schema.
    parent = src.quote("Invoice") if src.vendor == "sqlite" else invoice
    day = "2020-01-15" if src.vendor == "sqlite" else date(2020, 1, 15)
    with connections[ALIAS].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {line}")
        cur.execute(f"DROP TABLE IF EXISTS {invoice}")
        cur.execute(f'CREATE TABLE {invoice} ("invoiceId" INTEGER NOT NULL PRIMARY KEY, "invoiceDate" DATE NOT NULL)')
        cur.execute(
            f'CREATE TABLE {line} ("lineId" INTEGER NOT NULL PRIMARY KEY, '
            f'"invoiceId" INTEGER NOT NULL REFERENCES {parent} ("invoiceId"), "lineDate" DATE NOT NULL)'
        )
        for i in range(1, 21):
            cur.execute(f'INSERT INTO {invoice} ("invoiceId", "invoiceDate") VALUES (%s, %s)', [i, day])
        for i in range(1, 11):
            cur.execute(f'INSERT INTO {line} ("lineId", "invoiceId", "lineDate") VALUES (%s, %s, %s)', [i, i, day])
    configs = []
    for name, column, priority in (("Invoice", "invoiceDate", 1), ("InvoiceLine", "lineDate", 500)):
        config = TableConfig(
            source_db=ALIAS,
            schema_name=schema,
            table_name=name,
            table_type="OPERATIONAL",
            date_column=column,
            execution_priority=priority,
        )
        config.full_clean()
        config.save()
        configs.append(config)
    yield configs
    with connections[ALIAS].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {line}")
        cur.execute(f"DROP TABLE IF EXISTS {invoice}")


def _completed_order(run_id: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(run_id=run_id, action="table.completed")
        .order_by("pk")
        .values_list("table_label", flat=True)
    )


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_cli_run_moves_a_foreign_key_child_before_its_parent(invoices):
    invoice, line = invoices
    original = snapshot(invoices)

    out = StringIO()
    try:
        call_command(
            "archival", "run", "--cutoff", CUTOFF.isoformat(), "--table", "Invoice", "--table", "InvoiceLine",
            stdout=out, stderr=out,
        )  # fmt: skip
    except SystemExit as exc:
        pytest.fail(f"the run exited {exc.code}: {out.getvalue()}")

    run_id = ArchivalRun.objects.latest("pk").pk
    assert _completed_order(run_id) == [str(line), str(invoice)]
    # Every invoice moves: its lines went first.
    assert union_check(invoices, original) == {str(invoice): (0, 20), str(line): (0, 10)}


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_cli_and_the_workers_order_a_run_alike(invoices):
    invoice, line = invoices
    run = engine.start_run(cutoff=CUTOFF, tables=["Invoice", "InvoiceLine", "PriceHistory"])
    states = ordered_states(run)
    labels = [s.table_label for s in states]

    assert labels.index(str(line)) < labels.index(str(invoice))
    by_config = {s.config_id: s.pk for s in states}
    children = dispatch.children_map(states)
    assert children[by_config[invoice.pk]] == [by_config[line.pk]]
    assert children[by_config[line.pk]] == []


# -- the rule itself, on configs in memory ---------------------------------------------


def _config(pk: int, table: str, *, priority: int = 100, contract: str = "", source: str = "SourceDB1"):
    return TableConfig(
        pk=pk,
        source_db=source,
        schema_name="main",
        table_name=table,
        execution_priority=priority,
        archival_logic="CONTRACT_MATURITY" if contract else "DATE_BASED",
        contract_table=contract,
        contract_reference_column="contractId" if contract else "",
        contract_key_column="id" if contract else "",
    )


def test_children_by_contract_join_and_foreign_key_go_first_then_priority_then_name():
    contract = _config(1, "Contract", priority=1)
    position = _config(2, "Position", priority=900, contract="Contract")
    line = _config(3, "Line", priority=500)  # a foreign key to Position
    elsewhere = _config(4, "Line", priority=50, source="SourceDB2")  # same name, another database
    configs = [contract, position, line, elsewhere]
    foreign_keys = {"Position": [("Line", "positionId", "positionId")]}

    kids = children(configs, foreign_keys=lambda c: foreign_keys.get(c.table_name, []) if c.pk != 4 else [])

    assert kids == {1: [2], 2: [3], 3: [], 4: []}
    order = dependency_order(configs, kids, config=lambda c: c)
    assert [(c.source_db, c.table_name) for c in order] == [
        ("SourceDB2", "Line"), ("SourceDB1", "Line"), ("SourceDB1", "Position"), ("SourceDB1", "Contract"),
    ]  # fmt: skip


def test_a_cycle_of_foreign_keys_is_cut_where_it_closes():
    a, b = _config(1, "A", priority=2), _config(2, "B", priority=1)
    foreign_keys = {"A": [("B", "a", "id")], "B": [("A", "b", "id")]}
    kids = children([a, b], foreign_keys=lambda c: foreign_keys[c.table_name])
    assert kids == {1: [2], 2: [1]}
    assert len(dependency_order([a, b], kids, config=lambda c: c)) == 2


def test_a_database_that_does_not_answer_is_asked_once():
    configs = [_config(i, f"T{i}") for i in range(1, 6)]
    asked = []

    def down(config):
        asked.append(config.pk)
        raise OSError("connection refused")

    assert children(configs, foreign_keys=down) == {i: [] for i in range(1, 6)}
    assert asked == [1]
