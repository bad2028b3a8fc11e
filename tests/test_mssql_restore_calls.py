"""A restore batch on SQL Server is one call of archival.usp_restore_batch, its outputs read back.

No SQL Server runs here: the connection is the recording stand-in of
tests/mssql_fixtures.py (the batch text and parameters the backend sends,
OUTPUT parameters answered through the final SELECT as SQL Server returns
them). The procedure's signature is checked against sql/07 by
tests/test_mssql_sql.py (TestContract), its body by TestRestore there.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone

from archival.backends.base import RestoreBatchCounts
from archival.backends.mssql.procedures import ProcedureCallError, encode_selection
from tests.mssql_fixtures import backend_answering, parse_errors

CONFIG = SimpleNamespace(pk=7, source_db="SourceDB1", schema_name="dbo", table_name="Position")


def restore(backend, **overrides):
    args = dict(
        request_id=31, config=CONFIG, batch_no=2, key_after=[12, dt.date(2024, 1, 31)], batch_size=4000,
        selection={"kind": "KEY_RANGE", "key_low": [10, dt.date(2020, 1, 1)], "key_high": [200, dt.date(2024, 12, 31)]},
    )  # fmt: skip
    return backend.restore_batch(**{**args, **overrides})


def test_a_restore_batch_is_one_exec_with_its_outputs_mapped_to_the_counts():
    backend, cursor = backend_answering((3990, 8, 3998, 12, '["240","2024-02-29"]'))

    counts = restore(backend)

    ((sql, params),) = cursor.sent
    assert sql.startswith(
        "DECLARE @o1 int; DECLARE @o2 int; DECLARE @o3 int; DECLARE @o4 int; DECLARE @o5 nvarchar(max); "
    )
    assert "EXEC archival.usp_restore_batch @request_id = %s, @config_id = %s, @source_alias = %s" in sql
    assert (
        "@rows_restored = @o1 OUTPUT, @rows_skipped = @o2 OUTPUT, @rows_deleted = @o3 OUTPUT, "
        "@rows_held = @o4 OUTPUT, @key_high = @o5 OUTPUT, @lock_timeout_ms = %s;"
    ) in sql
    assert sql.endswith("SELECT @o1, @o2, @o3, @o4, @o5;")
    assert parse_errors(sql.replace("%s", "NULL")) == []
    request_id, config_id, alias, schema, table, selection, as_of, size, batch_no, key_after, lock_ms = params
    assert (request_id, config_id, alias, schema, table) == (31, 7, "SourceDB1", "dbo", "Position")
    # Holds are counted as Hold.objects.active() counts them: active today.
    assert (as_of, size, batch_no, lock_ms) == (timezone.localdate(), 4000, 2, 5000)
    assert json.loads(key_after) == ["12", "2024-01-31"]
    assert json.loads(selection) == {
        "kind": "KEY_RANGE", "key_low": ["10", "2020-01-01"], "key_high": ["200", "2024-12-31"],
    }  # fmt: skip
    assert counts == RestoreBatchCounts(
        restored=3990, skipped_identical=8, deleted=3998, held=12, key_high=["240", "2024-02-29"]
    )


def test_an_empty_batch_says_nothing_is_left():
    backend, _ = restore_backend = backend_answering((0, 0, 0, 0, None))
    counts = restore(backend, key_after=None)
    assert counts == RestoreBatchCounts(0, 0, 0, 0, None)
    assert restore_backend[1].sent[0][1][9] is None  # no cursor: from the first selected row


@pytest.mark.parametrize(
    "selection",
    [
        {"kind": "CONTRACT", "column": "bookId", "value": "B-7"},
        {"kind": "KEYS", "request_id": 31},
        {"kind": "DATE_RANGE", "date_from": dt.date(2020, 1, 1), "date_to": "2020-06-30"},
        {"kind": "RUN", "archive_run_id": 12},
        {
            "kind": "REFERENCED",
            "key_column": "contractId",
            "child_table": "Trade",
            "ref_column": "contractId",
            "child": {"kind": "KEY_RANGE", "key_low": [Decimal("1.50")], "key_high": None},
        },
    ],
    ids=["contract", "keys", "date range", "run", "parent"],
)
def test_every_selection_kind_travels_as_one_json_parameter(selection):
    backend, cursor = backend_answering((0, 0, 0, 0, None))
    restore(backend, selection=selection)
    ((sql, params),) = cursor.sent
    sent = json.loads(params[5])
    assert sent["kind"] == selection["kind"]
    for value in ("B-7", "Trade", "2020-01-01"):
        assert value not in sql  # values and names of the request are parameters, never text
    if selection["kind"] == "DATE_RANGE":
        assert sent["date_from"] == "2020-01-01"
    if selection["kind"] == "REFERENCED":
        assert sent["child"] == {"kind": "KEY_RANGE", "key_low": ["1.50"], "key_high": None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 5000}, r"batch_size must be 1\.\.4000"),
        ({"batch_size": 0}, r"batch_size must be 1\.\.4000"),
        ({"selection": {"kind": "EVERYTHING"}}, "kind is one of"),
        ({"selection": {"kind": "KEY_RANGE", "key_low": "10", "key_high": None}}, "list of key values"),
        ({"selection": {"kind": "REFERENCED", "child": {"kind": "NOPE"}}}, "kind is one of"),
    ],
    ids=["too big", "zero", "unknown kind", "scalar key", "unknown child kind"],
)
def test_a_call_the_procedure_would_refuse_is_not_sent(overrides, message):
    backend, cursor = backend_answering()
    with pytest.raises(ProcedureCallError, match=message):
        restore(backend, **overrides)
    assert cursor.sent == []


def test_a_deadlock_or_lock_timeout_rolls_the_batch_back_so_it_is_called_again(monkeypatch):
    """1205 (deadlock victim) and 1222 (lock time-out) undo the whole batch
    (XACT_ABORT ON, ROLLBACK in the CATCH, THROW keeps the number): the same
    call is made again, as the archive batch is retried.
    https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors
    """
    from archival import retry
    from tests.mssql_driver_errors import DEADLOCK, LOCK_TIMEOUT, as_pyodbc, through_django

    pyodbc = pytest.importorskip("pyodbc")
    monkeypatch.setattr(retry.time, "sleep", lambda _delay: None)
    monkeypatch.setattr(retry, "backoff_delay", lambda *args: 0.0)
    backend, cursor = backend_answering((5, 0, 5, 0, '["5"]'))
    failures = [through_django(pyodbc, as_pyodbc(*DEADLOCK)), through_django(pyodbc, as_pyodbc(*LOCK_TIMEOUT))]
    real_execute = cursor.execute

    def execute(sql, params=None):
        real_execute(sql, params)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(cursor, "execute", execute)
    counts = restore(backend)
    assert len(cursor.sent) == 3 and len({(s, tuple(p)) for s, p in cursor.sent}) == 1
    assert counts.restored == 5 and counts.key_high == ["5"]


def test_a_lost_connection_is_not_called_again_the_executor_resumes_from_the_ledger(monkeypatch):
    # The batch may have committed before the answer was lost: calling it again
    # would pick the next rows under the same batch number.
    pyodbc = pytest.importorskip("pyodbc")
    from tests.mssql_driver_errors import through_django

    lost = pyodbc.OperationalError(
        "08S01", "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]Communication link failure (10054) (SQLExecDirectW)"
    )
    backend, cursor = backend_answering()

    def execute(sql, params=None):
        cursor.sent.append((sql, params))
        raise through_django(pyodbc, lost)

    monkeypatch.setattr(cursor, "execute", execute)
    with pytest.raises(Exception, match="Communication link failure"):
        restore(backend)
    assert len(cursor.sent) == 1


def test_a_conflict_is_not_retried_and_reaches_the_caller_with_its_key(monkeypatch):
    pyodbc = pytest.importorskip("pyodbc")
    from tests.mssql_driver_errors import through_django

    conflict = pyodbc.ProgrammingError(
        "42000",
        "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Restore of SourceDB1.dbo.Position stops: "
        'the source already has key ["12","2024-01-31"] with other values (1 such row(s) in this batch); nothing is '
        "overwritten and nothing of the batch moved. (50804) (SQLExecDirectW)",
    )
    backend, cursor = backend_answering()

    def execute(sql, params=None):
        cursor.sent.append((sql, params))
        raise through_django(pyodbc, conflict)

    monkeypatch.setattr(cursor, "execute", execute)
    from archival.restore.errors import RestoreConflict

    # The restore engine's conflict (the table stops), with the server's words.
    with pytest.raises(RestoreConflict, match=r'already has key \["12","2024-01-31"\]') as caught:
        restore(backend)
    assert str(caught.value).startswith("Restore of SourceDB1.dbo.Position stops")
    assert len(cursor.sent) == 1


def test_other_engines_say_their_restore_batches_are_moved_by_the_engines_sql():
    from archival.backends import backend_for

    with pytest.raises(NotImplementedError, match="moved by the engine's SQL"):
        backend_for("archive").restore_batch(
            request_id=1, config=CONFIG, batch_no=1, key_after=None, batch_size=10, selection={"kind": "RUN"}
        )


def test_the_preview_counts_come_from_usp_restore_compare():
    backend, cursor = backend_answering((2, 5))
    conflicts, identical = backend.restore_source_counts(config=CONFIG, selection={"kind": "RUN", "archive_run_id": 3})
    ((sql, params),) = cursor.sent
    assert "EXEC archival.usp_restore_compare @source_alias = %s" in sql
    assert "@conflicts = @o1 OUTPUT, @identical = @o2 OUTPUT" in sql and sql.endswith("SELECT @o1, @o2;")
    assert params == ["SourceDB1", "dbo", "Position", '{"kind": "RUN", "archive_run_id": 3}', 5000]
    assert (conflicts, identical) == (2, 5)


def test_the_columns_a_restore_writes_leave_out_computed_and_rowversion(monkeypatch):
    from archival.backends.base import Column, TableInfo

    backend, cursor = backend_answering([("positionId", True, False), ("amountEur", False, True)])
    columns = [
        Column("positionId", "int", "int", False),
        Column("amount", "decimal(18,2)", "decimal", True),
        Column("amountEur", "decimal(18,2)", "decimal", True),
        Column("rv", "rowversion", "binary", False),
    ]
    monkeypatch.setattr(
        backend, "describe", lambda schema, table: TableInfo(schema, table, columns, ["positionId"], [])
    )
    target = backend.insertable_columns("dbo", "Position")
    assert target.columns == ["positionId", "amount"] and target.derived == ("amountEur", "rv")
    assert target.overriding == ""  # the identity column goes in under IDENTITY_INSERT, set by the procedure
    ((sql, params),) = cursor.sent
    assert "c.is_identity, c.is_computed FROM sys.columns" in sql and params == ["dbo", "Position"]


def test_the_selection_is_json_with_keys_as_strings():
    text = encode_selection({"kind": "KEY_RANGE", "key_low": [1, True], "key_high": [2, False]})
    assert json.loads(text) == {"kind": "KEY_RANGE", "key_low": ["1", "True"], "key_high": ["2", "False"]}
