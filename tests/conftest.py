"""Shared test set-up: data folders, the protected-table flush, the demo topology.

Personas and fixtures of each area live in ``tests/<area>_fixtures.py``,
registered below as plugins; this file holds what every suite needs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management.commands import flush as flush_command
from django.db import connections
from django.db.backends.signals import connection_created

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from archival.demo import DemoSize, build_demo, source_schema
from archival.engine.streaming import _canon

BASE_DIR = Path(__file__).resolve().parent.parent

# The fixtures of each area, visible to every test module by name (a test
# module imports only the helpers and constants it calls). A fixture name
# means one thing across these modules: pytest would silently pick one of
# two fixtures of the same name.
pytest_plugins = [
    "tests.admin_fixtures",
    "tests.disposal_fixtures",
    "tests.pacing_fixtures",
    "tests.restore_fixtures",
    "tests.sched_fixtures",
    "tests.search_fixtures",
]

SMALL_DEMO = DemoSize(positions=3000, contracts=150, trades=1500, prices=1200, generated_tables=6, generated_rows=50)


def pytest_configure(config):
    # SQLite test databases are files under DATA_DIR/test (subprocesses of the
    # crash tests open them too); the folder must exist before Django creates them.
    (settings.DATA_DIR / "test").mkdir(parents=True, exist_ok=True)
    settings.ARCHIVAL["LOG_DIR"].mkdir(parents=True, exist_ok=True)
    # Every persona's password is hashed when it is made, and PBKDF2's
    # million rounds cost about half a second each on our 2-core machines
    # (five personas a test). What is tested is who may do what, not the
    # hasher: a fast one keeps login real and the suite inside its budget.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _ansi_quotes(sender, connection, **kwargs):
    # Tests write their fixture SQL with standard double-quoted identifiers;
    # MariaDB reads them so with ANSI_QUOTES (the engine quotes with backticks).
    if connection.vendor == "mysql":
        with connection.connection.cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")


connection_created.connect(_ansi_quotes, dispatch_uid="tests.ansi_quotes")


# Django's flush between transactional tests deletes every row; the triggers
# that protect holds and audit events (on SQLite) would refuse it.
_original_flush = flush_command.Command.handle


def _flush_allowed(self, *args, **kwargs):
    from archival.disposal.triggers import allow_test_flush

    with allow_test_flush():
        return _original_flush(self, *args, **kwargs)


flush_command.Command.handle = _flush_allowed


@pytest.fixture(autouse=True)
def _fresh_pacing_settings():
    """Each test reads the scheduler settings and watched replicas afresh (a flush sends no signal)."""
    from archival.engine.pacing import forget

    forget()
    yield
    forget()


@pytest.fixture(scope="session", autouse=True)
def _reattach_after_setup(django_db_setup, django_db_blocker):
    """Reopen connections once every test database exists.

    The archive connection ATTACHes the source files when it opens; if it
    opened while the test databases were still being created, it attached the
    non-test files. Closing makes the next use attach the test files.
    """
    with django_db_blocker.unblock():
        for alias in connections:
            connections[alias].close()
        # On PostgreSQL the read-only alias logs in as a SELECT-only role; it
        # must exist before any test opens that connection.
        readonly = connections["archive_readonly"]
        if readonly.vendor == "postgresql" and readonly.settings_dict.get("USER") != connections[
            "archive"
        ].settings_dict.get("USER"):
            from archival.search.readonly import create_readonly_role

            create_readonly_role(role=readonly.settings_dict["USER"], using="archive")
    yield
    # Subprocesses and live-server threads may leave sessions open on the
    # PostgreSQL test databases; Django cannot drop a database in use.
    with django_db_blocker.unblock():
        for alias in connections:
            conn = connections[alias]
            if conn.vendor == "postgresql" and alias != "archive_readonly":
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
        for alias in connections:
            connections[alias].close()


def drop_archive_tables() -> None:
    """Remove every engine-made archive table (they are not Django models)."""
    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        for alias in settings.SOURCE_DATABASES:
            ns = namespace_for(alias)
            if arc.vendor == "postgresql":
                cur.execute(f"DROP SCHEMA IF EXISTS {arc.quote(ns)} CASCADE")
            elif arc.vendor == "mysql":
                cur.execute(f"DROP DATABASE IF EXISTS {arc.quote(ns)}")
            elif arc.vendor == "sqlite":
                if not arc.schema_exists(ns):
                    continue
                cur.execute(f"SELECT name FROM {arc.quote(ns)}.sqlite_master WHERE type = 'table'")
                for (name,) in cur.fetchall():
                    cur.execute(f"DROP TABLE {arc.qualified(ns, name)}")


@pytest.fixture
def demo(transactional_db, django_db_blocker):
    """The small demo topology in the sources, its configs, and no archive tables."""
    drop_archive_tables()
    counts = build_demo(SMALL_DEMO)
    yield counts
    drop_archive_tables()


def rows_of(alias: str, qualified: str, columns: list[str], quote) -> list[tuple]:
    with connections[alias].cursor() as cur:
        try:
            cur.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {qualified}")
            return [tuple(_canon(v) for v in row) for row in cur.fetchall()]
        except ValueError:
            # A SQLite DATE column holding a value that is not a date: the
            # driver's date converter refuses it. ``+x`` is the stored value
            # as it is (an expression has no declared type, so no converter).
            if connections[alias].vendor != "sqlite":
                raise
            cur.execute(f"SELECT {', '.join('+' + quote(c) for c in columns)} FROM {qualified}")
            return [tuple(_canon(v) for v in row) for row in cur.fetchall()]


def snapshot(configs) -> dict[str, dict[tuple, tuple]]:
    """Every row of every configured source table, by table label and key."""
    result = {}
    for config in configs:
        backend = backend_for(config.source_db)
        info = backend.describe(config.schema_name, config.table_name)
        cols = info.column_names
        pk_pos = [cols.index(c) for c in info.primary_key]
        rows = rows_of(config.source_db, backend.qualified(config.schema_name, config.table_name), cols, backend.quote)
        result[str(config)] = {tuple(r[i] for i in pk_pos): r for r in rows}
    return result


def archived_without_dates(archive_table: str) -> int:
    """Archived rows without a reference date or a retention date: rows disposal could never reach."""
    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*) FROM {archive_table} "
            f"WHERE {arc.quote('reference_date')} IS NULL OR {arc.quote('retention_until')} IS NULL"
        )
        return cur.fetchone()[0]


def union_check(configs, original: dict, *, allow_both: bool = False) -> dict:
    """Source ∪ archive against the original: nothing lost, nothing duplicated, values identical.

    Returns per-table counts {label: (in_source, in_archive)}; raises AssertionError with details.
    """
    arc = backend_for("archive")
    counts = {}
    for config in configs:
        label = str(config)
        backend = backend_for(config.source_db)
        info = backend.describe(config.schema_name, config.table_name)
        cols = info.column_names
        pk_pos = [cols.index(c) for c in info.primary_key]
        src_rows = rows_of(
            config.source_db, backend.qualified(config.schema_name, config.table_name), cols, backend.quote
        )
        ns = namespace_for(config.source_db)
        arc_rows = []
        if arc.table_exists(ns, config.table_name):
            arc_rows = rows_of("archive", arc.qualified(ns, config.table_name), cols, arc.quote)
            undated = archived_without_dates(arc.qualified(ns, config.table_name))
            assert not undated, f"{label}: {undated} archived rows lack reference_date or retention_until"
        src = {tuple(r[i] for i in pk_pos): r for r in src_rows}
        archived = {tuple(r[i] for i in pk_pos): r for r in arc_rows}
        assert len(archived) == len(arc_rows), f"{label}: duplicate keys in the archive"
        both = set(src) & set(archived)
        if allow_both:
            # Mid-stream (copy committed, delete not yet): both copies must be identical.
            assert all(src[k] == archived[k] for k in both), f"{label}: a row differs between source and archive"
        else:
            assert not both, f"{label}: {len(both)} rows are in both source and archive, e.g. {sorted(both)[:3]}"
        for key, row in original[label].items():
            found = src.get(key) or archived.get(key)
            assert found is not None, f"{label}: row {key} was lost"
            assert found == row, f"{label}: row {key} changed: {row} -> {found}"
        extra = (set(src) | set(archived)) - set(original[label])
        assert not extra, f"{label}: rows appeared from nowhere: {sorted(extra)[:3]}"
        counts[label] = (len(src), len(archived))
    return counts


def digest(rows: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(rows, key=repr):
        h.update(repr(rows[key]).encode())
    return h.hexdigest()


def database_url(alias: str) -> str:
    sd = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite:///{sd['NAME']}"
    if connections[alias].vendor == "postgresql":
        user = sd.get("USER") or "postgres"
        password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
        return f"postgres://{user}{password}@{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 5432}/{sd['NAME']}"
    if connections[alias].vendor == "mysql":
        return (
            f"mysql://{sd.get('USER') or 'root'}@{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 3306}/{sd['NAME']}"
        )
    raise RuntimeError(f"no URL for {alias}")


def subprocess_env(**extra) -> dict:
    """Environment for a manage.py subprocess that uses the test databases."""
    env = os.environ.copy()
    env["DATABASE_URL"] = database_url("default")
    env["ARCHIVE_DATABASE_URL"] = database_url("archive")
    for alias in settings.SOURCE_DATABASES:
        env[f"{alias.upper()}_DATABASE_URL"] = database_url(alias)
    env.pop("ARCHIVE_READONLY_DATABASE_URL", None)
    env["SECRET_KEY"] = settings.SECRET_KEY
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BASE_DIR,
    )


__all__ = [
    "SMALL_DEMO",
    "archived_without_dates",
    "digest",
    "drop_archive_tables",
    "manage",
    "snapshot",
    "source_schema",
    "subprocess_env",
    "union_check",
]
