"""The search connection cannot write, and every query runs under a time limit.

Runs against whichever engine the suite is configured for: SQLite by default,
PostgreSQL when DATABASE_URL/ARCHIVE_DATABASE_URL/ARCHIVE_READONLY_DATABASE_URL
point there (CI runs both; see docs/search.md).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction
from django.urls import reverse

from archival.backends.sqlite import namespace_for
from archival.search.limits import QueryTimeout, query_time_limit
from governance.models import AuditEvent, Hold
from tests.search_fixtures import (  # noqa: F401 - fixtures are found by name
    SOURCE,
    build_bulk_table,
    fixture_reader,
    fixture_search_archive,
    make_bulk_config,
    source_schema,
)

pytestmark = pytest.mark.django_db(databases=["default", "archive", "archive_readonly", "SourceDB1"])
RO = "archive_readonly"


def vendor() -> str:
    return connections[RO].vendor


def attempt(sql: str, params=()) -> None:
    conn = connections[RO]
    with transaction.atomic(using=RO), conn.cursor() as cur:
        if conn.vendor == "postgresql":
            # What a session could do to undo a read-only default: it must not help.
            cur.execute("SET LOCAL default_transaction_read_only = off")
            cur.execute("SET LOCAL transaction_read_only = off")
        cur.execute(sql, list(params))


def qualified_position() -> str:
    q = connections[RO].ops.quote_name
    return f"{q(namespace_for(SOURCE))}.{q('Position')}"


@pytest.mark.parametrize(
    "statement",
    [
        "insert_archive_row",
        "update_archive_row",
        "delete_archive_row",
        "create_table_in_namespace",
        "update_hold",
    ],
)
def test_a_write_through_archive_readonly_fails(search_archive, statement):
    table = qualified_position()
    q = connections[RO].ops.quote_name
    sql = {
        "insert_archive_row": f"INSERT INTO {table} SELECT * FROM {table} WHERE 1 = 0 UNION ALL SELECT * FROM {table} LIMIT 0",
        "update_archive_row": f"UPDATE {table} SET {q('book')} = 'tampered'",
        "delete_archive_row": f"DELETE FROM {table}",
        "create_table_in_namespace": f"CREATE TABLE {q(namespace_for(SOURCE))}.{q('evil')} (x INTEGER)",
        "update_hold": f"UPDATE {q(Hold._meta.db_table)} SET {q('reason')} = 'x'",
    }[statement]
    if statement == "insert_archive_row":
        # A real row, not an empty insert: copies of an archived row with a new key.
        sql = (
            f"INSERT INTO {table} SELECT {q('basketId')} + 100000, {q('positionId')}, {q('businessDate')}, "
            f"{q('contractId')}, {q('quantity')}, {q('price')}, {q('currency')}, {q('book')}, {q('trader')}, "
            f"{q('archived_at')}, {q('archive_run_id')}, {q('reference_date')}, {q('retention_until')} FROM {table}"
        )
    with pytest.raises(DatabaseError) as refused:
        attempt(sql)
    message = str(refused.value).lower()
    assert "readonly" in message or "read-only" in message or "permission denied" in message, message
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE {q('book')} = 'tampered' OR {q('basketId')} >= 100000")
        assert cur.fetchone()[0] == 0


@pytest.mark.skipif("connections['archive_readonly'].vendor != 'postgresql'")
def test_the_readonly_role_holds_select_only(search_archive):
    role = connections[RO].settings_dict["USER"]
    call_command("create_readonly_role", role=role)
    with connections["archive"].cursor() as cur:
        cur.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
            [role],
        )
        assert cur.fetchone() == (False, False, False)
        table = f'{namespace_for(SOURCE)}."Position"'
        for privilege, expected in (
            ("SELECT", True),
            ("INSERT", False),
            ("UPDATE", False),
            ("DELETE", False),
            ("TRUNCATE", False),
        ):
            cur.execute("SELECT has_table_privilege(%s, %s, %s)", [role, table, privilege])
            assert cur.fetchone()[0] is expected, privilege
        cur.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", [role, namespace_for(SOURCE)])
        assert cur.fetchone()[0] is False


def test_the_role_command_refuses_a_sqlite_archive_or_the_owner():
    from django.core.management.base import CommandError

    owner = connections["archive"].settings_dict.get("USER") or "x"
    with pytest.raises(CommandError):
        call_command("create_readonly_role", role=owner if vendor() == "postgresql" else "reader_role")


# -- time limits ---------------------------------------------------------------
def test_a_query_past_the_time_limit_is_stopped_by_the_database(search_archive):
    slow = (
        "SELECT pg_sleep(3)"
        if vendor() == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT COUNT(*) FROM c"
    )
    import time

    started = time.monotonic()
    with pytest.raises(QueryTimeout), query_time_limit(RO, 100), connections[RO].cursor() as cur:
        cur.execute(slow)
        cur.fetchall()
    assert time.monotonic() - started < 2.5
    # The limit does not outlive the block: the next query runs normally.
    with query_time_limit(RO, 5000), connections[RO].cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1


@pytest.fixture(scope="module")
def bulk_archive(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        build_bulk_table("BulkPosition", 300_000)


def test_a_search_past_the_time_limit_says_so_and_is_audited(client, reader, bulk_archive, settings):
    make_bulk_config("BulkPosition")
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "QUERY_TIMEOUT_MS": 10}
    client.force_login(reader)
    url = reverse("search:table", args=[SOURCE, source_schema(SOURCE), "BulkPosition"])
    # "contains" on an unindexed text column, sorted on another: a full scan and sort of 300,000 rows.
    response = client.get(url, {"trader": "no such trader", "_sort": "book"})
    assert response.status_code == 200
    assert "ran past the 10 ms time limit" in response.content.decode()
    event = AuditEvent.objects.get(action="archive.search")
    assert event.outcome == "TIMEOUT"
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "QUERY_TIMEOUT_MS": 60_000}
    assert "ran past" not in client.get(url, {"basketId": 3, "positionId": 7}).content.decode()
