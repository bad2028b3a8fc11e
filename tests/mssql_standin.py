"""A stand-in SQL Server for the statement capture (tests/test_mssql_capture.py).

What is real and what stands in:

* Each alias (``default``, ``archive``, ``archive_readonly``, every source)
  is served by mssql-django's own ``DatabaseWrapper`` (the ``mssql`` engine of
  the production settings): its ORM compilers write the T-SQL, its cursor
  wrapper turns ``%s`` into ``?`` and its transaction handling runs. Only the
  DB-API connection under it (what pyodbc/mssql-python would return) is
  :class:`StandInConnection`.
* The stand-in records every batch with the login and database the alias
  logs in with (:data:`LOGINS`, :data:`DATABASES`: aliases differ from
  database names, as in docs/sqlserver.md), then answers it:

  - session statements (``SET``, ``@@TRANCOUNT``, ``SERVERPROPERTY``);
  - catalog reads (``sys.*``, ``INFORMATION_SCHEMA``) from the demo schema,
    described through the SQLite backend (``dbo`` reads as SQLite's ``main``);
    in the archive database, a table exists once the DBA provisioned it
    (:attr:`Server.provisioned`), with the columns provisioning gives it;
  - calls of the ``archival.usp_*`` procedures from a small state model,
    keyed by the Django alias as the registry is: usp_mark_table counts the
    eligible rows no foreign-key child references, usp_archive_batch moves
    the next batch into the SQLite archive with its ledger row (547 when a
    child row blocks the delete), usp_dispose_batch deletes expired rows
    unless an ALL or TABLE hold covers the table (other hold scopes are not
    modelled);
  - everything else (the ORM's and the engine's own statements) is
    translated by sqlglot from T-SQL to SQLite and run on the alias's SQLite
    test database, so the cycle sees consistent data. That translation is
    plumbing to keep the cycle going, not a claim about SQL Server results.

* SQL Server behaviour the stand-in reproduces (Microsoft documentation):

  - ``SET NOCOUNT ON`` is a session setting: DML after it reports
    ``rowcount == -1`` until ``SET NOCOUNT OFF``
    (https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql);
  - OUTPUT parameters come back only through the caller's final SELECT;
  - a batch with a construct SQL Server lacks (RETURNING, LIMIT, ...) fails
    with error 102 (state 42000, "Incorrect syntax near"), in pyodbc's
    message format; it is still recorded.

Permission errors (229/262/916) are *not* raised while the cycle runs: the
first one would end the cycle and hide the rest. The permission contract is
asserted over the whole capture afterwards (tests/mssql_grants.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyodbc
import sqlglot
from django.conf import settings
from django.db import connections

from archival.backends.sqlite import SQLiteBackend
from tests.mssql_capture_checks import foreign_constructs

# The deployment the capture stands for (docs/sqlserver.md, section 3).
CONTROL_DB = "ArchivalControl"
ARCHIVE_DB = "ArchivalArchive"
APP_LOGIN = "archival_app"
READER_LOGIN = "archival_reader"
SOURCE_DATABASES = {"SourceDB1": "Sales", "SourceDB2": "Trading", "SourceDB3": "Prices"}
DATABASES = {"default": CONTROL_DB, "archive": ARCHIVE_DB, "archive_readonly": ARCHIVE_DB, **SOURCE_DATABASES}
LOGINS = {alias: APP_LOGIN for alias in DATABASES} | {"archive_readonly": READER_LOGIN}
SQLCMD_VARIABLES = {
    "ControlDb": CONTROL_DB,
    "ArchiveDb": ARCHIVE_DB,
    "SourceAliases": ",".join(SOURCE_DATABASES),
    "SourceDatabases": ",".join(SOURCE_DATABASES.values()),
    "NamespacePrefix": "archive_",
    "AppLogin": APP_LOGIN,
    "AppPassword": "app-secret",
    "ReaderLogin": READER_LOGIN,
    "ReaderPassword": "reader-secret",
    "CertPassword": "cert-secret",
}


def namespace_for(alias: str) -> str:
    """The archive schema of a source (archive_<alias>, as sql/02 and provisioning name it)."""
    return f"{settings.ARCHIVAL['NAMESPACE_PREFIX']}{alias.lower()}"


@dataclass
class Statement:
    alias: str
    login: str
    database: str
    sql: str  # as the driver received it: ``?`` placeholders
    params: tuple
    error: str = ""
    transaction: int | None = None  # per connection; None: autocommit

    @property
    def tsql(self) -> str:
        """The batch with ``@P1``-style parameters, as the driver sends it to the server (sp_prepexec)."""
        return qmark_to_named(self.sql)


_LITERAL_OR_QMARK = re.compile(r"N?'(?:[^']|'')*'|\[[^\]]*(?:\]\][^\]]*)*\]|\?")


def qmark_to_named(sql: str) -> str:
    """``?`` placeholders (outside literals and [names]) as @P1, @P2, ..."""
    counter = iter(range(1, 10_000))
    return _LITERAL_OR_QMARK.sub(lambda m: f"@P{next(counter)}" if m.group(0) == "?" else m.group(0), sql)


def syntax_error(near: str) -> pyodbc.ProgrammingError:
    return pyodbc.ProgrammingError(
        "42000",
        f"[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Incorrect syntax near '{near}'. (102) "
        "(SQLExecDirectW)",
    )


@dataclass
class TableState:
    """What usp_mark_table / usp_archive_batch / usp_dispose_batch see of one table."""

    provisioned: bool = True


@dataclass
class Server:
    """The instance: what was recorded, which archive tables the DBA provisioned."""

    shadows: dict  # alias -> Django SQLite wrapper holding that database's rows
    statements: list[Statement] = field(default_factory=list)
    # (source alias, table) of archive tables provisioned by the DBA.
    provisioned: set = field(default_factory=set)
    configs: dict = field(default_factory=dict)  # (alias, table) -> TableConfig
    ledger_model: object = None

    def connect(self, alias: str) -> StandInConnection:
        return StandInConnection(self, alias)


class StandInConnection:
    """The DB-API connection pyodbc would return for one alias."""

    def __init__(self, server: Server, alias: str):
        self.server = server
        self.alias = alias
        self.login = LOGINS[alias]
        self.database = DATABASES[alias]
        self._autocommit = True
        self.nocount = False
        self.trancount = 0
        self.transactions = 0
        shadow = server.shadows[alias]
        shadow.ensure_connection()
        self.shadow = shadow.connection  # sqlite3.Connection (archive: sources and namespaces attached)
        self.shadow.isolation_level = None
        # T-SQL string functions sqlglot passes through and older SQLite lacks.
        self.shadow.create_function("CONCAT", -1, lambda *parts: "".join(str(p) for p in parts if p is not None))
        self.shadow.create_function(
            "CONCAT_WS", -1, lambda sep, *parts: str(sep).join(str(p) for p in parts if p is not None)
        )
        self.shadow.create_function("NCHAR", 1, lambda code: None if code is None else chr(int(code)))
        # ``COLLATE DATABASE_DEFAULT`` (key texts and contract values compared
        # across databases): here a plain binary comparison.
        self.shadow.create_collation("DATABASE_DEFAULT", lambda a, b: (a > b) - (a < b))

    # -- DB-API --------------------------------------------------------------
    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._autocommit = value
        if not value and not self.shadow.in_transaction:
            self._begin()

    def _begin(self) -> None:
        self.shadow.execute("BEGIN")
        self.trancount = 1
        self.transactions += 1

    @property
    def transaction(self) -> int | None:
        """Which transaction of this connection a statement runs in (None: autocommit)."""
        return self.transactions if self.shadow.in_transaction else None

    def cursor(self) -> StandInCursor:
        return StandInCursor(self)

    def commit(self) -> None:
        if self.shadow.in_transaction:
            self.shadow.execute("COMMIT")
        self.trancount = 0
        if not self._autocommit:
            self._begin()

    def rollback(self) -> None:
        if self.shadow.in_transaction:
            self.shadow.execute("ROLLBACK")
        self.trancount = 0
        if not self._autocommit:
            self._begin()

    def close(self) -> None:
        if self.shadow.in_transaction:
            self.shadow.execute("ROLLBACK")

    def getinfo(self, what):
        return {pyodbc.SQL_DRIVER_NAME: "libmsodbcsql-18.4.so.1.1", pyodbc.SQL_DRIVER_VER: "18.04.0001"}.get(what, "")

    def add_output_converter(self, *args) -> None:
        pass

    def setencoding(self, *args, **kwargs) -> None:
        pass

    def setdecoding(self, *args, **kwargs) -> None:
        pass


_SET_NOCOUNT = re.compile(r"\bSET\s+NOCOUNT\s+(ON|OFF)\b\s*;?", re.IGNORECASE)
_EXEC_PROC = re.compile(r"\bEXEC(?:UTE)?\s+(archival\.\w+)", re.IGNORECASE)
_DML = re.compile(r"^\s*(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


class StandInCursor:
    def __init__(self, conn: StandInConnection):
        self.conn = conn
        self.rows: list[tuple] = []
        self.rowcount = -1
        self.description = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self) -> None:
        pass

    def nextset(self) -> bool:
        return False

    def fetchone(self):
        return self.rows.pop(0) if self.rows else None

    def fetchmany(self, size=1):
        out, self.rows = self.rows[:size], self.rows[size:]
        return out

    def fetchall(self):
        out, self.rows = self.rows, []
        return out

    def __iter__(self):
        while self.rows:
            yield self.rows.pop(0)

    def executemany(self, sql, seq):
        for params in seq:
            self.execute(sql, params)
        return self

    def _answer(self, rows, columns=None, rowcount=-1):
        self.rows = [tuple(r) for r in rows]
        self.description = (
            [(c, None, None, None, None, None, True) for c in (columns or ["c"])] if rows or columns else None
        )
        self.rowcount = rowcount
        return self

    def execute(self, sql, params=()):
        conn = self.conn
        params = tuple(params or ())
        statement = Statement(conn.alias, conn.login, conn.database, sql, params, transaction=conn.transaction)
        conn.server.statements.append(statement)
        self._last_sql = sql
        self.rows, self.description, self.rowcount = [], None, -1
        # What SQL Server certainly rejects fails here as it would there. A
        # batch only sqlfluff cannot parse runs on (sqlfluff lags T-SQL in
        # places); the capture test still reports it.
        problems = foreign_constructs(statement.tsql)
        if problems:
            statement.error = "102: " + problems[0]
            raise syntax_error(problems[0][:40])
        text = sql.strip()
        # Session settings.
        for m in _SET_NOCOUNT.finditer(text):
            conn.nocount = m.group(1).upper() == "ON"
        body = _SET_NOCOUNT.sub("", text).strip()
        body_upper = body.upper()
        if not body or body_upper.startswith(("SET DATEFORMAT", "SET TRANSACTION ISOLATION", "SET LOCK_TIMEOUT")):
            return self._answer([])
        if "SERVERPROPERTY('PRODUCTVERSION')" in body_upper:
            return self._answer([("15.0.4410.1", 3)], ["v", "e"])
        if body_upper in {"SELECT SYSDATETIME()", "SELECT GETDATE()"}:
            return self._answer([(dt.datetime.now(),)])
        if body_upper == "SELECT @@TRANCOUNT":
            return self._answer([(conn.trancount,)])
        if body_upper == "SELECT 1":
            return self._answer([(1,)])
        if body_upper.startswith(("SAVE TRANSACTION", "ROLLBACK TRANSACTION", "BEGIN TRANSACTION")):
            return self._savepoint(body)
        ddl = re.match(r"(?i)(CREATE|ALTER|DROP)\s+(TABLE|INDEX|SCHEMA|VIEW|PROCEDURE|TRIGGER)\b", body)
        if ddl:
            # The runtime logins hold no DDL right (sql/03): error 262.
            verb = f"{ddl.group(1).upper()} {ddl.group(2).upper()}"
            statement.error = "262"
            raise pyodbc.ProgrammingError(
                "42000",
                f"[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]{verb} permission denied in "
                f"database '{conn.database}'. (262) (SQLExecDirectW)",
            )
        proc = _EXEC_PROC.search(body)
        if proc:
            self._procedure(proc.group(1).lower(), params)
            if not re.search(r"\bSELECT\s+@", body, re.IGNORECASE):
                # OUTPUT parameters reach the client only through the caller's SELECT of them.
                self.rows, self.description = [], None
            return self
        if re.search(r"\bsys\.|INFORMATION_SCHEMA\.|OBJECT_ID\(|SCHEMA_ID\(", body, re.IGNORECASE):
            return self._catalog(body_upper, params)
        return self._shadow(body, params)

    # -- transactions --------------------------------------------------------
    def _savepoint(self, body: str):
        words = body.rstrip(";").split()
        name = words[-1] if len(words) > 2 else None
        shadow = self.conn.shadow
        if words[0].upper() == "BEGIN":
            if not shadow.in_transaction:
                self.conn._begin()
            else:
                self.conn.trancount += 1
        elif words[0].upper() == "SAVE":
            shadow.execute(f'SAVEPOINT "{name}"')
        elif name:
            shadow.execute(f'ROLLBACK TO SAVEPOINT "{name}"')
        return self._answer([])

    # -- catalog -------------------------------------------------------------
    def _describe(self, schema: str, table: str):
        """The table as the catalog of this alias's database shows it, or None."""
        conn = self.conn
        alias = conn.alias
        if alias in SOURCE_DATABASES:
            if schema.lower() not in {"dbo", "main"}:
                return None
            backend = SQLiteBackend(alias)
            backend.connection = conn.server.shadows[alias]
            try:
                return backend.describe("main", table)
            except Exception:
                return None
        # Archive database: archive_<alias>.<table> exists once provisioned.
        for source in SOURCE_DATABASES:
            if schema == namespace_for(source) and (source, table) in conn.server.provisioned:
                backend = SQLiteBackend(source)
                backend.connection = conn.server.shadows[source]
                return backend.describe("main", table)
        return None

    def _catalog(self, body_upper: str, params: tuple):
        if "SYS.DM_HADR_DATABASE_REPLICA_STATES" in body_upper:
            # A secondary that is caught up: no lag, empty queues (KB).
            return self._answer([(0, 0, 0, "SYNCHRONIZED")], ["lag", "send", "redo", "state"])
        if "FROM SYS.SCHEMAS WHERE NAME" in body_upper:
            (schema,) = params[:1]
            exists = self.conn.alias not in SOURCE_DATABASES and schema in {
                namespace_for(s) for s in SOURCE_DATABASES
            } | {"dbo", "archival"}
            exists = exists or (self.conn.alias in SOURCE_DATABASES and schema == "dbo")
            return self._answer([(1,)] if exists else [])
        if "INFORMATION_SCHEMA.TABLES" in body_upper:
            schema, table = params[:2]
            return self._answer([(1,)] if self._describe(schema, table) else [])
        if "SYS.PARTITIONS" in body_upper:
            schema, table = params[:2]
            info = self._describe(schema, table)
            return self._answer([(self._count(schema, table) if info else None,)])
        if "SYS.FOREIGN_KEYS" in body_upper and "REFERENCED_OBJECT_ID = OBJECT_ID" in body_upper:
            schema, table = params[:2]
            found = []
            if self.conn.alias in SOURCE_DATABASES:
                backend = SQLiteBackend(self.conn.alias)
                backend.connection = self.conn.server.shadows[self.conn.alias]
                found = [tuple(r) for r in backend.referencing("main", table)]
            return self._answer(found, ["t", "c", "r"])
        if "FROM SYS.COLUMNS" in body_upper and "SYS.TYPES" in body_upper:
            schema, table = params[:2]
            info = self._describe(schema, table)
            if info is None:
                return self._answer([], ["n", "t", "l", "p", "s", "nl"])
            rows = []
            for col in info.columns:
                typ = _sql_server_type(col)
                m = re.match(r"(\w+)(?:\((\w+)(?:,(\d+))?\))?", typ)
                name = m.group(1)
                length = -1 if m.group(2) == "max" else int(m.group(2) or 0)
                if name in {"nvarchar", "nchar"} and length > 0:
                    length *= 2
                precision = int(m.group(2)) if name == "decimal" else 0
                scale = int(m.group(3) or 0) if name == "decimal" else (6 if name == "datetime2" else 0)
                rows.append((col.name, name, length, precision, scale, 1 if col.nullable else 0))
            if self.conn.alias not in SOURCE_DATABASES:
                rows += [
                    ("archived_at", "datetime2", 8, 0, 6, 0),
                    ("archive_run_id", "bigint", 8, 19, 0, 0),
                    ("reference_date", "date", 3, 0, 0, 1),
                    ("retention_until", "date", 3, 0, 0, 1),
                ]
            return self._answer(rows, ["n", "t", "l", "p", "s", "nl"])
        if "COLLATION_NAME" in body_upper and "OBJECT_ID(QUOTENAME" in body_upper:
            # The demo databases' default collation for every text column.
            schema, table = params[:2]
            info = self._describe(schema, table)
            text = [c.name for c in (info.columns if info else []) if c.generic == "text"]
            return self._answer([(c, "SQL_Latin1_General_CP1_CI_AS") for c in text], ["n", "c"])
        if "IS_IDENTITY" in body_upper and "OBJECT_ID(QUOTENAME" in body_upper:
            # Identity and computed columns (a restore's INSERT list): the
            # demo tables (sql/00_demo_sources.sql) have neither.
            return self._answer([], ["n", "i", "c"])
        if "IS_PRIMARY_KEY = 1" in body_upper:
            schema, table = params[:2]
            info = self._describe(schema, table)
            return self._answer([(c,) for c in (info.primary_key if info else [])], ["n"])
        if "SYS.FOREIGN_KEYS" in body_upper:
            schema, table = params[:2]
            info = self._describe(schema, table)
            fks = [(f.column, f.ref_table, f.ref_column) for f in (info.foreign_keys if info else [])]
            return self._answer(fks if self.conn.alias in SOURCE_DATABASES else [], ["c", "t", "r"])
        raise AssertionError(f"the stand-in has no answer for this catalog query: {body_upper[:300]}")

    def _count(self, schema: str, table: str) -> int:
        shadow = self.conn.shadow
        return (
            shadow.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
            if self.conn.alias in SOURCE_DATABASES
            else 0
        )

    # -- procedures ----------------------------------------------------------
    def _procedure(self, name: str, params: tuple):
        if name == "archival.usp_lock_holds":
            return self._answer([])
        server = self.conn.server
        if self.conn.alias != "archive":
            raise AssertionError(f"{name} called through {self.conn.alias}")
        # Inputs by name, in the order the batch names them (@name = ?).
        names = re.findall(r"@(\w+)\s*=\s*\?", self._last_sql)
        args = dict(zip(names, params, strict=False))
        alias, table = args.get("source_alias"), args.get("table_name")
        # The registry (archival.archive_table) is keyed by the Django alias the
        # DBA provisioned with (usp_provision_table @source_alias).
        if (alias, table) not in server.provisioned:
            raise pyodbc.ProgrammingError(
                "42000",
                f"[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]archival: "
                f"{alias}.{args.get('schema_name')}.{table} is not provisioned (50201) (SQLExecDirectW)",
            )
        config = server.configs[(alias, table)]
        info = SQLiteBackend(alias)
        info.connection = server.shadows[alias]
        pk = info.describe("main", table).primary_key
        ref = config.date_column or None
        if name == "archival.usp_mark_table":
            eligible, low, high = self._eligible(alias, table, pk, ref, args["threshold"])
            return self._answer([(eligible, 0, low, high)], ["a", "b", "c", "d"])
        if name == "archival.usp_archive_batch":
            return self._archive(
                alias, table, pk, ref, args["run_id"], args["config_id"], args["threshold"],
                args["years_retention"], args["batch_size"], args["batch_no"],
            )  # fmt: skip
        if name == "archival.usp_dispose_batch":
            return self._dispose(alias, table, pk, args["as_of"], args["batch_size"])
        if name == "archival.usp_restore_batch":
            return self._restore(alias, table, pk, args)
        if name == "archival.usp_restore_compare":
            conflicts, identical, _ = self._compare_with_source(alias, table, pk, json.loads(args["selection"]), None)
            return self._answer([(len(conflicts), len(identical))], ["a", "b"])
        raise AssertionError(f"the stand-in does not know {name}")

    # -- restore (usp_restore_batch, usp_restore_compare) ---------------------
    def _pk(self, alias: str, table: str) -> list[str]:
        info = SQLiteBackend(alias)
        info.connection = self.conn.server.shadows[alias]
        return info.describe("main", table).primary_key

    def _selection(self, alias: str, table: str, selection: dict, a: str = "a", depth: int = 0) -> tuple[str, list]:
        """The selection's predicate on the archive row ``a`` (usp_build_restore_selection's kinds), in SQLite."""
        ns, kind = namespace_for(alias), selection["kind"]
        pk = self._pk(alias, table)
        cols = ", ".join(f'{a}."{k}"' for k in pk)
        if kind == "KEY_RANGE":
            parts, params = [], []
            for end, op in (("key_low", ">="), ("key_high", "<=")):
                if selection.get(end) is not None:
                    parts.append(f"({cols}) {op} ({', '.join('?' for _ in pk)})")
                    params += list(selection[end])
            return " AND ".join(parts) or "1 = 1", params
        if kind == "RUN":
            return f'{a}."archive_run_id" = ?', [selection["archive_run_id"]]
        if kind == "DATE_RANGE":
            return (
                f'{a}."reference_date" IS NOT NULL AND (? IS NULL OR {a}."reference_date" >= ?) '
                f'AND (? IS NULL OR {a}."reference_date" <= ?)',
                [selection["date_from"]] * 2 + [selection["date_to"]] * 2,
            )
        if kind == "CONTRACT":
            return f'CAST({a}."{selection["column"]}" AS TEXT) = ?', [selection["value"]]
        if kind == "KEYS":
            text = " || char(9) || ".join(f'CAST({a}."{k}" AS TEXT)' for k in pk)
            return (
                f"EXISTS (SELECT 1 FROM governance_restorekey AS rk WHERE rk.request_id = ? AND rk.key_text = {text})",
                [selection["request_id"]],
            )
        if kind == "REFERENCED":
            r = f"r{depth + 1}"
            inner, params = self._selection(alias, selection["child_table"], selection["child"], r, depth + 1)
            return (
                f'EXISTS (SELECT 1 FROM "{ns}"."{selection["child_table"]}" AS {r} '
                f'WHERE {r}."{selection["ref_column"]}" = {a}."{selection["key_column"]}" AND ({inner}))',
                params,
            )
        raise AssertionError(f"the stand-in does not know selection kind {kind!r}")

    def _compare_with_source(self, alias, table, pk, selection, picked):
        """(conflicting keys, identical keys, columns) among the selected (or ``picked``) archive rows."""
        arc = self.conn.shadow
        ns = namespace_for(alias)
        cols = [r[1] for r in arc.execute(f'PRAGMA "src_{alias}".table_info("{table}")')]
        if picked is None:
            where, params = self._selection(alias, table, selection)
            keys = ", ".join(f'a."{k}"' for k in pk)
            picked = arc.execute(f'SELECT {keys} FROM "{ns}"."{table}" AS a WHERE {where}', params).fetchall()
        match = " AND ".join(f'"{k}" = ?' for k in pk)
        collist = ", ".join(f'"{c}"' for c in cols)
        conflicts, identical = [], []
        for key in picked:
            there = arc.execute(f'SELECT {collist} FROM "src_{alias}"."{table}" WHERE {match}', list(key)).fetchone()
            if there is None:
                continue
            archived = arc.execute(f'SELECT {collist} FROM "{ns}"."{table}" WHERE {match}', list(key)).fetchone()
            (identical if tuple(there) == tuple(archived) else conflicts).append(key)
        return conflicts, identical, cols

    def _restore(self, alias, table, pk, args):
        """The next batch of selected archive rows back into the source, with RestoredKey and ledger rows."""
        arc = self.conn.shadow
        ns = namespace_for(alias)
        selection = json.loads(args["selection"])
        where, params = self._selection(alias, table, selection)
        keys = ", ".join(f'a."{k}"' for k in pk)
        if args.get("key_after"):
            where += f" AND ({keys}) > ({', '.join('?' for _ in pk)})"
            params += json.loads(args["key_after"])
        picked = arc.execute(
            f'SELECT {keys} FROM "{ns}"."{table}" AS a WHERE {where} ORDER BY {keys} LIMIT ?',
            [*params, args["batch_size"]],
        ).fetchall()
        if not picked:
            return self._answer([(0, 0, 0, 0, None)], ["a", "b", "c", "d", "e"])
        conflicts, identical, cols = self._compare_with_source(alias, table, pk, selection, picked)
        if conflicts:
            raise pyodbc.ProgrammingError(
                "42000",
                f"[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Restore of {alias}.dbo.{table} stops: "
                f"the source already has key {json.dumps([str(v) for v in conflicts[0]])} with other values "
                f"({len(conflicts)} such row(s) in this batch); nothing is overwritten and nothing of the batch "
                "moved. (50804) (SQLExecDirectW)",
            )
        held = arc.execute(
            "SELECT COUNT(*) FROM governance_hold WHERE released_at IS NULL AND (scope = 'ALL' OR "
            "(scope = 'TABLE' AND source_db = ? AND table_name = ?))",
            [alias, table],
        ).fetchone()[0]
        match = " AND ".join(f'"{k}" = ?' for k in pk)
        collist = ", ".join(f'"{c}"' for c in cols)
        now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
        own = not arc.in_transaction
        if own:
            arc.execute("BEGIN")
        for key in picked:
            if key not in identical:
                arc.execute(
                    f'INSERT INTO "src_{alias}"."{table}" ({collist}) SELECT {collist} FROM "{ns}"."{table}" '
                    f"WHERE {match}",
                    list(key),
                )
            arc.execute(
                "INSERT INTO governance_restoredkey (request_id, config_id, batch_no, key_text) VALUES (?, ?, ?, ?)",
                [args["request_id"], args["config_id"], args["batch_no"], "\t".join(str(v) for v in key)],
            )
            arc.execute(f'DELETE FROM "{ns}"."{table}" WHERE {match}', list(key))
        high = json.dumps([str(v) for v in picked[-1]])
        restored = len(picked) - len(identical)
        arc.execute(
            "INSERT INTO governance_restoreledger (request_id, config_id, table_label, batch_no, key_low, key_high, "
            "row_count, skipped_identical, deleted_count, held_count, state, committed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                args["request_id"], args["config_id"], f"{alias}.dbo.{table}", args["batch_no"], args["key_after"],
                high, restored, len(identical), len(picked), len(picked) if held else 0, "MOVED", now,
            ],
        )  # fmt: skip
        if own:
            arc.execute("COMMIT")
        return self._answer(
            [(restored, len(identical), len(picked), len(picked) if held else 0, high)], ["a", "b", "c", "d", "e"]
        )

    def _child_guard(self, alias: str, table: str, src_prefix: str = "") -> str:
        """NOT EXISTS per foreign-key child: usp_build_sql's guard (a parent waits for its children)."""
        src = self.conn.server.shadows[alias].connection
        guards = []
        tables = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for child in tables:
            for fk in src.execute(f'PRAGMA foreign_key_list("{child}")').fetchall():
                if fk[2] == table:
                    guards.append(
                        f' AND NOT EXISTS (SELECT 1 FROM {src_prefix}"{child}" AS ch'
                        f' WHERE ch."{fk[3]}" = "{table}"."{fk[4]}")'
                    )
        return "".join(guards)

    def _eligible(self, alias, table, pk, ref, threshold):
        src = self.conn.server.shadows[alias].connection
        where, args = ("1 = 1", []) if not ref else (f'"{ref}" < ?', [str(threshold)])
        where += self._child_guard(alias, table)
        keys = ", ".join(f'"{k}"' for k in pk)
        rows = src.execute(f'SELECT {keys} FROM "{table}" WHERE {where} ORDER BY {keys}', args).fetchall()
        if not rows:
            return 0, None, None
        return len(rows), json.dumps([str(v) for v in rows[0]]), json.dumps([str(v) for v in rows[-1]])

    def _archive(self, alias, table, pk, ref, run_id, config_id, threshold, years, batch_size, batch_no):
        """Move the next batch: copy into the archive namespace, delete from the source, one ledger row."""
        arc = self.conn.shadow
        ns = namespace_for(alias)
        src = f'"src_{alias}"."{table}"'
        where, args = ("1 = 1", []) if not ref else (f'"{ref}" < ?', [str(threshold)])
        where += self._child_guard(alias, table, f'"src_{alias}".')
        keys = ", ".join(f'"{k}"' for k in pk)
        picked = arc.execute(
            f"SELECT {keys} FROM {src} WHERE {where} ORDER BY {keys} LIMIT ?", [*args, batch_size]
        ).fetchall()
        if not picked:
            return self._answer([(0, 0, None)], ["a", "b", "c"])
        cols = [r[1] for r in arc.execute(f'PRAGMA "src_{alias}".table_info("{table}")')]
        collist = ", ".join(f'"{c}"' for c in cols)
        match = " AND ".join(f'"{k}" = ?' for k in pk)
        now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
        ref_expr = f'"{ref}"' if ref else "NULL"
        own = not arc.in_transaction
        if own:
            arc.execute("BEGIN")
        try:
            self._move(arc, picked, ns, table, src, collist, ref_expr, match, now, run_id, years)
        except sqlite3.IntegrityError as exc:
            # A child row still references a picked key: the procedure's DELETE
            # fails with 547 and XACT_ABORT rolls the batch back.
            if own:
                arc.execute("ROLLBACK")
            raise pyodbc.IntegrityError(
                "23000",
                "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The DELETE statement conflicted with "
                f"the REFERENCE constraint on {alias}.dbo.{table}. (547) (SQLExecDirectW)",
            ) from exc
        self._ledger_row(arc, alias, table, picked, run_id, config_id, batch_no, now)
        if own:
            arc.execute("COMMIT")
        done = len(picked) < batch_size
        high = json.dumps([str(v) for v in picked[-1]])
        return self._answer([(len(picked), 0, None if done else high)], ["a", "b", "c"])

    @staticmethod
    def _move(arc, picked, ns, table, src, collist, ref_expr, match, now, run_id, years):
        for key in picked:
            arc.execute(
                f'INSERT INTO "{ns}"."{table}" ({collist}, "archived_at", "archive_run_id", "reference_date", '
                f'"retention_until") SELECT {collist}, ?, ?, {ref_expr}, date({ref_expr}, ?) FROM {src} WHERE {match}',
                [now, run_id, f"+{years} years", *key],
            )
            arc.execute(f"DELETE FROM {src} WHERE {match}", list(key))

    @staticmethod
    def _ledger_row(arc, alias, table, picked, run_id, config_id, batch_no, now):
        low, high = json.dumps([str(v) for v in picked[0]]), json.dumps([str(v) for v in picked[-1]])
        arc.execute(
            "INSERT INTO governance_batchledger (run_id, config_id, table_label, batch_no, key_low, key_high, "
            "row_count, deleted_count, state, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, config_id, f"{alias}.dbo.{table}", batch_no, low, high, len(picked), len(picked), "MOVED", now],
        )

    def _dispose(self, alias, table, pk, as_of, batch_size):
        arc = self.conn.shadow
        # The hold re-check, for the scopes that cover a whole table (the
        # others are not modelled here: the capture places a table hold).
        held = arc.execute(
            "SELECT COUNT(*) FROM governance_hold WHERE released_at IS NULL AND (scope = 'ALL' OR "
            "(scope = 'TABLE' AND source_db = ? AND table_name = ?))",
            [alias, table],
        ).fetchone()[0]
        if held:
            count = arc.execute(f'SELECT COUNT(*) FROM "{namespace_for(alias)}"."{table}"').fetchone()[0]
            return self._answer([(0, count, None)], ["a", "b", "c"])
        ns = namespace_for(alias)
        keys = ", ".join(f'"{k}"' for k in pk)
        picked = arc.execute(
            f'SELECT {keys} FROM "{ns}"."{table}" WHERE "retention_until" < ? ORDER BY {keys} LIMIT ?',
            [str(as_of), batch_size],
        ).fetchall()
        match = " AND ".join(f'"{k}" = ?' for k in pk)
        for key in picked:
            arc.execute(f'DELETE FROM "{ns}"."{table}" WHERE {match}', list(key))
        high = json.dumps([str(v) for v in picked[-1]]) if len(picked) == batch_size else None
        return self._answer([(len(picked), 0, high)], ["a", "b", "c"])

    # -- everything else: translated to SQLite, run on the alias's test database
    def _shadow(self, body: str, params: tuple):
        shadow = self.conn.shadow
        named = _inline_declared_parameters(qmark_to_named(body))
        # A source table named by three parts from the archive database
        # ([Sales].[dbo].[Position]) is the source's database attached to the
        # archive's SQLite connection (src_<alias>). Plumbing: whether the
        # login may read it is the permission contract's question.
        for source_alias, database in SOURCE_DATABASES.items():
            named = re.sub(rf"\[{database}\]\.\[dbo\]\.", f"[src_{source_alias}].", named, flags=re.IGNORECASE)
        # OUTPUT inserted.c / deleted.c (no INTO) returns rows like SQLite's RETURNING.
        returning = ""
        output = _OUTPUT.search(named)
        if output:
            returning = " RETURNING " + ", ".join(
                '"' + _name_of(c.split(".", 1)[1]) + '"' for c in output.group(1).split(",")
            )
            named = named[: output.start()] + " " + named[output.end() :]
        try:
            translated = sqlglot.transpile(named, read="tsql", write="sqlite")
        except sqlglot.errors.ParseError as exc:
            raise AssertionError(f"sqlglot cannot translate {body[:300]!r}: {exc}") from exc
        for m in re.finditer(r"\bTOP\s*\(\s*@P(\d+)\s*\)", named, re.IGNORECASE):
            value = params[int(m.group(1)) - 1]
            if isinstance(value, bool) or not re.fullmatch(r"\s*[+-]?\d+\s*", str(value)):
                # TOP takes a bigint; a parameter that does not convert fails the batch.
                raise pyodbc.DataError(
                    "22018",
                    "[22018] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Error converting data type "
                    f"nvarchar to bigint (TOP (@P{m.group(1)}) = {value!r}). (8114) (SQLExecDirectW)",
                )
        values = {f"P{n}": _sqlite_value(v) for n, v in enumerate(params, start=1)}
        rows, columns, rowcount, last_count = [], None, -1, 0
        for sql in translated:
            sql = re.sub(r"\(MAX\)", "", re.sub(r"\bN'", "'", sql), flags=re.IGNORECASE)
            if re.match(r"(?i)^\s*SELECT\s+CAST\(SCOPE_IDENTITY\(\)", sql):
                rows, columns = [(shadow.execute("SELECT last_insert_rowid()").fetchone()[0],)], ["id"]
                continue
            if re.match(r"(?i)^\s*SELECT\s+@@ROWCOUNT\s*;?\s*$", sql):
                # @@ROWCOUNT is the last statement's count whatever NOCOUNT says.
                rows, columns = [(last_count,)], ["rowcount"]
                continue
            if returning and _DML.match(sql):
                sql += returning
            try:
                cur = shadow.execute(sql, {k: v for k, v in values.items() if f"@{k}" in sql})
            except sqlite3.Error as exc:
                raise AssertionError(f"SQLite refused ({exc}) the translation {sql[-700:]!r}") from exc
            if cur.description:
                rows, columns = cur.fetchall(), [d[0] for d in cur.description]
            if _DML.match(sql):
                last_count = cur.rowcount if not cur.description else len(rows)
                rowcount = -1 if self.conn.nocount else last_count
        return self._answer(rows, columns, rowcount)


