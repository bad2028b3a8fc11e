"""Table dependencies: a child table (foreign key or contract join) moves before its parent, on every path."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections

from archival import dispatch, engine
from archival.backends import backend_for
from archival.engine.runner import ordered_states
from governance.models import ArchivalRun, AuditEvent, TableConfig
from tests.conftest import snapshot, source_schema, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

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
