"""The engine drives SQL Server through the stored procedures, with their exact parameters.

No SQL Server runs here, so the connection is a recording stand-in: it keeps
the batch text and parameters the engine sends and answers the final SELECT
of OUTPUT parameters the way SQL Server would. The procedures' own signatures
are checked against sql/07_procedures.sql by tests/test_mssql_sql.py.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from archival.backends.mssql.backend import MSSQLBackend
from archival.engine import mssql_path


class RecordingCursor:
    def __init__(self, answers):
        self.answers = answers
        self.sent = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.sent.append((sql, list(params or [])))

    def fetchone(self):
        return self.answers.pop(0)


def backend_answering(*answers):
    backend = object.__new__(MSSQLBackend)
    backend.alias = "archive"
    cursor = RecordingCursor(list(answers))
    backend.connection = SimpleNamespace(cursor=lambda: cursor, vendor="microsoft")
    return backend, cursor


def spec_for(backend):
    config = SimpleNamespace(pk=7, source_db="SourceDB1", schema_name="dbo", table_name="Position", effective_years=10)
    return SimpleNamespace(mode="same_server", archive=backend, config=config, threshold=dt.date(2024, 11, 25))


def test_a_batch_is_one_exec_of_usp_archive_batch_with_outputs_read_back():
    backend, cursor = backend_answering((4000, 2, '["12","7","2024-01-31"]'))
    spec = spec_for(backend)

    outcome = mssql_path.move_batch(spec, run_id=3, batch_no=5, low=[12, 6, "2024-01-31"], size=4000)

    ((sql, params),) = cursor.sent
    assert "EXEC archival.usp_archive_batch @run_id = %s, @config_id = %s" in sql
    assert "@rows_moved = @o1 OUTPUT, @rows_skipped = @o2 OUTPUT, @key_high = @o3 OUTPUT" in sql
    assert params[:9] == [3, 7, "SourceDB1", "dbo", "Position", dt.date(2024, 11, 25), 10, 4000, 5]
    assert outcome.moved == 4002 and outcome.skipped_identical == 2
    assert outcome.high == ["12", "7", "2024-01-31"]


def test_an_empty_batch_ends_the_table():
    backend, _ = backend_answering((0, 0, None))
    outcome = mssql_path.move_batch(spec_for(backend), run_id=3, batch_no=9, low=None, size=4000)
    assert outcome.high is None and outcome.moved == 0


def test_mark_calls_usp_mark_table_and_reads_counts_and_bounds():
    backend, cursor = backend_answering((1234, 5, '["1"]', '["99"]'))
    eligible, nulls, low, high = mssql_path.mark_counts(spec_for(backend))
    ((sql, params),) = cursor.sent
    assert "EXEC archival.usp_mark_table" in sql
    assert params == ["SourceDB1", "dbo", "Position", dt.date(2024, 11, 25)]
    assert (eligible, nulls, low, high) == (1234, 5, ["1"], ["99"])


def test_sql_server_batches_stay_under_lock_escalation():
    backend, _ = backend_answering()
    try:
        mssql_path.move_batch(spec_for(backend), run_id=1, batch_no=1, low=None, size=5000)
    except ValueError as exc:
        assert "batch_size" in str(exc)
    else:
        raise AssertionError("a 5,000-row batch was sent to SQL Server")
