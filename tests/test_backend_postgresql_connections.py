"""PostgreSQL connections: values bound by the server, nothing prepared (a transaction-mode pooler works).

The case starts a fresh interpreter with its own environment (settings are
read once per process) and connects to the PostgreSQL every machine of ours
runs, so what is checked is the live psycopg connection, not the settings
dict alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")

# Runs one statement six times (psycopg would prepare it on the fifth with a
# threshold) and reports
# the cursor class, the connection's threshold and what the server holds.
PROBE = """
import json, django
django.setup()
from django.db import connection
with connection.cursor() as cur:
    for _ in range(6):
        cur.execute("SELECT %s::int + 1", [1])
    cur.execute("SELECT count(*) FROM pg_prepared_statements")
    prepared = cur.fetchone()[0]
raw = connection.connection
print(json.dumps({"cursor": type(cur.cursor).__name__, "threshold": raw.prepare_threshold, "prepared": prepared}))
"""


def _reachable() -> bool:
    try:
        psycopg.connect(f"{PG_URL}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _reachable(), reason=f"no PostgreSQL at {PG_URL}")


def _probe(tmp_path, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env.update(
        ARCHIVAL_DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="governance.settings",
        DATABASE_URL=f"{PG_URL}/postgres",
        **extra,
    )
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_values_are_bound_server_side_and_nothing_is_prepared(tmp_path):
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["cursor"] == "ServerBindingCursor"
    # Django's default, kept on purpose: a pooler in transaction mode would
    # hand a prepared statement's name to another session.
    assert seen["threshold"] is None
    assert seen["prepared"] == 0
