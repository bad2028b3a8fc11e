"""MariaDB (and MySQL): a "schema" is a database on the same server.

Catalog reads go through information_schema with the schema and table as
parameters. A source on the same server as the archive moves with
``INSERT ... SELECT`` + ``DELETE`` across databases in one InnoDB
transaction; keyset predicates must use the expanded ``OR`` form, because
MariaDB does not range-scan row-value comparisons (see PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from archival.backends.base import (
    DATE_FAMILIES,
    ISO_DATE_PATTERN,
    ArchiveIndex,
    Backend,
    Column,
    ForeignKey,
    InsertTarget,
    NotOnThisEngine,
    ReplicaLag,
    SchemaError,
    TableInfo,
    day_in_month_sql,
    generic_type,
)


class MariaDBBackend(Backend):
    vendor = "mysql"
    quote_char = "`"
    reads_beside_writes = True

    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # Row locks wait innodb_lock_wait_timeout, table and metadata locks
        # (LOCK TABLES, DDL) lock_wait_timeout: both in whole seconds, at
        # least 1. max_statement_time (MariaDB, seconds, fractions allowed)
        # aborts any statement that runs longer. Session variables: they
        # must be in place before the transaction's first statement waits.
        seconds = max(1, -(-int(lock_timeout_ms) // 1000))
        return [
            (
                "SET SESSION innodb_lock_wait_timeout = %s, SESSION lock_wait_timeout = %s, "
                "SESSION max_statement_time = %s",
                [seconds, seconds, int(statement_timeout_ms) / 1000],
            )
        ]

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list | None]]:
        return []

    def schema_exists(self, schema: str) -> bool:
        return self._exists("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [schema])

    def table_exists(self, schema: str, table: str) -> bool:
        return self._exists(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s AND table_type = 'BASE TABLE'",
            [schema, table],
        )

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # InnoDB's estimate from its index statistics (no scan).
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT table_rows FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                [schema, table],
            )
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def describe(self, schema: str, table: str) -> TableInfo:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT column_name, column_type, is_nullable = 'YES', character_maximum_length,
                       numeric_precision, numeric_scale, data_type
                FROM information_schema.columns
                WHERE table_schema = %s AND table_name = %s
                ORDER BY ordinal_position
                """,
                [schema, table],
            )
            rows = cur.fetchall()
            if not rows:
                raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
            columns = []
            for (
                name,
                column_type,
                nullable,
                length,
                precision,
                scale,
                data_type,
            ) in rows:
                db_type = _text(column_type)
                family = generic_type(_text(data_type))
                if family in {"decimal"}:
                    size = (precision, scale)
                elif length:
                    size = (length, None)
                else:
                    size = (None, None)
                # tinyint(1) is how MariaDB spells a boolean.
                if db_type.lower().startswith("tinyint(1)"):
                    family = "bool"
                columns.append(Column(name, db_type, family, bool(nullable), size))
            cur.execute(
                """
                SELECT column_name
                FROM information_schema.key_column_usage
                WHERE table_schema = %s AND table_name = %s AND constraint_name = 'PRIMARY'
                ORDER BY ordinal_position
                """,
                [schema, table],
            )
            pk = [r[0] for r in cur.fetchall()]
            # Single-column foreign keys within the same database only: a
            # parent elsewhere is not a configured table of this source.
            cur.execute(
                """
                SELECT k.column_name, k.referenced_table_name, k.referenced_column_name
                FROM information_schema.key_column_usage k
                WHERE k.table_schema = %s AND k.table_name = %s
                  AND k.referenced_table_name IS NOT NULL
                  AND k.referenced_table_schema = k.table_schema
                  AND (SELECT COUNT(*) FROM information_schema.key_column_usage k2
                       WHERE k2.constraint_schema = k.constraint_schema
                         AND k2.constraint_name = k.constraint_name
                         AND k2.table_name = k.table_name) = 1
                """,
                [schema, table],
            )
            fks = [ForeignKey(*r) for r in cur.fetchall()]
        return TableInfo(schema, table, columns, pk, fks)

    def insertable_columns(self, schema: str, table: str) -> InsertTarget:
        # VIRTUAL and PERSISTENT (STORED) columns refuse an explicit value
        # in strict mode; IS_GENERATED names both. AUTO_INCREMENT columns take
        # the archived value as it is (and move the counter past it if needed).
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT column_name, is_generated <> 'NEVER' FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                [schema, table],
            )
            rows = [(_text(name), bool(generated)) for name, generated in cur.fetchall()]
        if not rows:
            raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
        return InsertTarget(
            columns=[name for name, generated in rows if not generated],
            derived=tuple(name for name, generated in rows if generated),
        )

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """(child table, its column, our column) for single-column foreign keys into ``table``."""
        return self.referencing_tables(schema, [table])[table]

    def referencing_tables(self, schema: str, tables: Sequence[str]) -> dict[str, list[tuple[str, str, str]]]:
        found: dict[str, list[tuple[str, str, str]]] = {table: [] for table in tables}
        if not tables:
            return found
        with self.connection.cursor() as cur:
            cur.execute(
                f"""
                SELECT k.referenced_table_name, k.table_name, k.column_name, k.referenced_column_name
                FROM information_schema.key_column_usage k
                WHERE k.referenced_table_schema = %s AND k.referenced_table_name IN ({", ".join(["%s"] * len(tables))})
                  AND k.table_schema = k.referenced_table_schema
                  AND (SELECT COUNT(*) FROM information_schema.key_column_usage k2
                       WHERE k2.constraint_schema = k.constraint_schema
                         AND k2.constraint_name = k.constraint_name
                         AND k2.table_name = k.table_name) = 1
                """,
                [schema, *tables],
            )
            # information_schema compares names without case: the catalog's
            # spelling may differ from the config's.
            named = {table.lower(): table for table in tables}
            for parent, child, column, parent_column in cur.fetchall():
                key = named.get(_text(parent).lower(), _text(parent))
                found.setdefault(key, []).append((_text(child), _text(column), _text(parent_column)))
        return found

    def add_years_sql(self, expr: str) -> str:
        # DATE_ADD clamps 29 February + 1 year to 28 February, as PostgreSQL does.
        return f"CAST(DATE_ADD(CAST({expr} AS DATE), INTERVAL %s YEAR) AS DATE)"

    def readable_date_sql(self, expr: str, column: Column) -> str | None:
        if column.generic in DATE_FAMILIES:
            return None
        if column.generic != "text":
            return "(1 = 0)"
        # No STR_TO_DATE: it warns on '2021-02-30', and strict mode makes the
        # warning an error inside INSERT ... SELECT and DELETE.
        day_ok = day_in_month_sql(expr, lambda e: f"CAST({e} AS UNSIGNED)")
        return (
            f"(CASE WHEN {expr} REGEXP '{ISO_DATE_PATTERN}' AND SUBSTRING({expr}, 1, 4) <> '0000' "
            f"THEN {day_ok} ELSE 0 END)"
        )

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"({left} <=> {right})"

    def type_for_generic(self, col: Column) -> str:
        g = col.generic
        if g == "decimal":
            p, s = col.size
            return f"DECIMAL({p},{s or 0})" if p else "DECIMAL(38,10)"
        if g == "text":
            length = col.size[0]
            # Longer strings than an indexable VARCHAR go to a TEXT column.
            return f"VARCHAR({length})" if length and length <= 4000 else "LONGTEXT"
        return {
            "int": "INT",
            "bigint": "BIGINT",
            "float": "DOUBLE",
            "bool": "TINYINT(1)",
            "date": "DATE",
            "datetime": "DATETIME(6)",
            "binary": "LONGBLOB",
        }.get(g, "LONGTEXT")

    def timestamp_type(self) -> str:
        return "DATETIME(6)"

    def create_namespace(self, namespace: str) -> None:
        with self.connection.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {self.quote(namespace)}")

    # -- engines and connections ---------------------------------------------
    def same_server(self, archive: Backend) -> bool:
        # One InnoDB transaction spans the databases of one server.
        return self.same_engine(archive) and self._same_host(archive)

    def source_table_sql(self, source: Backend, source_db: str, schema: str, table: str) -> str:
        # A "schema" is a database: the source's, on the archive's server.
        return self.qualified(source.connection.settings_dict["NAME"], table)

    def param(self, value):
        return value

    def write_transaction(self) -> AbstractContextManager[None]:
        return transaction.atomic(using=self.alias)

    # -- moves ---------------------------------------------------------------
    def moves_through_procedures(self) -> bool:
        return False

    def moves_in_one_statement(self) -> bool:
        return False

    def transactional_ddl(self) -> bool:
        # Every DDL statement commits the open transaction.
        return False

    def lock_hint(self) -> str:
        return ""

    def select_sql(
        self, columns: str, body: str, params: list, *, limit: int | None = None, lock_alias: str | None = None
    ) -> tuple[str, list]:
        sql, params = f"SELECT {columns} {body}", list(params)
        if limit is not None:
            sql, params = f"{sql} LIMIT %s", [*params, limit]
        if lock_alias is not None:
            # InnoDB locks the rows read and the gaps between them (next-key
            # locks under REPEATABLE READ): no row enters the range either.
            sql += " FOR UPDATE"
        return sql, params

    def join_sql(self, left: str, right: str, condition: str, *, pin_left: bool) -> tuple[str, str]:
        return f"{left} {'STRAIGHT_JOIN' if pin_left else 'JOIN'} {right} ON {condition}", ""

    def delete_sql(self, alias: str, from_sql: str) -> str:
        # The multi-table form names the alias it deletes from.
        return f"DELETE {alias} FROM {from_sql}"

    def delete_joins_contract(self) -> bool:
        # MariaDB turns the EXISTS into a semi-join driven from the
        # contract's date index and rescans every eligible row per batch; a
        # multi-table DELETE with the source pinned first range-scans the key
        # instead (PERFORMANCE.md).
        return True

    def start_locking_read(self, cursor) -> None:
        # FOR UPDATE's next-key locks already keep the range as read.
        return None

    def insert_rows(self, table: str, columns: list[str], rows: list[list]) -> None:
        # mysqlclient rewrites executemany of one INSERT into multi-row INSERTs.
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        with self.connection.cursor() as cur:
            cur.executemany(sql, rows)

    # -- archive tables --------------------------------------------------------
    def namespace_missing(self, namespace: str, source_db: str) -> str:
        return ""

    def archive_table_ddl(
        self, namespace: str, table: str, column_defs: list[str], indexes: list[ArchiveIndex]
    ) -> list[str]:
        # Every DDL statement commits on its own: the indexes go inside
        # CREATE TABLE, one statement instead of three.
        q = self.quote
        inline = [f"INDEX {q(i.name)} ({', '.join(q(c) for c in i.columns)})" for i in indexes]
        return [f"CREATE TABLE {self.qualified(namespace, table)} ({', '.join([*column_defs, *inline])})"]

    def archive_indexes(self, namespace: str, table: str) -> list[ArchiveIndex]:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT index_name, non_unique, column_name
                FROM information_schema.statistics
                WHERE table_schema = %s AND table_name = %s
                ORDER BY index_name, seq_in_index
                """,
                [namespace, table],
            )
            rows = cur.fetchall()
        found: dict[str, tuple[bool, list[str]]] = {}
        for name, non_unique, column in rows:
            found.setdefault(name, (not non_unique, []))[1].append(column)
        return [
            ArchiveIndex(name, tuple(cols), "btree", name == "PRIMARY", unique, unique)
            for name, (unique, cols) in sorted(found.items())
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
        # One ALTER TABLE: each DDL statement commits on its own, and InnoDB
        # rebuilds the table once for all the changes. The UNIQUE key is
        # dropped and the PRIMARY KEY added in that one statement, so the
        # key refuses duplicates throughout.
        q = self.quote
        parts = [f"DROP INDEX {q(index.name)}" for index in drop]
        if primary_key is not None:
            old, _name = primary_key
            parts += [f"DROP INDEX {q(old.name)}", f"ADD PRIMARY KEY ({', '.join(q(c) for c in old.columns)})"]
        parts += [f"ADD INDEX {q(i.name)} ({', '.join(q(c) for c in i.columns)})" for i in create]
        return [f"ALTER TABLE {self.qualified(namespace, table)} {', '.join(parts)}"] if parts else []

    def primary_key_note(self) -> str:
        return (
            "InnoDB rebuilds the table in place to cluster it on the key (online: reads and writes go on "
            "until the last moment); it needs free space about the table's size"
        )

    def add_column_sql(self, qualified_table: str, column_def: str) -> str:
        return f"ALTER TABLE {qualified_table} ADD COLUMN {column_def}"

    # -- disposal --------------------------------------------------------------
    def dispose_target(self, table) -> tuple[str, str]:
        # A single-table DELETE takes no alias on MariaDB before 11.6 (a
        # syntax error), and only the single-table form has RETURNING: the
        # conditions name the row by the table's qualified name.
        return table.qualified, table.qualified

    def key_text_sql(self, columns: list[tuple[str, str, int | None]]) -> tuple[str, list]:
        # CONCAT, not ||: without PIPES_AS_CONCAT in sql_mode || is OR.
        pieces, params = [], []
        # A decimal prints with its column's scale already.
        for i, (col, generic, _scale) in enumerate(columns):
            if i:
                pieces.append("%s")
                params.append("\t")
            if generic == "binary":
                pieces.append(f"LOWER(HEX({col}))")
            elif generic == "bool":
                # TINYINT(1): CAST would give 1/0.
                pieces.append(f"CASE WHEN {col} THEN 'true' ELSE 'false' END")
            elif generic == "datetime":
                # DATETIME(6) prints all six digits; isoformat omits a zero fraction.
                pieces.append(f"REPLACE(CAST({col} AS CHAR), '.000000', '')")
            elif generic == "text":
                pieces.append(f"REPLACE(REPLACE(REPLACE(CAST({col} AS CHAR), %s, %s), %s, %s), %s, %s)")
                params += ["\\", "\\\\", "\t", "\\t", "\n", "\\n"]
            else:
                pieces.append(f"CAST({col} AS CHAR)")
        return f"CONCAT({', '.join(pieces)})", params

    def text_cast_sql(self, expr: str) -> str:
        return f"CAST({expr} AS CHAR)"

    def refuse_delete_trigger_sql(self, table: str, name: str, message: str) -> list[str]:
        q = self.quote
        return [
            f"DROP TRIGGER IF EXISTS {q(name)}",
            f"CREATE TRIGGER {q(name)} BEFORE DELETE ON {q(table)} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}: DELETE refused'",
        ]

    def drop_trigger_sql(self, table: str, name: str, table_exists: bool) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.quote(name)}"]

    def draws_ids_under_head_lock(self) -> bool:
        return False

    # -- control-plane statements (governance.rowsql) ----------------------------
    def writes_returning(self) -> bool:
        return True

    def selects_updated_rows(self) -> bool:
        return False

    # -- search ----------------------------------------------------------------
    def table_names(self, schema: str) -> set[str]:
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                [schema],
            )
            return {_text(row[0]) for row in cur.fetchall()}

    def contains_sql(self, column: str) -> str:
        # A backslash in a string literal escapes the next character here:
        # the ESCAPE literal is written doubled. Case-insensitive under the
        # default (_ci) collations.
        return f"{column} LIKE %s ESCAPE '\\\\'"

    def query_time_limit(self, timeout_ms: int) -> AbstractContextManager[None]:
        raise ImproperlyConfigured(f"{self.alias}: no query time limit is implemented for MariaDB")

    def replica_lag(self, cursor, *, on_primary: bool, replica: str) -> ReplicaLag:
        # A MariaDB primary does not know its replicas' positions: the
        # replica says, in SHOW SLAVE STATUS (privilege REPLICA MONITOR, or
        # REPLICATION CLIENT before 10.5). Seconds_Behind_Master NULL means
        # the SQL or IO thread is not running: replication is broken, which
        # counts as over any bound. Several rows: multi-source, the worst one.
        if on_primary:
            raise NotOnThisEngine("MariaDB reports replication lag on the replica only: measure it there")
        cursor.execute("SHOW SLAVE STATUS")
        names = [d[0] for d in cursor.description or ()]
        rows = [dict(zip(names, row, strict=False)) for row in cursor.fetchall()]
        if not rows:
            return ReplicaLag(None, f"{replica} is not a replica (SHOW SLAVE STATUS is empty)")
        behind = [r.get("Seconds_Behind_Master") for r in rows]
        if any(b is None for b in behind):
            broken = next(r for r in rows if r.get("Seconds_Behind_Master") is None)
            return ReplicaLag(
                None,
                f"{replica}: replication is not running (IO {broken.get('Slave_IO_Running')}, "
                f"SQL {broken.get('Slave_SQL_Running')}: {str(broken.get('Last_Error') or '')[:200]})",
            )
        worst = max(r["Seconds_Behind_Master"] for r in rows)
        return ReplicaLag(float(worst), f"{replica}: Seconds_Behind_Master {worst}")

    def create_readonly_role(
        self, role: str, password: str | None, namespaces: list[str], tables: list[str]
    ) -> tuple[bool, list[str]]:
        raise NotOnThisEngine("no SELECT-only account is set up for MariaDB; searches do not run there")


def _text(value) -> str:
    # information_schema returns bytes for some columns on older servers/drivers.
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
