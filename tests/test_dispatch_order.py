"""The order in which a scheduled run starts its tables (scaling with workers).

With several workers a run lasts at least as long as its heaviest chain of
work (a big child table, then the contract table that waits for it). The
dispatcher starts that chain first; these tests hold it to that on the demo
topology, on the database the leg runs on.
"""

from __future__ import annotations

from datetime import date

import pytest

from archival.backends import backend_for
from archival.demo import DemoSize, build_demo
from archival.dispatch import adopt
from archival.engine import start_run
from governance.models import TableConfig, TableDispatch
from tests.engine_fixtures import drop_archive_tables

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def dispatch_order(run) -> list[str]:
    rows = TableDispatch.objects.filter(run=run).select_related("state__config").order_by("position")
    return [f"{r.state.config.source_db}.{r.state.config.table_name}" for r in rows]


@pytest.fixture
def price_heavy_demo(transactional_db):
    """The demo topology with PriceHistory (SourceDB3, no parent) its heaviest table."""
    drop_archive_tables()
    yield build_demo(
        DemoSize(positions=300, contracts=20, trades=200, prices=3000, generated_tables=6, generated_rows=50)
    )
    drop_archive_tables()


def test_the_heaviest_chain_of_work_is_started_first_and_children_still_precede_parents(price_heavy_demo):
    run = start_run(cutoff=date.today(), actor="the weekly schedule", trigger="schedule")

    assert adopt(run) == len(price_heavy_demo)

    order = dispatch_order(run)
    # PriceHistory (3,000 rows) outweighs every chain, though SourceDB3's
    # tables come last in dependency order.
    assert order[0] == "SourceDB3.PriceHistory", order
    # Position (300 rows, then its 20 contracts) outweighs Trade (200, then 20).
    assert order.index("SourceDB1.Position") < order.index("SourceDB2.Trade"), order
    # A parent waits for its children: each child's chain includes its parent's.
    assert order.index("SourceDB1.Position") < order.index("SourceDB1.Contract"), order
    assert order.index("SourceDB2.Trade") < order.index("SourceDB2.Contract"), order
    # Trade goes before any of the 50-row generated tables.
    generated = [
        label for label in order if label.split(".")[1] not in ("Position", "Trade", "Contract", "PriceHistory")
    ]
    assert generated and all(order.index("SourceDB2.Trade") < order.index(label) for label in generated), order


def test_the_size_estimate_reads_the_catalog_and_knows_no_missing_table(demo):
    position = TableConfig.objects.get(source_db="SourceDB1", table_name="Position")
    small = TableConfig.objects.filter(source_db="SourceDB1").exclude(table_name__in=["Position", "Contract"]).first()
    backend = backend_for("SourceDB1")

    big = backend.estimated_rows(position.schema_name, position.table_name)
    little = backend.estimated_rows(small.schema_name, small.table_name)

    assert big and little and big > little, (big, little)
    assert not backend.estimated_rows(position.schema_name, "NoSuchTable")
