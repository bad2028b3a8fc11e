"""bench/ceiling.py's yardsticks on the single-table data set (SQLite files, child processes).

The plain ceiling writes into tables with the source's columns and primary
key only; the same-shape one into the engine's archive table shape. Both
must move exactly the rows the engine moves, lose or double none, and leave
the data set's unarchived Contract table alone.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from bench import envs
from bench.generate import position_table

ROWS = 5_000
POSITION = [c.name for c in position_table(ROWS, 100).columns]
META = ["archived_at", "archive_run_id", "reference_date", "retention_until"]


@pytest.fixture
def single_set(tmp_path, monkeypatch):
    """The single-table set, loaded once under the test's tmp dir; restored before each method."""
    monkeypatch.setattr(envs, "ROOT", tmp_path)
    envs.build("sqlite", ROWS, 120, "single")
    return tmp_path


def run(task: str) -> dict:
    return json.loads(envs.worker(task, "sqlite", "same", str(ROWS), "120", "single").strip().splitlines()[-1])


def archive_table(root) -> tuple[list[str], list[str], list[tuple]]:
    """Position's archive table: its columns, its index names, and its primary key columns."""
    with sqlite3.connect(root / "sqlite" / "archive__sourcedb1.sqlite3") as db:
        info = db.execute('PRAGMA table_info("Position")').fetchall()
        indexes = [row[1] for row in db.execute('PRAGMA index_list("Position")')]
    return [row[1] for row in info], indexes, sorted((row[5], row[1]) for row in info if row[5])


def contract_rows(root) -> int:
    with sqlite3.connect(root / "sqlite" / "SourceDB1.sqlite3") as db:
        return db.execute('SELECT COUNT(*) FROM "Contract"').fetchone()[0]


@pytest.mark.timeout(300)
def test_both_shapes_move_the_engines_rows_and_lose_none(single_set):
    envs.restore("sqlite", ROWS, 120, "single")
    original = run("checksum")["tables"]
    contracts = contract_rows(single_set)
    assert list(original) == ["SourceDB1.Position"]  # the Contract table is not archived
    eligible = 0

    moved = {}
    for task in ("engine", "ceiling", "ceiling_same"):
        envs.restore("sqlite", ROWS, 120, "single")
        out = run(task)
        after = run("checksum")["tables"]["SourceDB1.Position"]
        moved[task] = out["rows"]
        if task == "engine":
            assert out["errors"] == [] and out["status"].endswith("COMPLETED")
        eligible = after["archive"]
        # Source union archive is the original, row for row: nothing lost or doubled.
        assert (after["rows"], after["sum"]) == (
            original["SourceDB1.Position"]["rows"],
            original["SourceDB1.Position"]["sum"],
        )
        assert after["archive"] == out["rows"]
        assert contract_rows(single_set) == contracts
        columns, indexes, key = archive_table(single_set)
        if task == "ceiling":
            assert columns == POSITION
            assert key == [(1, "basketId"), (2, "positionId"), (3, "businessDate")]
            assert [i for i in indexes if not i.startswith("sqlite_autoindex")] == []
        elif task == "ceiling_same":
            assert columns == POSITION + META
            # The engine's shape: the source key as the primary key, two secondary indexes built after the move.
            assert key == [(1, "basketId"), (2, "positionId"), (3, "businessDate")]
            assert {i for i in indexes if not i.startswith("sqlite_autoindex")} == {
                "Position_retention_until",
                "Position_contractId",
            }

    assert moved["ceiling"] == moved["ceiling_same"] == moved["engine"] == eligible
    # About 40% of the rows are eligible (contracts matured before the threshold).
    assert 0.35 * ROWS < eligible < 0.45 * ROWS
