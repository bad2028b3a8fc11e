"""A source table of a few batches for the pacing and replica-lag tests."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connections

from tests.admin_fixtures import SOURCE, make_config
from tests.engine_fixtures import drop_archive_tables, snapshot

CUTOFF = dt.date(2026, 1, 1)
TABLE = "paced_trade"
ROWS = 48

pytestmark_db = pytest.mark.django_db(transaction=True, databases="__all__")


def _create(rows: int = ROWS) -> None:
    with connections[SOURCE].cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
        cursor.execute(f'CREATE TABLE "{TABLE}" ("tradeId" INTEGER NOT NULL PRIMARY KEY, "tradeDate" DATE NOT NULL)')
        cursor.executemany(
            f'INSERT INTO "{TABLE}" VALUES (%s, %s)',
            [(i, dt.date(2015, 1, 1) + dt.timedelta(days=i)) for i in range(1, rows + 1)],
        )


@pytest.fixture
def paced_table(transactional_db, settings):
    settings.ARCHIVAL_LOCK_TIMEOUT_MS = 4000
    _create()
    schema = {"mysql": connections[SOURCE].settings_dict["NAME"]}.get(connections[SOURCE].vendor)
    config = make_config(
        table_name=TABLE,
        months_retention_source=1,
        batch_size=8,
        min_batch_size=2,
        hold_contract_column="",
        **({"schema_name": schema} if schema else {}),
    )
    original = snapshot([config])
    yield config, original
    with connections[SOURCE].cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
    drop_archive_tables()
