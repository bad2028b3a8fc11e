"""MSSQLBackend: catalog reads, SQL fragments and the typed procedure calls."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import Error, transaction
from django.utils import timezone

from archival.backends.base import (
    DATE_FAMILIES,
    ArchiveIndex,
    Backend,
    BatchResult,
    Column,
    DisposedRange,
    ForeignKey,
    InsertTarget,
    MarkResult,
    NotOnThisEngine,
    ReplicaLag,
    RestoreBatchCounts,
    SchemaError,
    TableInfo,
    generic_type,
)
from archival.backends.mssql import templates
from archival.backends.mssql.procedures import (
    MAX_BATCH_SIZE,
    DisposeResult,
    ProcedureCallError,
    call_procedure,
    decode_key,
    encode_key,
    encode_selection,
)
from archival.backends.mssql.sqltypes import (
    _NSIZED,
    _ROWVERSION,
    _SIZED,
    MAX_NAME_LENGTH,
    NOT_KEY_TYPES,
    mssql_type_for,
    quote,
    type_sql,
)
from archival.backends.mssql.templates import (
    archive_schema_for,
    procedure_table_for,
    provision_call,
    provisioned_object_names,
    source_column_kinds,
)
from archival.disposal.tables import DisposalError
from archival.restore.errors import RestoreConflict, RestoreReconcileError
from archival.retry import is_transient, is_unreachable, retry_transient

# Calls of archival.usp_restore_batch per batch when SQL Server rolls it back
# as a deadlock victim (1205) or on a lock time-out (1222): the whole batch
# was undone, so it is simply called again (archival.retry).
RESTORE_BATCH_ATTEMPTS = 3

# Engine-neutral families of the types generic_type does not know: the CLR
# types and rowversion reach Python as bytes.
_GENERIC = {"rowversion": "binary", "hierarchyid": "binary", "geography": "binary", "geometry": "binary"}


class MSSQLBackend(Backend):
    vendor = "microsoft"
    quote_char = "]"

    def quote(self, name: str) -> str:
        return quote(name)

    # Archive tables come from archival_admin.usp_provision_table (run by a
    # DBA, sql/06_provisioning.sql): the application login has no DDL right.
    creates_archive_tables = False
    # The procedures refuse larger batches (lock escalation at about 5,000 locks).
    max_batch_size = MAX_BATCH_SIZE

    @property
    def default_batch_size(self) -> int:
        return settings.ARCHIVAL["MSSQL_BATCH_SIZE"]

    def provisioning_hint(self, config) -> str:
        return f"run {provision_call(procedure_table_for(config))}"

    def execute_counted(self, cursor, sql: str, params) -> int:
        # cursor.rowcount is -1 under SET NOCOUNT ON, which mssql-django sends
        # in front of every ORM insert that returns its id and never switches
        # off; @@ROWCOUNT, read in the same batch right after the statement,
        # is not affected by NOCOUNT. Nothing here changes a session setting.
        cursor.execute(f"{sql}; SELECT @@ROWCOUNT", params)
        # With NOCOUNT OFF the statement's own count (and any a trigger
        # reports) comes first, as results without columns: skip to the SELECT.
        while cursor.description is None:
            if not cursor.nextset():
                raise SchemaError("SELECT @@ROWCOUNT returned no result")
        return int(cursor.fetchone()[0])

    # -- catalog -------------------------------------------------------------
    def schema_exists(self, schema: str) -> bool:
        return self._exists("SELECT 1 FROM sys.schemas WHERE name = %s", [schema])

    def table_exists(self, schema: str, table: str) -> bool:
        return self._exists(
            "SELECT 1 FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND TABLE_TYPE = 'BASE TABLE'",
            [schema, table],
        )

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # Row counts the storage engine keeps per partition (heap or clustered index).
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT SUM(p.rows) FROM sys.partitions AS p "
                "WHERE p.object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s)) AND p.index_id IN (0, 1)",
                [schema, table],
            )
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def describe(self, schema: str, table: str) -> TableInfo:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT c.name, t.name, c.max_length, c.[precision], c.scale, c.is_nullable
                FROM sys.columns AS c
                INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
                INNER JOIN sys.tables AS tb ON tb.object_id = c.object_id
                WHERE tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                ORDER BY c.column_id
                """,
                [schema, table],
            )
            rows = cur.fetchall()
            if not rows:
                raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
            columns = []
            for name, tname, max_length, precision, scale, nullable in rows:
                # rowversion as itself (sys.types says timestamp): the archive
                # declares it binary(8) (archive_type).
                declared = (
                    "rowversion" if tname in _ROWVERSION else type_sql(tname, max_length, precision, scale) or tname
                )
                if tname in _SIZED or tname in _NSIZED:
                    size = (None if max_length == -1 else (max_length // 2 if tname in _NSIZED else max_length), None)
                else:
                    size = (precision or None, scale) if tname in {"decimal", "numeric"} else (None, None)
                generic = _GENERIC.get(declared) or generic_type(declared)
                columns.append(Column(name, declared, generic, bool(nullable), size))
            cur.execute(
                """
                SELECT c.name
                FROM sys.indexes AS i
                INNER JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
                INNER JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
                INNER JOIN sys.tables AS tb ON tb.object_id = i.object_id
                WHERE i.is_primary_key = 1 AND tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                ORDER BY ic.key_ordinal
                """,
                [schema, table],
            )
            pk = [r[0] for r in cur.fetchall()]
            cur.execute(
                """
                SELECT pc.name, rt.name, rc.name
                FROM sys.foreign_keys AS fk
                INNER JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
                INNER JOIN sys.tables AS tb ON tb.object_id = fk.parent_object_id
                INNER JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
                INNER JOIN sys.tables AS rt ON rt.object_id = fk.referenced_object_id
                INNER JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
                WHERE tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                    AND (SELECT COUNT(*) FROM sys.foreign_key_columns AS x WHERE x.constraint_object_id = fk.object_id) = 1
                """,
                [schema, table],
            )
            fks = [ForeignKey(*r) for r in cur.fetchall()]
        return TableInfo(schema, table, columns, pk, fks)

    def insertable_columns(self, schema: str, table: str) -> InsertTarget:
        # Computed columns and rowversion (sys.types: timestamp) cannot be
        # inserted into: the source derives them again. An identity column is
        # written with its archived value under SET IDENTITY_INSERT, which
        # archival.usp_restore_batch sets around its INSERT (no clause here).
        info = self.describe(schema, table)
        _, computed = source_column_kinds(self, schema, table)
        derived = [c.name for c in info.columns if c.name in computed or c.db_type in _ROWVERSION]
        return InsertTarget(
            columns=[c for c in info.column_names if c not in derived], overriding="", derived=tuple(derived)
        )

    def restore_source_counts(self, *, config, selection: dict) -> tuple[int, int]:
        """(conflicting, identical) selected archive rows whose key is in the source (``archival.usp_restore_compare``).

        The preview's comparison with the source on SQL Server: the runtime
        login reads no source table, the signed procedure does. Conflicting:
        the source row has other values in the columns a restore writes;
        identical: it has the same (the batch skips it).
        """
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_restore_compare",
                source_alias=config.source_db, schema_name=config.schema_name, table_name=config.table_name,
                selection=encode_selection(selection), lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS,
            )  # fmt: skip
        return int(out["conflicts"] or 0), int(out["identical"] or 0)

    # -- SQL fragments -------------------------------------------------------
    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT OBJECT_NAME(fk.parent_object_id), pc.name, rc.name
                FROM sys.foreign_keys fk
                JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id
                JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
                JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
                WHERE fk.referenced_object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s))
                  AND (SELECT COUNT(*) FROM sys.foreign_key_columns x WHERE x.constraint_object_id = fk.object_id) = 1
                """,
                [schema, table],
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # DATEADD clamps 29 February + 1 year to 28 February by itself.
        return f"DATEADD(YEAR, %s, CAST({expr} AS date))"

    def readable_date_sql(self, expr: str, column: Column) -> str | None:
        if column.generic in DATE_FAMILIES:
            return None
        if column.generic != "text":
            return "(1 = 0)"
        # TRY_CONVERT returns NULL instead of raising for 2021-02-30; style
        # 23 reads yyyy-mm-dd whatever the session's DATEFORMAT or language
        # (learn.microsoft.com/en-us/sql/t-sql/functions/try-convert-transact-sql).
        # The LIKE keeps out what style 23 would still read ('2021-1-1 ...').
        return (
            f"(CASE WHEN SUBSTRING({expr}, 1, 10) LIKE '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]' "
            f"AND TRY_CONVERT(date, SUBSTRING({expr}, 1, 10), 23) IS NOT NULL THEN 1 ELSE 0 END = 1)"
        )

    def date_value_sql(self, expr: str, column: Column) -> str:
        if column.generic in DATE_FAMILIES:
            return expr
        return f"TRY_CONVERT(date, SUBSTRING({expr}, 1, 10), 23)"

    def date_before_sql(self, expr: str, column: Column) -> str:
        # T-SQL has no boolean values: no CASE yielding a comparison.
        check = self.readable_date_sql(expr, column)
        if check is None:
            return f"({expr} IS NOT NULL AND {expr} < %s)"
        return f"(CASE WHEN {check} AND {self.date_value_sql(expr, column)} < %s THEN 1 ELSE 0 END = 1)"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"EXISTS (SELECT {left} INTERSECT SELECT {right})"

    def limit_sql(self, select_sql: str, limit_param: str) -> str:
        # OFFSET ... FETCH at the end, not TOP at the front: the limit is the
        # statement's last parameter on every engine, so the parameters keep
        # their order. FETCH needs an ORDER BY of the statement itself.
        if not select_sql.lstrip().upper().startswith("SELECT "):
            raise SchemaError("limit_sql expects a SELECT statement")
        order = "" if _ends_with_order_by(select_sql) else " ORDER BY (SELECT NULL)"
        return f"{select_sql.rstrip()}{order} OFFSET 0 ROWS FETCH NEXT {limit_param} ROWS ONLY"

    def type_for_generic(self, col: Column) -> str:
        return mssql_type_for(col)

    def archive_type(self, col: Column, source: Backend) -> str:
        if self.same_engine(source) and col.db_type in _ROWVERSION:
            return "binary(8)"  # a rowversion column cannot be inserted into
        return super().archive_type(col, source)

    # -- config checks ---------------------------------------------------------
    def key_column_error(self, col: Column) -> str | None:
        if col.db_type in NOT_KEY_TYPES:
            return (
                f"Key column {col.name!r} is {col.db_type}: keyset batches on SQL Server cannot use it "
                "(it does not convert to text and back, or does not order)."
            )
        return None

    def name_errors(self, config, info: TableInfo) -> dict[str, str]:
        schema = archive_schema_for(config.source_db)
        errors: dict[str, str] = {}
        if len(schema) > MAX_NAME_LENGTH:
            errors["source_db"] = f"The archive schema {schema[:40]}... would be {len(schema)} characters long."
        too_long = [
            n
            for n in (config.table_name, *provisioned_object_names(schema, config.table_name))
            if len(n) > MAX_NAME_LENGTH
        ]
        if too_long:
            errors["table_name"] = (
                f"Provisioning this table would name {too_long[0][:40]}... ({len(too_long[0])} characters)."
            )
        long_columns = [c.name for c in info.columns if len(c.name) > MAX_NAME_LENGTH]
        if long_columns:
            errors["__all__"] = f"Column {long_columns[0][:40]}... is {len(long_columns[0])} characters long."
        suffix = f" SQL Server names are at most {MAX_NAME_LENGTH} characters (QUOTENAME returns NULL above that)."
        return {field: message + suffix for field, message in errors.items()}

    def timestamp_type(self) -> str:
        return "datetimeoffset(6)"

    def create_namespace(self, namespace: str) -> None:
        # Archive schemas are created by sql/02_archive_schemas.sql (DBA), not
        # by the runtime login, which has no CREATE SCHEMA right.
        if not self.schema_exists(namespace):
            raise SchemaError(f"archive schema {namespace} is missing: run sql/02_archive_schemas.sql")

    # -- engines and connections ---------------------------------------------
    def same_server(self, archive: Backend) -> bool:
        # One transaction spans the databases of one instance.
        return self.same_engine(archive) and self._same_host(archive)

    def source_table_sql(self, source: Backend, source_db: str, schema: str, table: str) -> str:
        # Three-part name: the source's database on the archive's instance.
        return f"{self.quote(source.connection.settings_dict['NAME'])}.{self.qualified(schema, table)}"

    def param(self, value):
        return value

    def write_transaction(self) -> AbstractContextManager[None]:
        return transaction.atomic(using=self.alias)

    # -- moves ---------------------------------------------------------------
    def moves_through_procedures(self) -> bool:
        # archival.usp_archive_batch (sql/07_procedures.sql) moves a batch.
        return True

    def moves_in_one_statement(self) -> bool:
        return False

    def transactional_ddl(self) -> bool:
        return True

    def lock_hint(self) -> str:
        # T-SQL has no FOR UPDATE: update locks held to the end of the
        # transaction, and key-range locks (HOLDLOCK: serializable) so no row
        # enters the range read.
        return " WITH (UPDLOCK, HOLDLOCK)"

    def select_sql(
        self, columns: str, body: str, params: list, *, limit: int | None = None, lock_alias: str | None = None
    ) -> tuple[str, list]:
        # TOP comes before the column list, so its parameter comes first;
        # the lock is lock_hint's, in ``body``.
        if limit is None:
            return f"SELECT {columns} {body}", list(params)
        return f"SELECT TOP (%s) {columns} {body}", [limit, *params]

    def join_sql(self, left: str, right: str, condition: str, *, pin_left: bool) -> tuple[str, str]:
        return f"{left} JOIN {right} ON {condition}", ""

    def delete_sql(self, alias: str, from_sql: str) -> str:
        # DELETE names the alias when FROM aliases the table.
        return f"DELETE {alias} FROM {from_sql}"

    def delete_joins_contract(self) -> bool:
        return False

    def start_locking_read(self, cursor) -> None:
        # lock_hint's range locks keep the range as read.
        return None

    def insert_rows(self, table: str, columns: list[str], rows: list[list]) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        with self.connection.cursor() as cur:
            cur.executemany(sql, rows)

    # -- archive tables --------------------------------------------------------
    def namespace_missing(self, namespace: str, source_db: str) -> str:
        return f"archive schema {namespace} is missing: run sql/02_archive_schemas.sql"

    def archive_table_ddl(
        self, namespace: str, table: str, column_defs: list[str], indexes: list[ArchiveIndex]
    ) -> list[str]:
        return [
            f"CREATE TABLE {self.qualified(namespace, table)} ({', '.join(column_defs)})",
            *(self._create_index_sql(namespace, table, index) for index in indexes),
        ]

    def _create_index_sql(self, namespace: str, table: str, index: ArchiveIndex) -> str:
        columns = ", ".join(self.quote(c) for c in index.columns)
        return f"CREATE INDEX {self.quote(index.name)} ON {self.qualified(namespace, table)} ({columns})"

    def archive_indexes(self, namespace: str, table: str) -> list[ArchiveIndex]:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT i.name, i.is_primary_key, i.is_unique, i.is_unique_constraint, c.name
                FROM sys.indexes AS i
                JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
                JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
                WHERE i.object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s)) AND ic.key_ordinal > 0
                ORDER BY i.name, ic.key_ordinal
                """,
                [namespace, table],
            )
            rows = cur.fetchall()
        found: dict[str, tuple[bool, bool, bool, list[str]]] = {}
        for name, primary, unique, unique_constraint, column in rows:
            found.setdefault(name, (bool(primary), bool(unique), bool(primary or unique_constraint), []))[3].append(
                column
            )
        return [
            ArchiveIndex(name, tuple(cols), "btree", primary, unique, constraint)
            for name, (primary, unique, constraint, cols) in sorted(found.items())
        ]

    def reshape_archive_sql(
        self,
        namespace: str,
        table: str,
        *,
        drop: list[ArchiveIndex],
        create: list[ArchiveIndex],
        primary_key: tuple[ArchiveIndex, str] | None,
    ) -> list[str]:
        # For the DBA (the runtime login has no DDL right): run in one
        # transaction, where the key is replaced with no gap between.
        qualified = self.qualified(namespace, table)
        q = self.quote
        stmts = []
        if primary_key is not None:
            old, name = primary_key
            stmts += [
                f"ALTER TABLE {qualified} DROP CONSTRAINT {q(old.name)}",
                f"ALTER TABLE {qualified} ADD CONSTRAINT {q(name)} PRIMARY KEY CLUSTERED "
                f"({', '.join(q(c) for c in old.columns)})",
            ]
        stmts += [f"DROP INDEX {q(index.name)} ON {qualified}" for index in drop]
        stmts += [self._create_index_sql(namespace, table, index) for index in create]
        return stmts

    # sql/06_provisioning.sql: ix_<table>_<suffix>, suffix by role.
    provisioned_index_names = {"retention": "retention", "refdate": "reference", "contract": "contract", "run": "run"}
    provisioned_extra_indexes = (("run", ("archive_run_id",)),)

    def primary_key_note(self) -> str:
        return "the table is rebuilt as a clustered index on the key (a DBA's change: sql/06_provisioning.sql)"

    def add_column_sql(self, qualified_table: str, column_def: str) -> str:
        # T-SQL: ADD, without COLUMN.
        return f"ALTER TABLE {qualified_table} ADD {column_def}"

    # -- disposal --------------------------------------------------------------
    def key_text_sql(self, columns: list[tuple[str, str, int | None]]) -> tuple[str, list]:
        # The procedures' own form (archival.fn_key_text), so the plan, the
        # preview and the procedures' delete build one text. A decimal
        # prints with its column's scale already.

        parts = [templates.key_text_part(col, templates.TYPE_NAME_OF_GENERIC.get(g, g)) for col, g, _scale in columns]
        return templates.key_text_of_parts(parts), []

    def text_cast_sql(self, expr: str) -> str:
        return f"CAST({expr} AS nvarchar(max))"

    def refuse_delete_trigger_sql(self, table: str, name: str, message: str) -> list[str]:
        # sql/08_signing_and_grants.sql installs INSTEAD OF DELETE triggers on
        # the hold tables as the DBA; the migration's login may not own them.
        return []

    def drop_trigger_sql(self, table: str, name: str, table_exists: bool) -> list[str]:
        return []

    def draws_ids_under_head_lock(self) -> bool:
        return False

    # -- control-plane statements (governance.rowsql) ----------------------------
    def writes_returning(self) -> bool:
        # mssql-django inserts through its own OUTPUT/SCOPE_IDENTITY forms.
        return False

    def selects_updated_rows(self) -> bool:
        return False

    # -- search ----------------------------------------------------------------
    def table_names(self, schema: str) -> set[str]:
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
                [schema],
            )
            return {row[0] for row in cur.fetchall()}

    def contains_sql(self, column: str) -> str:
        # No escapes inside T-SQL string literals: '\' is one backslash.
        # Case-insensitive under the default (_CI_) collations.
        return f"{column} LIKE %s ESCAPE '\\'"

    @contextmanager
    def query_time_limit(self, timeout_ms: int) -> Iterator[None]:
        # mssql-django applies OPTIONS["query_timeout"] (seconds) to every
        # statement; 0 means none, and a search does not run unbounded.
        if not self.connection.settings_dict.get("OPTIONS", {}).get("query_timeout"):
            raise ImproperlyConfigured(
                f"{self.alias}: set OPTIONS query_timeout (seconds) on SQL Server; searches do not run without a time limit"
            )
        yield

    # The availability group's view of each secondary of this database, read
    # on the primary (one row per secondary; needs VIEW SERVER STATE, granted
    # in sql/08): the log not yet sent (log_send_queue_size, KB), the log
    # received but not yet redone (redo_queue_size, KB) and how far the
    # secondary is behind in seconds (secondary_lag_seconds, SQL Server 2016
    # and later). NULL where the primary has no current figure: unknown.
    # https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/sys-dm-hadr-database-replica-states-transact-sql
    REPLICA_LAG_SQL = (
        "SELECT drs.secondary_lag_seconds, drs.log_send_queue_size, drs.redo_queue_size, "
        "drs.synchronization_state_desc "
        "FROM sys.dm_hadr_database_replica_states AS drs "
        "JOIN sys.availability_replicas AS ar ON ar.replica_id = drs.replica_id "
        "WHERE drs.database_id = DB_ID() AND drs.is_local = 0 AND ar.replica_server_name = %s"
    )

    def replica_lag(self, cursor, *, on_primary: bool, replica: str) -> ReplicaLag:
        if not on_primary:
            raise NotOnThisEngine(
                "on SQL Server the lag of a secondary is read on the primary (sys.dm_hadr_database_replica_states)"
            )
        cursor.execute(self.REPLICA_LAG_SQL, [replica])
        row = cursor.fetchone()
        if row is None:
            return ReplicaLag(None, f"{replica} is not a secondary of this database's availability group")
        seconds, send_kb, redo_kb, state = row
        if send_kb is None or redo_kb is None:
            return ReplicaLag(None, f"{replica}: queues unknown ({state})")
        queue = int(send_kb) + int(redo_kb)
        detail = f"{replica}: log send queue {int(send_kb):,} KB, redo queue {int(redo_kb):,} KB ({state})"
        if seconds is None:
            # No figure in seconds (no commit measured yet): nothing queued is caught up.
            return ReplicaLag(0.0 if queue == 0 else None, detail, queue_kb=queue)
        return ReplicaLag(float(seconds), detail, queue_kb=queue)

    def create_readonly_role(
        self, role: str, password: str | None, namespaces: list[str], tables: list[str]
    ) -> tuple[bool, list[str]]:
        raise NotOnThisEngine("the reader login and its grants come from sql/08_signing_and_grants.sql (DBA)")

    # -- procedures ----------------------------------------------------------
    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # For the statements the engine runs itself (a streamed source); the
        # procedures set LOCK_TIMEOUT from their @lock_timeout_ms parameter.
        # "After it is changed, the new setting stays in effect for the
        # remainder of the connection" - when run as a plain batch: a driver
        # parameter would turn it into an sp_executesql batch, whose SET
        # options end with it. So a literal: an int from a validated setting.
        # The statement bound on SQL Server is the driver's query timeout
        # (MSSQL_QUERY_TIMEOUT).
        # https://learn.microsoft.com/sql/t-sql/statements/set-lock-timeout-transact-sql
        return [(f"SET LOCK_TIMEOUT {int(lock_timeout_ms)}; SET DEADLOCK_PRIORITY LOW;", [])]

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list | None]]:
        return []

    def mark_table(
        self,
        *,
        source_alias: str,
        schema_name: str,
        table_name: str,
        threshold: dt.date,
        child_thresholds: dict[str, dt.date] | None = None,
    ) -> MarkResult:
        """Count a table's eligible rows and key bounds (``archival.usp_mark_table``).

        ``child_thresholds``: each configured child table's threshold by its
        name, so a parent row counts when every child row referencing it will
        move in this run (the rule of the other engines' Mark).
        """
        children = json.dumps({name: day.isoformat() for name, day in (child_thresholds or {}).items()})
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_mark_table",
                source_alias=source_alias, schema_name=schema_name, table_name=table_name, threshold=threshold,
                lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS, child_thresholds=children,
            )  # fmt: skip
        return MarkResult(
            int(out["eligible"]), int(out["null_dates"]), decode_key(out["key_low"]), decode_key(out["key_high"])
        )

    def archive_batch(
        self,
        *,
        run_id: int,
        config_id: int,
        source_alias: str,
        schema_name: str,
        table_name: str,
        threshold: dt.date,
        years_retention: int,
        batch_size: int,
        batch_no: int,
        key_after: list | None,
    ) -> BatchResult:
        """One atomic batch inside the instance; the procedure owns the transaction.

        Must not run inside a Django atomic block on this connection: the
        procedure commits its own transaction (move + ledger row together).
        """
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ProcedureCallError(f"batch_size must be 1..{MAX_BATCH_SIZE} on SQL Server, not {batch_size}")
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_archive_batch",
                run_id=run_id, config_id=config_id, source_alias=source_alias, schema_name=schema_name,
                table_name=table_name, threshold=threshold, years_retention=years_retention,
                batch_size=batch_size, batch_no=batch_no, key_after=encode_key(key_after),
                lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS,
            )  # fmt: skip
        return BatchResult(int(out["rows_moved"] or 0), int(out["rows_skipped"] or 0), decode_key(out["key_high"]))

    def restore_batch(
        self,
        *,
        request_id: int,
        config,
        batch_no: int,
        key_after: list | None,
        batch_size: int,
        selection: dict,
    ) -> RestoreBatchCounts:
        """One restore batch inside the instance (``archival.usp_restore_batch``); the procedure owns the transaction.

        The next ``batch_size`` archive rows of ``selection`` after
        ``key_after`` in key order go back into the source in one
        transaction: conflict check (a source row with the same key and
        other values stops the table, error 50804 naming the key; identical
        ones are skipped), INSERT with the source's insertable columns
        (IDENTITY_INSERT for an identity column), DELETE from the archive,
        the RestoreLedger row (state MOVED), reconciliation, commit.
        ``key_high`` None: nothing was left after ``key_after``. A deadlock
        (1205) or lock time-out (1222) rolled the whole batch back, so the
        call is simply made again (with backoff); it must not run inside a
        Django atomic block on this connection (retry_transient refuses to
        retry there).
        """
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ProcedureCallError(f"batch_size must be 1..{MAX_BATCH_SIZE} on SQL Server, not {batch_size}")
        inputs = dict(
            request_id=request_id, config_id=config.pk, source_alias=config.source_db,
            schema_name=config.schema_name, table_name=config.table_name, selection=encode_selection(selection),
            # Holds active today, as Hold.objects.active() counts them.
            as_of=timezone.localdate(), batch_size=batch_size, batch_no=batch_no, key_after=encode_key(key_after),
            lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS,
        )  # fmt: skip

        def call() -> dict:
            with self.connection.cursor() as cur:
                return call_procedure(cur, "archival.usp_restore_batch", **inputs)

        try:
            out = retry_transient(
                call,
                attempts=RESTORE_BATCH_ATTEMPTS,
                base_delay=0.5,
                # Not a lost connection: the batch may have committed before
                # the answer was lost; the executor resumes from the ledger.
                retryable=lambda exc: is_transient(exc) and not is_unreachable(exc),
            )
        except Error as exc:
            typed = _restore_error(exc)
            if typed is None:
                raise
            raise typed from exc
        return RestoreBatchCounts(
            restored=int(out["rows_restored"] or 0),
            skipped_identical=int(out["rows_skipped"] or 0),
            deleted=int(out["rows_deleted"] or 0),
            held=int(out["rows_held"] or 0),
            key_high=decode_key(out["key_high"]),
        )

    def run_dispose_procedure(
        self,
        *,
        source_alias: str,
        schema_name: str,
        table_name: str,
        as_of: dt.date,
        batch_size: int,
        key_after: list | None,
    ) -> DisposeResult:
        """One call of archival.usp_dispose_batch: the next ``batch_size`` expired rows after
        ``key_after`` in key order, held ones kept, the rest deleted, under the hold lock."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ProcedureCallError(f"batch_size must be 1..{MAX_BATCH_SIZE} on SQL Server, not {batch_size}")
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_dispose_batch",
                source_alias=source_alias, schema_name=schema_name, table_name=table_name,
                as_of=as_of, batch_size=batch_size, key_after=encode_key(key_after),
                lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS,
            )  # fmt: skip
        return DisposeResult(int(out["rows_disposed"] or 0), int(out["rows_held"] or 0), decode_key(out["key_high"]))

    def dispose_batch(self, table, *, key_low, key_high, cutoff, holds_at) -> DisposedRange:
        """The approved key range, disposed through archival.usp_dispose_batch.

        The runtime login has no DELETE on archive tables: the procedure
        re-checks the holds and deletes in one transaction under the hold lock
        (its own T-SQL hold check; ``holds_at`` is not used here). It takes the
        next N expired rows after a key, so the range becomes: the expired
        key just before ``key_low`` as the start, N = the expired rows in the
        range (in calls of at most MAX_BATCH_SIZE). The expired keys of the
        range are read before and after, in this archive transaction, which
        holds the archive lock and the hold lock from before the first read
        to the commit: the deleted keys are those that went, and anything
        else that changed (a key that appeared, a count that disagrees)
        raises, rolling the whole batch back.
        """
        config = table.config
        expired = f"{table.col('retention_until')} < %s"
        in_range, range_params = table.range_sql(key_low, key_high)
        keys = table.pk_select()
        before = self._fetch_keys(
            f"SELECT {keys} FROM {table.qualified} AS a WHERE {in_range} AND {expired} ORDER BY {table.order_by()}",
            [*range_params, cutoff],
        )
        if not before:
            return DisposedRange([], 0, 0)
        start_key = None
        if key_low is not None:
            at_or_after_low, low_params = table.range_sql(key_low, None)
            earlier = self._fetch_keys(
                self.limit_sql(
                    f"SELECT {keys} FROM {table.qualified} AS a WHERE NOT ({at_or_after_low}) AND {expired} "
                    f"ORDER BY {', '.join(f'{c} DESC' for c in table.pk_cols())}",
                    "1",
                ),
                [*low_params, cutoff],
            )
            start_key = list(earlier[0]) if earlier else None
        disposed, remaining = 0, len(before)
        while remaining:
            size = min(remaining, MAX_BATCH_SIZE)
            result = self.run_dispose_procedure(
                source_alias=config.source_db, schema_name=config.schema_name, table_name=config.table_name,
                as_of=cutoff, batch_size=size, key_after=start_key,
            )  # fmt: skip
            disposed += result.rows_disposed
            remaining -= size
            if result.key_high is None:
                break
            start_key = result.key_high
        after = self._fetch_keys(
            f"SELECT {keys} FROM {table.qualified} AS a WHERE {in_range} AND {expired}", [*range_params, cutoff]
        )
        gone = set(before) - set(after)
        if set(after) - set(before) or len(gone) != disposed:
            raise DisposalError(
                f"{table.label}: usp_dispose_batch reported {disposed} row(s) disposed, {len(gone)} of the "
                f"{len(before)} expired key(s) of the range went and {len(set(after) - set(before))} appeared; "
                "the batch is rolled back"
            )
        return DisposedRange([key for key in before if key in gone], len(before), len(after))

    def _fetch_keys(self, sql: str, params: list) -> list[tuple]:
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return [tuple(row) for row in cur.fetchall()]

    def lock_holds(self) -> None:
        """The hold lock (the ``archival:holds`` applock usp_dispose_batch takes), for this transaction.

        Taken after the archive lock row by every hold change and disposal
        batch (``take_archive_lock``), so a hold placed while a batch runs waits
        for it, in the same order everywhere.
        """
        with self.connection.cursor() as cur:
            call_procedure(cur, "archival.usp_lock_holds", lock_timeout_ms=settings.ARCHIVAL_LOCK_TIMEOUT_MS)


# What archival.usp_restore_batch THROWs when a batch must stop the table
# (50804: a source row with the key and other values; 50805: counts that do
# not reconcile), matched in the server's message as every driver reports it.
_RESTORE_CONFLICT = re.compile(r"Restore of .*? nothing of the batch moved\.", re.DOTALL)
_RESTORE_RECONCILE = re.compile(r"Restore batch counts do not reconcile; the batch is rolled back\.")


def _restore_error(exc: BaseException):
    """The restore engine's own error for a THROW of usp_restore_batch (None: any other error)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        text = " ".join(str(a) for a in getattr(link, "args", ())) or str(link)
        for pattern, error in ((_RESTORE_CONFLICT, RestoreConflict), (_RESTORE_RECONCILE, RestoreReconcileError)):
            found = pattern.search(text)
            if found:
                return error(found.group(0))
        link = link.__cause__ or link.__context__
    return None


def _ends_with_order_by(sql: str) -> bool:
    """True when the statement itself (not a subquery in it) ends with an ORDER BY clause."""
    upper = sql.upper()
    at = upper.rfind("ORDER BY")
    if at < 0:
        return False
    depth = 0
    for char in upper[at:]:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            return False  # the ORDER BY closes inside a parenthesis: a subquery's
    return True
