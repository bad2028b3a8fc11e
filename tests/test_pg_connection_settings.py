"""PostgreSQL connections: server-side binding, and prepared statements that a pooler can turn off.

Each case starts a fresh interpreter with its own environment (settings are
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

# Runs one statement six times (psycopg prepares on the fifth) and reports
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


def test_statements_are_bound_server_side_and_prepared_by_default(tmp_path):
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["cursor"] == "ServerBindingCursor"
    assert seen["threshold"] == 5
    assert seen["prepared"] >= 1


def test_a_pooler_deployment_turns_prepared_statements_off(tmp_path):
    result = _probe(tmp_path, ARCHIVAL_PG_PREPARED_STATEMENTS="false")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    # Values are still parameters bound by the server; nothing is prepared.
    assert seen["cursor"] == "ServerBindingCursor"
    assert seen["threshold"] is None
    assert seen["prepared"] == 0


def test_a_malformed_switch_stops_start_up(tmp_path):
    result = _probe(tmp_path, ARCHIVAL_PG_PREPARED_STATEMENTS="sometimes")
    assert result.returncode != 0
    assert "ARCHIVAL_PG_PREPARED_STATEMENTS='sometimes' is not a boolean" in result.stderr
