"""Kill -9 the engine at random moments and check that no row is lost or doubled.

The CI version of bench/chaos.py: a few trials (``CHAOS_TRIALS``, default 3)
on a small SQLite data set (``CHAOS_ENGINE=postgresql`` or ``mariadb`` to run
it on a server), and the streaming topology on PostgreSQL
(``CHAOS_STREAM_ENGINE``). The full harness, 200 trials: ``python bench/chaos.py
--trials 200``. Each trial runs the real ``manage.py archival run`` in a child
process, SIGKILLs it, resumes with ``manage.py archival resume`` and compares
source union archive with the original, table by table, over every column.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from bench import chaos, envs

TRIALS = int(os.environ.get("CHAOS_TRIALS", "3"))
ENGINE = os.environ.get("CHAOS_ENGINE", "sqlite")
STREAM_ENGINE = os.environ.get("CHAOS_STREAM_ENGINE", "postgresql")
ROWS, TABLES = 12_000, 8


def postgres_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect(f"{envs.PG}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def private_bench(tmp_path, monkeypatch):
    """Files under the test's tmp dir, databases named benchci_* (beside any benchmark)."""
    monkeypatch.setattr(envs, "ROOT", tmp_path)
    monkeypatch.setattr(envs, "P", "benchci")
    return tmp_path


@pytest.mark.crash
@pytest.mark.timeout(900)
def test_a_killed_run_resumes_without_losing_or_doubling_a_row(private_bench):
    report = chaos.run_trials(ENGINE, "same", TRIALS, ROWS, TABLES, batch=300, seed=7, log=lambda _m: None)

    assert report["trials"] == TRIALS
    assert report["failures"] == []


@pytest.mark.crash
@pytest.mark.postgresql
@pytest.mark.timeout(900)
def test_a_killed_streaming_run_resumes_without_losing_or_doubling_a_row(private_bench):
    # On PostgreSQL by default (COPY into the archive); tests/test_engine_crash.py kills
    # SQLite's streamed batches at every named point.
    if STREAM_ENGINE == "postgresql" and not postgres_reachable():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    trials = max(1, TRIALS - 1)
    report = chaos.run_trials(STREAM_ENGINE, "stream", trials, ROWS, TABLES, batch=300, seed=11, log=lambda _m: None)

    assert report["trials"] == trials
    assert report["failures"] == []


@pytest.mark.timeout(300)
def test_the_checksum_sees_a_lost_row_and_a_changed_value(private_bench):
    # The chaos verdict is only as good as its checker: prove it notices.
    envs.build("sqlite", ROWS, 5)
    envs.restore("sqlite", ROWS, 5)
    original = chaos.checksums("sqlite", "same", ROWS, 5)

    with sqlite3.connect(private_bench / "sqlite" / "SourceDB3.sqlite3") as db:
        db.execute('DELETE FROM "PriceHistory" WHERE rowid = (SELECT MIN(rowid) FROM "PriceHistory")')
    with sqlite3.connect(private_bench / "sqlite" / "SourceDB1.sqlite3") as db:
        db.execute('UPDATE "Contract" SET "notional" = "notional" + 1 WHERE "contractId" = 1')
    after = chaos.checksums("sqlite", "same", ROWS, 5)

    assert after["SourceDB3.PriceHistory"]["rows"] == original["SourceDB3.PriceHistory"]["rows"] - 1
    assert after["SourceDB1.Contract"]["rows"] == original["SourceDB1.Contract"]["rows"]
    assert after["SourceDB1.Contract"]["sum"] != original["SourceDB1.Contract"]["sum"]
    assert after["SourceDB2.Trade"] == original["SourceDB2.Trade"]
