"""SQL Server errors the engine retries, as each driver raises them.

No SQL Server runs here: the exceptions are built the way the drivers build
them from an ODBC diagnostic record, then wrapped by Django as the engine
sees them. pyodbc (src/errors.cpp, GetErrorFromHandle): args = (SQLSTATE,
"[SQLSTATE] message (native error) (ODBC function)"). mssql-python
(mssql_python/exceptions.py, sqlstate_to_exception): the exception class and
``driver_error`` come from the SQLSTATE, ``ddbc_error`` is the message; no
number. Error numbers and meanings:
https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import DatabaseError
from django.db import Error as DjangoDatabaseError
from django.db.utils import DatabaseErrorWrapper

from archival import retry

pyodbc = pytest.importorskip("pyodbc")
mssql_python = pytest.importorskip("mssql_python")
from mssql_python.exceptions import sqlstate_to_exception  # noqa: E402

ODBC = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
# (SQLSTATE, native error, server message) as SQL Server sends them.
DEADLOCK = (
    "40001", 1205,
    "Transaction (Process ID 57) was deadlocked on lock resources with another process and has been "
    "chosen as the deadlock victim. Rerun the transaction.",
)  # fmt: skip
LOCK_TIMEOUT = ("HY000", 1222, "Lock request time out period exceeded.")
DUPLICATE_KEY = (
    "23000", 2627,
    "Violation of PRIMARY KEY constraint 'PK_t'. Cannot insert duplicate key in object 'dbo.t'. "
    "The duplicate key value is (1222).",
)  # fmt: skip
PERMISSION = ("42000", 229, "The SELECT permission was denied on the object 'Hold', database 'Archive', schema 'dbo'.")


def as_pyodbc(state: str, number: int, message: str) -> Exception:
    cls = (
        pyodbc.IntegrityError
        if state.startswith("23")
        else pyodbc.ProgrammingError
        if state == "42000"
        else pyodbc.Error
    )
    return cls(state, f"[{state}] {ODBC}{message} ({number}) (SQLExecDirectW)")


def as_mssql_python(state: str, number: int, message: str) -> Exception:
    return sqlstate_to_exception(state, f"{ODBC}{message}")


def through_django(driver, exc: Exception) -> DjangoDatabaseError:
    """The exception as the engine catches it: Django's wrapper, the driver's error as its cause."""
    with (
        pytest.raises(DjangoDatabaseError) as caught,
        DatabaseErrorWrapper(SimpleNamespace(Database=driver, errors_occurred=False)),
    ):
        raise exc
    return caught.value


DRIVERS = [(pyodbc, as_pyodbc), (mssql_python, as_mssql_python)]


@pytest.mark.parametrize(("driver", "build"), DRIVERS, ids=["pyodbc", "mssql-python"])
@pytest.mark.parametrize("error", [DEADLOCK, LOCK_TIMEOUT], ids=["1205 deadlock victim", "1222 lock timeout"])
def test_a_deadlock_or_lock_timeout_from_a_procedure_is_transient(driver, build, error):
    assert retry.is_transient(through_django(driver, build(*error)))


@pytest.mark.parametrize(("driver", "build"), DRIVERS, ids=["pyodbc", "mssql-python"])
@pytest.mark.parametrize("error", [DUPLICATE_KEY, PERMISSION], ids=["2627 duplicate key", "229 permission"])
def test_a_duplicate_key_or_a_denied_permission_is_not(driver, build, error):
    # The duplicate key's value (1222) is not an error number.
    assert not retry.is_transient(through_django(driver, build(*error)))


def test_the_native_error_number_is_read_from_where_pyodbc_puts_it():
    message = as_pyodbc(*DUPLICATE_KEY).args[1]
    assert retry.sql_server_error_numbers(message) == {2627}
    assert retry.sql_server_error_numbers(f"{message}; [01000] {ODBC}The statement has been terminated. (3621)") == {
        2627, 3621,
    }  # fmt: skip


@pytest.mark.parametrize(("driver", "build"), DRIVERS, ids=["pyodbc", "mssql-python"])
def test_a_batch_that_timed_out_on_a_lock_runs_again(driver, build):
    calls, delays = [], []

    def batch():
        calls.append(1)
        if len(calls) == 1:
            raise through_django(driver, build(*LOCK_TIMEOUT))
        return "moved"

    assert retry.retry_transient(batch, attempts=3, base_delay=0.01, sleep=delays.append) == "moved"
    assert len(calls) == 2 and len(delays) == 1


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_lock_timeout_after_its_retries_fails_the_table_not_the_run(demo, monkeypatch):
    from datetime import date

    from archival import engine
    from archival.engine import runner
    from archival.engine.spec import build_spec
    from governance.models import Phase, RecoveryState
    from tests.mssql_fixtures import backend_answering

    run = engine.start_run(cutoff=date(2026, 11, 25), tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)
    spec = build_spec(state.config, run.cutoff)
    spec.archive, cursor = backend_answering()  # the archive on SQL Server, blocked
    spec.mode = "same_server"
    timed_out = through_django(pyodbc, as_pyodbc(*LOCK_TIMEOUT))
    assert not isinstance(timed_out, DatabaseError)  # pyodbc's base Error for HY000

    def blocked(sql, params=None):
        raise timed_out

    monkeypatch.setattr(cursor, "execute", blocked)
    monkeypatch.setattr(runner, "build_spec", lambda config, cutoff: spec)

    result = runner.advance_table(state.pk, worker="host:1:a")

    assert "Lock request time out" in result.error
    assert RecoveryState.objects.get(pk=state.pk).phase == Phase.FAILED