_DECLARED = re.compile(r"^\s*DECLARE\s+((?:@var\d+\s+[\w]+(?:\(\w+\))?\s*=\s*@P\d+\s*,?\s*)+)", re.IGNORECASE)


def _inline_declared_parameters(sql: str) -> str:
    """mssql-django declares a variable per repeated parameter (``DECLARE @var0 INT = @P1, ...``
    before a grouped SELECT); SQLite has no variables, so each is read as the parameter it holds."""
    declared = _DECLARED.match(sql)
    if not declared:
        return sql
    body = sql[declared.end() :]
    for var, param in re.findall(r"(@var\d+)\s+[\w]+(?:\(\w+\))?\s*=\s*(@P\d+)", declared.group(1)):
        body = re.sub(re.escape(var) + r"\b", param, body)
    return body


def _sql_server_type(col) -> str:
    """How sql/00_demo_sources.sql declares a demo column of this family on SQL Server."""
    if col.generic == "decimal":
        precision, scale = col.size
        return f"decimal({precision or 18},{scale or 0})"
    if col.generic == "text":
        length = col.size[0]
        return f"nvarchar({length})" if length and length <= 4000 else "nvarchar(max)"
    return {"int": "int", "bigint": "bigint", "float": "float", "bool": "bit", "date": "date",
            "datetime": "datetime2(6)", "binary": "varbinary(max)"}[col.generic]  # fmt: skip


