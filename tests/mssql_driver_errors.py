"""SQL Server errors as each driver raises them, and as the engine catches them.

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
from django.db import Error as DjangoDatabaseError
from django.db.utils import DatabaseErrorWrapper

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
