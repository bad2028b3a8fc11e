"""The search connection cannot write, and every query runs under a time limit.

Runs against whichever engine the suite is configured for: SQLite by default,
PostgreSQL when DATABASE_URL/ARCHIVE_DATABASE_URL/ARCHIVE_READONLY_DATABASE_URL
point there (CI runs both; see docs/search.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction
from django.urls import reverse

from archival.backends.sqlite import namespace_for
from archival.search.limits import QueryTimeout, query_time_limit
from governance.models import AuditEvent, Hold
from tests.search_fixtures import SOURCE, build_bulk_table, make_bulk_config, source_schema

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


def scram_verifier_matches(verifier: str, password: str) -> bool:
    """Check a PostgreSQL SCRAM-SHA-256 verifier against a password (RFC 5802, RFC 7677).

    The server here trusts every local connection (pg_hba ``trust``), so a
    login alone would accept any password: the stored verifier is the proof.
    """
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256", verifier
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (
        hashlib.sha256(client_key).digest() == stored_key
        and hmac.new(salted, b"Server Key", "sha256").digest() == server_key
    )


def committed(function, *args, **kwargs):
    """Run ``function`` on a thread of its own: its Django connections are
    outside the test's transaction, so what it does is committed and another
    session (a login as the new role) sees it."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def login(role: str, password: str | None = None) -> psycopg.Connection:
    """A new session as ``role`` on the archive's database (autocommit)."""
    settings_dict = connections["archive"].settings_dict
    return psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        dbname=settings_dict["NAME"],
        user=role,
        password=password,
        autocommit=True,
    )


def stored_verifier(role: str) -> str:
    with connections["archive"].cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])
        return cur.fetchone()[0]


def drop_probe_role(role: str) -> None:
    with connections["archive"].cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cur.fetchone() is None:
            return
        cur.execute("SELECT current_database()")
        database = cur.fetchone()[0]
        for alias in settings.SOURCE_DATABASES:
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [namespace_for(alias)])
            if cur.fetchone():
                cur.execute(
                    f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{namespace_for(alias)}" REVOKE ALL ON TABLES FROM {role}'
                )
        cur.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        cur.execute(f"DROP OWNED BY {role}")
        cur.execute(f"DROP ROLE {role}")


@pytest.mark.skipif("connections['archive_readonly'].vendor != 'postgresql'")
def test_the_readonly_role_is_created_with_a_password_and_logs_in_with_it(search_archive):
    role = "sec_readonly_pw_probe"
    # Quote, percent, backslash and placeholders: nothing may be read as SQL or as a parameter.
    password = "it's 100% \\ $1 %s secret"
    with connections["archive"].cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        assert cur.fetchone() is None, f"{role} exists already; this test creates and drops it"
    try:
        committed(call_command, "create_readonly_role", role=role, password=password)
        assert scram_verifier_matches(stored_verifier(role), password)
        assert not scram_verifier_matches(stored_verifier(role), password + "x")
        # Run again (ALTER ROLE): a new password replaces the verifier.
        committed(call_command, "create_readonly_role", role=role, password="second 'one'")
        assert scram_verifier_matches(stored_verifier(role), "second 'one'")
        with login(role, "second 'one'") as session:
            assert session.execute("SELECT current_user").fetchone()[0] == role
            table = f'{namespace_for(SOURCE)}."Position"'
            assert session.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
            session.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                session.execute(f"DELETE FROM {table}")
    finally:
        committed(drop_probe_role, role)


@pytest.mark.skipif("connections['archive_readonly'].vendor != 'postgresql'")
def test_the_readonly_role_cannot_create_a_temp_table(search_archive):
    role = connections[RO].settings_dict["USER"]
    committed(call_command, "create_readonly_role", role=role)
    with connections["archive"].cursor() as cur:
        cur.execute("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')", [role])
        assert cur.fetchone()[0] is False
        # The owner that runs the engine keeps it.
        cur.execute("SELECT has_database_privilege(current_user, current_database(), 'TEMPORARY')")
        assert cur.fetchone()[0] is True
    with login(role) as session:
        # The read-only default is the role's to switch off; the privilege is not.
        session.execute("SET default_transaction_read_only = off")
        for statement in ("CREATE TEMP TABLE probe (x int)", "CREATE TEMPORARY TABLE probe AS SELECT 1 AS x"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to create temporary"):
                session.execute(statement)


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
