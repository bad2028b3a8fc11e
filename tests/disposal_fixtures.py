"""Personas, archive tables and helpers for the disposal tests.

Personas: ``planner`` (an archival administrator: plans and executes),
``alice`` and ``bob`` (compliance officers: approve), ``outsider`` (staff, no
permission). Archive tables are created the way the engine lays them out: in
``namespace_for(source)`` (an attached file on SQLite, a schema on
PostgreSQL), the source's columns plus archived_at, archive_run_id,
reference_date and retention_until, unique on the source key.

Hypothesis profiles: ``ci`` (200 examples, chosen when CI is set), ``dev``
(40, the default), ``full`` (1,000); pick one with DISPOSAL_HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from hypothesis import HealthCheck, settings

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from governance.models import TableConfig

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "full",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = os.environ.get("DISPOSAL_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")

SOURCE = "SourceDB1"
TABLE = "disp_position"
DATABASES = ["default", "archive", SOURCE]
TODAY = dt.date(2030, 6, 15)
PASSWORD = "correct horse battery staple 42"

SOURCE_COLUMNS = (
    '"basketId" INTEGER NOT NULL, "positionId" VARCHAR(40) NOT NULL, "businessDate" DATE NOT NULL, '
    '"contractId" VARCHAR(20), "amount" NUMERIC(18,2)'
)
KEY = ("basketId", "positionId", "businessDate")


# The flush between transactional tests runs under allow_test_flush() (tests/conftest.py).


def source_schema() -> str:
    vendor = connections[SOURCE].vendor
    if vendor == "mysql":
        return connections[SOURCE].settings_dict["NAME"]  # a database of the server is the schema
    return "public" if vendor == "postgresql" else "main"


def create_tables(table: str = TABLE) -> None:
    """The source table (for config validation) and its archive table, empty."""
    with connections[SOURCE].cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute(
            f'CREATE TABLE "{table}" ({SOURCE_COLUMNS}, PRIMARY KEY ("basketId", "positionId", "businessDate"))'
        )
    backend = backend_for("archive")
    ns = namespace_for(SOURCE)
    ts = backend.timestamp_type()
    with connections["archive"].cursor() as cur:
        if backend.vendor in ("postgresql", "mysql"):
            # A schema on PostgreSQL, a database of the server on MariaDB.
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
        cur.execute(f'DROP TABLE IF EXISTS "{ns}"."{table}"')
        cur.execute(
            f'CREATE TABLE "{ns}"."{table}" ({SOURCE_COLUMNS}, "archived_at" {ts} NOT NULL, "archive_run_id" BIGINT NOT NULL, '
            f'"reference_date" DATE, "retention_until" DATE, '
            f'CONSTRAINT "{table}_src_key" UNIQUE ("basketId", "positionId", "businessDate"))'
        )


def make_config(table_type: str = "FUNCTIONAL", table: str = TABLE, batch_size: int | None = None) -> TableConfig:
    config = TableConfig(
        source_db=SOURCE,
        schema_name=source_schema(),
        table_name=table,
        table_type=table_type,
        date_column="businessDate",
        hold_contract_column="contractId",
        batch_size=batch_size,
    )
    config.full_clean()
    config.save()
    return config


def insert_rows(rows, table: str = TABLE) -> None:
    """rows: (basketId, positionId, businessDate, contractId, retention_until)."""
    ns = namespace_for(SOURCE)
    with connections["archive"].cursor() as cur:
        cur.executemany(
            f'INSERT INTO "{ns}"."{table}" ("basketId", "positionId", "businessDate", "contractId", "amount", '
            f'"archived_at", "archive_run_id", "reference_date", "retention_until") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)',
            [
                (b, p, d, c, Decimal("12.50"), dt.datetime(2025, 1, 1, tzinfo=dt.UTC), 1, d, r)
                for (b, p, d, c, r) in rows
            ],
        )


def archived_keys(table: str = TABLE) -> set[tuple]:
    ns = namespace_for(SOURCE)
    with connections["archive"].cursor() as cur:
        cur.execute(f'SELECT "basketId", "positionId", "businessDate" FROM "{ns}"."{table}"')
        return {normal_key(r) for r in cur.fetchall()}


def normal_key(row) -> tuple:
    b, p, d = row
    if isinstance(d, str):
        d = dt.date.fromisoformat(d)
    return (int(b), str(p), d)


def persona(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return User.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def disposal_personas(db):
    return {
        "planner": persona("planner", "governance.plan_disposal", "governance.view_disposalbatch"),
        "alice": persona(
            "alice",
            "governance.approve_disposal",
            "governance.view_disposalbatch",
            "governance.approve_retentionchange",
        ),
        "bob": persona("bob", "governance.approve_disposal", "governance.view_disposalbatch"),
        "outsider": persona("outsider"),
    }
