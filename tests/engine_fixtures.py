"""The demo topology and the checks of the engine's invariants, for the engine, crash and restore tests.

``demo`` builds the small demo in the sources; ``snapshot`` and
``union_check`` prove nothing was lost, duplicated or changed (source union
archive against the snapshot); ``manage`` runs ``manage.py`` in a subprocess
on the test databases.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from archival.demo import DemoSize, build_demo
from archival.engine.streaming import _canon

BASE_DIR = Path(__file__).resolve().parent.parent

SMALL_DEMO = DemoSize(positions=3000, contracts=150, trades=1500, prices=1200, generated_tables=6, generated_rows=50)


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
