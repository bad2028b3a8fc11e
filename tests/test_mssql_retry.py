"""SQL Server errors the engine retries, as each driver raises them.

The errors are built as the drivers build them (tests/mssql_driver_errors.py).
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from archival import retry
from tests.mssql_driver_errors import (
    DEADLOCK,
    DUPLICATE_KEY,
    LOCK_TIMEOUT,
    ODBC,
    PERMISSION,
    as_mssql_python,
    as_pyodbc,
    mssql_python,
    pyodbc,
    through_django,
)

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
