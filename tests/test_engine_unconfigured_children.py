"""A configured table referenced by a table nobody configured: refused by name, nothing moved, the rest runs."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connections

from archival import engine
from archival.backends import backend_for
from archival.demo import source_schema
from governance.models import Phase, RecoveryState, RunStatus, TableConfig
from tests.engine_fixtures import snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)
ALIAS = "SourceDB1"


@pytest.fixture
def invoices(demo):
    """Invoice (configured, every row old) and InvoiceLine (a foreign key to Invoice, not configured)."""
    src = backend_for(ALIAS)
    schema = source_schema(ALIAS)
    invoice, line = src.qualified(schema, "Invoice"), src.qualified(schema, "InvoiceLine")
    # SQLite names a parent table without its schema.
    parent = src.quote("Invoice") if src.vendor == "sqlite" else invoice
    with connections[ALIAS].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {line}")
        cur.execute(f"DROP TABLE IF EXISTS {invoice}")
        cur.execute(f'CREATE TABLE {invoice} ("invoiceId" INTEGER NOT NULL PRIMARY KEY, "invoiceDate" DATE NOT NULL)')
        cur.execute(
            f'CREATE TABLE {line} ("lineId" INTEGER NOT NULL PRIMARY KEY, '
            f'"invoiceId" INTEGER NOT NULL REFERENCES {parent} ("invoiceId"), "amount" NUMERIC(12,2))'
        )
        day = "2020-01-15" if src.vendor == "sqlite" else date(2020, 1, 15)
        for i in range(1, 21):
            cur.execute(f'INSERT INTO {invoice} ("invoiceId", "invoiceDate") VALUES (%s, %s)', [i, day])
        # Lines on the first ten invoices; the other ten are referenced by nothing.
        for i in range(1, 11):
            cur.execute(f'INSERT INTO {line} ("lineId", "invoiceId", "amount") VALUES (%s, %s, %s)', [i, i, "9.50"])
    config = TableConfig(
        source_db=ALIAS, schema_name=schema, table_name="Invoice", table_type="OPERATIONAL", date_column="invoiceDate"
    )
    config.full_clean()
    config.save()
    yield config
    with connections[ALIAS].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {line}")
        cur.execute(f"DROP TABLE IF EXISTS {invoice}")


def test_the_plan_names_the_unconfigured_table_as_a_blocking_problem(invoices):
    plan = engine.plan(tables=["Invoice", "PriceHistory"], cutoff=CUTOFF)

    invoice = next(t for t in plan.tables if t.label == str(invoices))
    assert len(invoice.problems) == 1
    assert "InvoiceLine (column invoiceId)" in invoice.problems[0]
    assert invoice.eligible is None
    other = next(t for t in plan.tables if t.label.endswith("PriceHistory"))
    assert not other.problems and other.eligible > 0


def test_the_run_moves_nothing_of_the_table_says_why_and_runs_the_others(invoices):
    price_history = TableConfig.objects.get(table_name="PriceHistory")
    original = snapshot([invoices, price_history])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["Invoice", "PriceHistory"])

    assert result.status == RunStatus.FAILED
    by_label = {t.label: t for t in result.tables}
    failed = by_label[str(invoices)]
    assert failed.phase == Phase.FAILED and failed.moved == 0
    assert "InvoiceLine" in failed.error and "without an active archival config" in failed.error
    assert "FOREIGN KEY" not in failed.error.upper()
    state = RecoveryState.objects.get(run_id=result.run_id, config=invoices)
    assert "InvoiceLine" in state.last_error
    assert by_label[str(price_history)].phase == Phase.COMPLETED and by_label[str(price_history)].moved > 0
    counts = union_check([invoices, price_history], original)
    assert counts[str(invoices)] == (20, 0)


def test_once_the_child_is_configured_the_parent_moves_what_nothing_references(invoices):
    # The child's lines are dated by nothing old enough: configured, they stay, and so do their invoices.
    src = backend_for(ALIAS)
    with connections[ALIAS].cursor() as cur:
        cur.execute(f'ALTER TABLE {src.qualified(invoices.schema_name, "InvoiceLine")} ADD "lineDate" DATE')
    line = TableConfig(
        source_db=ALIAS,
        schema_name=invoices.schema_name,
        table_name="InvoiceLine",
        table_type="OPERATIONAL",
        date_column="lineDate",
    )
    line.full_clean()
    line.save()
    original = snapshot([invoices, line])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["Invoice", "InvoiceLine"])

    assert result.ok, [t.error for t in result.tables]
    assert union_check([invoices, line], original) == {str(invoices): (10, 10), str(line): (10, 0)}
