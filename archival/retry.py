"""Retry a unit of database work when the error is transient.

The engine wraps each batch transaction in :func:`retry_transient`: a
deadlock, a lock timeout, a serialization failure or a dropped connection
rolls that batch back, and the batch is simply run again after a short,
growing, jittered pause. Anything else (a constraint violation, a reconcile
mismatch, a missing column) is permanent: it propagates at once and fails
that table, the other tables go on.

Contract for ``fn``: it owns its transaction (opens and commits its own
``transaction.atomic``), so a failed attempt left nothing behind. Retrying
inside an outer transaction would be wrong: the server has already rolled the
whole transaction back, so :func:`retry_transient` refuses to retry when a
connection is inside an atomic block, and re-raises.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError, connections

from archival import stopping

logger = logging.getLogger("archival.retry")

T = TypeVar("T")

# PostgreSQL SQLSTATEs (and SQL Server's ODBC SQLSTATEs) that mean "try again".
# 40001 serialization_failure (PostgreSQL; SQL Server deadlock victim via ODBC),
# 40P01 deadlock_detected, 55P03 lock_not_available (lock_timeout, NOWAIT),
# 57P01/57P02/57P03 admin/crash shutdown, cannot connect now; class 08 is
# "connection exception"; HYT00/HYT01 are ODBC timeouts; 08S01 link failure.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "HYT00", "HYT01"})
TRANSIENT_SQLSTATE_CLASSES = ("08",)

# MariaDB/MySQL error numbers: 1205 lock wait timeout, 1213 deadlock,
# 1927 connection killed, 2002/2003 cannot connect, 2006 server gone away,
# 2013 lost connection during query, 4031 disconnected for inactivity.
TRANSIENT_MYSQL_CODES = frozenset({1205, 1213, 1927, 2002, 2003, 2006, 2013, 4031})

# SQL Server native error numbers: 1205 deadlock victim, 1222 lock request
# timeout (SET LOCK_TIMEOUT), 3960 snapshot update conflict, 10053/10054
# connection reset, 233 no process on the other end, 40613/40197/40501 Azure
# SQL "try again" family. A procedure's CATCH re-raises with a bare THROW,
# which keeps the original number.
TRANSIENT_MSSQL_CODES = frozenset({1205, 1222, 3960, 10053, 10054, 233, 40613, 40197, 40501})

# The same errors by their server message (sys.messages, us_english), for
# mssql-python, whose exceptions keep neither the SQLSTATE nor the number.
TRANSIENT_MSSQL_MESSAGES = (
    "chosen as the deadlock victim",  # 1205
    "lock request time out period exceeded",  # 1222
    "snapshot isolation transaction aborted due to update conflict",  # 3960
)

# pyodbc's message (src/errors.cpp, GetErrorFromHandle): "[SQLSTATE] text
# (native error) (ODBC function)", later diagnostic records appended as
# "; [SQLSTATE] text (native error)". The number is the parenthesised integer
# before the function name, a ";" or the end.
_PYODBC_NATIVE_ERROR = re.compile(r"\((-?\d+)\)(?= \(\w+\)(?:;|$)|;|$)")

# SQLite primary result codes: SQLITE_BUSY (5) after busy_timeout, SQLITE_LOCKED (6).
TRANSIENT_SQLITE_CODES = frozenset({5, 6})

_TRANSIENT_PHRASES = (
    "database is locked",
    "database table is locked",
    "deadlock",
    "lock wait timeout",
    "lock request time out",
    "could not serialize access",
    "server closed the connection",
    "connection already closed",
    "connection is closed",
    "terminating connection",
    "lost connection",
    "server has gone away",
    "connection reset",
    "communication link failure",
)


def _chain(exc: BaseException):
    """The exception, then its causes: Django wraps driver errors (``__cause__``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _classify_one(exc: BaseException) -> bool | None:
    """True/False when this exception decides it; None to look further down the chain."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            # Extended codes carry the primary code in the low byte (SQLITE_BUSY_SNAPSHOT = 517).
            return (code & 0xFF) in TRANSIENT_SQLITE_CODES
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower()

    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)

    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and type(exc).__module__.split(".")[0] in {"MySQLdb", "pymysql", "mysql"}:
        return args[0] in TRANSIENT_MYSQL_CODES
    driver = type(exc).__module__.split(".")[0]
    if driver == "pyodbc" and args and isinstance(args[0], str):
        return _pyodbc_transient(args)
    if driver == "mssql_python" and hasattr(exc, "driver_error"):
        return _mssql_python_transient(exc)
    return None


def sql_server_error_numbers(message: str) -> set[int]:
    """The SQL Server native error numbers in a pyodbc error message."""
    return {int(n) for n in _PYODBC_NATIVE_ERROR.findall(message)}


def _pyodbc_transient(args: tuple) -> bool:
    """pyodbc: ``args`` = (SQLSTATE, message carrying the native error number)."""
    state = args[0]
    if state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_SQLSTATE_CLASSES):
        return True
    message = " ".join(str(a) for a in args[1:])
    return bool(sql_server_error_numbers(message) & TRANSIENT_MSSQL_CODES)


@cache
def _mssql_python_transient_descriptions() -> frozenset[str]:
    """mssql-python's ``driver_error`` texts of the transient SQLSTATEs (its own table, read once)."""
    # The SQL Server driver loads only where a SQL Server error is classified.
    from mssql_python.exceptions import sqlstate_to_exception

    states = TRANSIENT_SQLSTATES | {"08001", "08002", "08003", "08004", "08007", "08S01"}
    found = (sqlstate_to_exception(state, "") for state in sorted(states))
    return frozenset(exc.driver_error for exc in found if exc is not None)


def _mssql_python_transient(exc) -> bool:
    """mssql-python: ``driver_error`` names the SQLSTATE, ``ddbc_error`` is the server's message.

    The exception keeps no SQLSTATE code and no native error number
    (mssql_python/exceptions.py ``sqlstate_to_exception``; the pybind
    ``SQLCheckError_Wrap`` passes only the message on): the SQLSTATE is
    recognised by its description, the SQL Server error by its message text.
    """
    if exc.driver_error in _mssql_python_transient_descriptions():
        return True
    message = (exc.ddbc_error or "").lower()
    return any(text in message for text in TRANSIENT_MSSQL_MESSAGES)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same transaction later may succeed.

    Looks through Django's wrapper to the driver's exception and decides by
    error code (SQLSTATE, SQLite result code, MariaDB/SQL Server error number),
    falling back to well-known messages of a dropped connection. Integrity
    errors, data errors and programming errors are never transient.
    """
    for link in _chain(exc):
        if isinstance(link, (IntegrityError, DataError, ProgrammingError)):
            return False
        decided = _classify_one(link)
        if decided is not None:
            return decided
    text = " ".join(str(link) for link in _chain(exc)).lower()

    if any(isinstance(link, (OperationalError, InterfaceError)) for link in _chain(exc)):
        return any(phrase in text for phrase in _TRANSIENT_PHRASES)
    return False


# A wait that a bound set by the engine ended (archival.engine.txn): the
# statement gave up on another session's lock, or ran out of time.
# PostgreSQL 55P03 lock_not_available (lock_timeout), 57014 query_canceled
# (statement_timeout); MariaDB 1205 lock wait timeout (row and table locks),
# 1969 max_statement_time exceeded; SQLite SQLITE_BUSY after the busy timeout;
# SQL Server 1222 lock request timeout (SET LOCK_TIMEOUT).
WAIT_TIMEOUT_SQLSTATES = frozenset({"55P03", "57014"})
WAIT_TIMEOUT_MYSQL_CODES = frozenset({1205, 1969})
WAIT_TIMEOUT_MSSQL_CODES = frozenset({1222})

# The server cannot be reached or went away (as opposed to a statement that
# failed on a working server): PostgreSQL connection exceptions (class 08) and
# shutdowns (57P01-57P03), a refused or broken socket (no SQLSTATE: the
# message says it); MariaDB 2002/2003 cannot connect, 2006 gone away, 2013
# lost connection, 1927 killed, 4031 disconnected; SQL Server link failures.
UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "08S01"})
UNREACHABLE_MYSQL_CODES = frozenset({1927, 2002, 2003, 2006, 2013, 4031})
UNREACHABLE_MSSQL_CODES = frozenset({10053, 10054, 233})
_UNREACHABLE_PHRASES = (
    "connection refused",
    "could not connect",
    "connection failed",
    "server closed the connection",
    "connection already closed",
    "connection is closed",
    "connection is lost",
    "consuming input failed",
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "lost connection",
    "server has gone away",
    "can't connect",
    "connection reset",
    "communication link failure",
    "no route to host",
    "timeout expired",
)


def _codes(exc: BaseException) -> tuple[str | None, int | None, str]:
    """(SQLSTATE, native error number, message) of one exception in the chain."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    args = getattr(exc, "args", ())
    module = type(exc).__module__.split(".")[0]
    number = None
    if args and isinstance(args[0], int) and module in {"MySQLdb", "pymysql", "mysql"}:
        number = args[0]
    if args and isinstance(args[0], str) and module in {"pyodbc", "mssql_python"}:
        sqlstate = sqlstate or args[0]
        text = " ".join(str(a) for a in args[1:])
        number = next((c for c in (*WAIT_TIMEOUT_MSSQL_CODES, *UNREACHABLE_MSSQL_CODES) if f"({c})" in text), None)
    return (sqlstate if isinstance(sqlstate, str) else None), number, str(exc).lower()


def is_wait_timeout(exc: BaseException) -> bool:
    """Whether a lock or statement timeout set by the engine ended the statement."""
    for link in _chain(exc):
        if isinstance(link, sqlite3.Error):
            code = getattr(link, "sqlite_errorcode", None)
            if code is not None:
                return (code & 0xFF) in TRANSIENT_SQLITE_CODES
            return "locked" in str(link).lower()
        sqlstate, number, _ = _codes(link)
        if sqlstate in WAIT_TIMEOUT_SQLSTATES or number in WAIT_TIMEOUT_MYSQL_CODES | WAIT_TIMEOUT_MSSQL_CODES:
            return True
    return False


def is_unreachable(exc: BaseException) -> bool:
    """Whether the error says the database server cannot be reached (not that a statement failed).

    A candidate only: which database is down, if any, is decided by trying
    to connect to each one the work used (archival.outage.unreachable).
    """
    for link in _chain(exc):
        if isinstance(link, (IntegrityError, DataError, ProgrammingError, sqlite3.Error)):
            return False
        sqlstate, number, text = _codes(link)
        if number is not None:
            return number in UNREACHABLE_MYSQL_CODES | UNREACHABLE_MSSQL_CODES
        if sqlstate:
            return sqlstate in UNREACHABLE_SQLSTATES or sqlstate.startswith("08")
        if any(phrase in text for phrase in _UNREACHABLE_PHRASES):
            return True
    return False


def _reset_broken_connections() -> None:
    """Close connections a lost-connection error left unusable, so the retry reconnects."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block and conn.errors_occurred:
            if not conn.is_usable():
                conn.close()
            else:
                conn.errors_occurred = False


def backoff_delay(attempt: int, base_delay: float, max_delay: float) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, base * 2**(attempt-1)], capped."""
    ceiling = min(max_delay, base_delay * (2 ** (attempt - 1)))
    return random.uniform(min(base_delay / 2, ceiling), ceiling)


def retry_transient(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fn()``; on a transient database error, back off and call it again.

    ``attempts`` counts calls (1 = no retry). After the last attempt, or on a
    permanent error, or when the process was asked to stop
    (:mod:`archival.stopping`), the error propagates unchanged. ``on_retry``
    (attempt number, error, delay) lets the caller audit or count retries.
    Refuses to retry (re-raises) while any connection is inside an atomic
    block, because the failed transaction is not ``fn``'s to repeat.
    ``retryable`` narrows what is retried (default: every transient error).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not retryable(exc) or stopping.stop_requested():
                raise
            if any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
                raise
            delay = backoff_delay(attempt, base_delay, max_delay)
            logger.warning(
                "transient database error (attempt %s of %s), retrying in %.2fs: %s",
                attempt,
                attempts,
                delay,
                exc,
            )
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            _reset_broken_connections()
            sleep(delay)
            attempt += 1
