"""MariaDB (and MySQL): a "schema" is a database on the same server.

Catalog reads go through information_schema with the schema and table as
parameters. A source on the same server as the archive moves with
``INSERT ... SELECT`` + ``DELETE`` across databases in one InnoDB
transaction; keyset predicates must use the expanded ``OR`` form, because
MariaDB does not range-scan row-value comparisons (see PERFORMANCE.md).
"""

from __future__ import annotations

from archival.backends.base import (
    Backend,
    Column,
    ForeignKey,
    SchemaError,
    TableInfo,
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

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
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

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """(child table, its column, our column) for single-column foreign keys into ``table``."""
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT k.table_name, k.column_name, k.referenced_column_name
                FROM information_schema.key_column_usage k
                WHERE k.referenced_table_schema = %s AND k.referenced_table_name = %s
                  AND k.table_schema = k.referenced_table_schema
                  AND (SELECT COUNT(*) FROM information_schema.key_column_usage k2
                       WHERE k2.constraint_schema = k.constraint_schema
                         AND k2.constraint_name = k.constraint_name
                         AND k2.table_name = k.table_name) = 1
                """,
                [schema, table],
            )
            return [(_text(a), _text(b), _text(c)) for a, b, c in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # DATE_ADD clamps 29 February + 1 year to 28 February, as PostgreSQL does.
        return f"CAST(DATE_ADD(CAST({expr} AS DATE), INTERVAL %s YEAR) AS DATE)"

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


def _text(value) -> str:
    # information_schema returns bytes for some columns on older servers/drivers.
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