_OUTPUT = re.compile(
    r"\bOUTPUT\s+((?:(?:inserted|deleted)\.(?:\[[^\]]+\]|\w+)\s*,\s*)*(?:inserted|deleted)\.(?:\[[^\]]+\]|\w+))(?!\s+INTO)",
    re.IGNORECASE,
)


def _name_of(raw: str) -> str:
    raw = raw.strip()
    return raw[1:-1].replace("]]", "]") if raw.startswith("[") else raw


def _sqlite_value(value):
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


PRINT_DATABASES = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({a: {k: s.DATABASES[a][k] for k in ('ENGINE', 'NAME', 'USER', 'HOST', 'PORT', 'OPTIONS')} "
    "for a in s.DATABASES}, default=str))"
)


def production_settings(tmp_dir) -> dict:
    """DATABASES as governance.settings builds them from the deployment's mssql:// URLs (docs/sqlserver.md)."""
    base = Path(__file__).resolve().parent.parent
    url = "mssql://{login}:secret@sql01.corp:1433/{db}"
    env = {
        **os.environ,
        "ARCHIVAL_DATA_DIR": str(tmp_dir),
        "DJANGO_SETTINGS_MODULE": "governance.settings",
        "DATABASE_URL": url.format(login=APP_LOGIN, db=CONTROL_DB),
        "ARCHIVE_DATABASE_URL": url.format(login=APP_LOGIN, db=ARCHIVE_DB),
        "ARCHIVE_READONLY_DATABASE_URL": url.format(login=READER_LOGIN, db=ARCHIVE_DB),
        **{f"{a.upper()}_DATABASE_URL": url.format(login=APP_LOGIN, db=db) for a, db in SOURCE_DATABASES.items()},
    }
    out = subprocess.run(
        [sys.executable, "-c", PRINT_DATABASES], cwd=base, env=env, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def install(server: Server, production: dict, aliases=tuple(DATABASES)) -> dict:
    """Serve ``aliases`` with mssql-django over the stand-in; returns what to put back."""
    from mssql.base import DatabaseWrapper

    replaced = {}
    for alias in aliases:
        database = DATABASES[alias]
        prod = production[alias]
        assert (prod["ENGINE"], prod["NAME"], prod["USER"]) == ("mssql", database, LOGINS[alias]), prod
        settings_dict = {
            **connections[alias].settings_dict,
            **prod,
            "PASSWORD": "secret",
            "TEST": {},
        }
        wrapper = DatabaseWrapper(settings_dict, alias)
        wrapper.get_new_connection = lambda params, alias=alias: server.connect(alias)
        replaced[alias] = (connections[alias], settings.DATABASES[alias])
        connections[alias] = wrapper
        # Code that reads the settings (not the connection) sees production's too.
        settings.DATABASES[alias] = wrapper.settings_dict
    return replaced


def uninstall(replaced: dict) -> None:
    for alias, (original, configured) in replaced.items():
        try:
            connections[alias].close()
        except Exception:
            pass
        connections[alias] = original
        settings.DATABASES[alias] = configured
