"""PostgreSQL: catalog reads through information_schema, moves as one statement."""

from __future__ import annotations

from archival.backends.base import (
    Backend,
    Column,
    ForeignKey,
    SchemaError,
    TableInfo,
    generic_type,
)


class PostgresBackend(Backend):
    vendor = "postgresql"
    # Verify counts a table right after the archive phase deleted a large
    # share of it. Every page that lost a row lost its all-visible bit, but
    # the planner's statistics still say all-visible and it picks an
    # index-only scan that fetches every heap tuple at random: 10.8 s for
    # Position at 12,000,000 rows, against 0.56 s for the sequential scan it
    # takes without index-only scans (EXPLAIN ANALYZE, bench/RESULTS.md).
    settings_after_bulk_delete = ("SET LOCAL enable_indexonlyscan = off",)

    def schema_exists(self, schema: str) -> bool:
        return self._exists("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])

    def table_exists(self, schema: str, table: str) -> bool:
        return self._exists(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s", [schema, table]
        )

    def describe(self, schema: str, table: str) -> TableInfo:
        # One round trip: the columns (with each one's place in the primary
        # key), the single-column foreign keys out of the table and those
        # naming it. Three catalog queries per table cost more than the
        # batches of most tables (120 tables, three reads of the schema each).
        with self.connection.cursor() as cur:
            cur.execute(
                """
                WITH t AS (
                    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
                ), fk AS (
                    SELECT con.conrelid, con.conkey[1] AS col, con.confrelid, con.confkey[1] AS refcol
                    FROM pg_constraint con
                    WHERE con.contype = 'f' AND array_length(con.conkey, 1) = 1
                      AND (con.conrelid IN (SELECT oid FROM t) OR con.confrelid IN (SELECT oid FROM t))
                )
                SELECT 0, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                       information_schema._pg_char_max_length(a.atttypid, a.atttypmod),
                       information_schema._pg_numeric_precision(a.atttypid, a.atttypmod),
                       information_schema._pg_numeric_scale(a.atttypid, a.atttypmod),
                       array_position(i.indkey::int2[], a.attnum), NULL::name, NULL::name
                FROM t JOIN pg_attribute a ON a.attrelid = t.oid
                LEFT JOIN pg_index i ON i.indrelid = t.oid AND i.indisprimary
                WHERE a.attnum > 0 AND NOT a.attisdropped
                UNION ALL
                SELECT 1, fk.col, a.attname, NULL, NULL, NULL, NULL, NULL, NULL, rc.relname, ra.attname
                FROM fk JOIN t ON fk.conrelid = t.oid
                JOIN pg_class rc ON rc.oid = fk.confrelid
                JOIN pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = fk.col
                JOIN pg_attribute ra ON ra.attrelid = fk.confrelid AND ra.attnum = fk.refcol
                UNION ALL
                SELECT 2, fk.refcol, ra.attname, NULL, NULL, NULL, NULL, NULL, NULL, c.relname, a.attname
                FROM fk JOIN t ON fk.confrelid = t.oid
                JOIN pg_class c ON c.oid = fk.conrelid
                JOIN pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = fk.col
                JOIN pg_attribute ra ON ra.attrelid = fk.confrelid AND ra.attnum = fk.refcol
                ORDER BY 1, 2
                """,
                [schema, table],
            )
            rows = cur.fetchall()
        col_rows = [r[2:] for r in rows if r[0] == 0]
        if not col_rows:
            raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
        columns = []
        for name, db_type, nullable, length, precision, scale, _, _, _ in col_rows:
            size = (length, None) if length else (precision, scale)
            columns.append(Column(name, db_type, generic_type(db_type), bool(nullable), size))
        pk = [r[0] for r in sorted((r for r in col_rows if r[6] is not None), key=lambda r: r[6])]
        fks = [ForeignKey(r[2], r[9], r[10]) for r in rows if r[0] == 1]
        referenced_by = [(r[9], r[10], r[2]) for r in rows if r[0] == 2]
        return TableInfo(schema, table, columns, pk, fks, referenced_by)

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT c.relname, a.attname, ra.attname
                FROM pg_constraint con
                JOIN pg_class c ON c.oid = con.conrelid
                JOIN pg_class rc ON rc.oid = con.confrelid
                JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[1]
                WHERE con.contype = 'f' AND rn.nspname = %s AND rc.relname = %s AND array_length(con.conkey, 1) = 1
                """,
                [schema, table],
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # PostgreSQL clamps 29 February + 1 year to 28 February by itself.
        return f"CAST(CAST({expr} AS DATE) + make_interval(years => %s) AS DATE)"

    generic_types = {
        "int": "integer",
        "bigint": "bigint",
        "float": "double precision",
        "bool": "boolean",
        "date": "date",
        "datetime": "timestamp",
        "binary": "bytea",
    }
    decimal_type = "numeric({p},{s})"
    decimal_fallback = "numeric"
    text_fallback = "text"

    def timestamp_type(self) -> str:
        return "timestamp with time zone"

    def create_namespace(self, namespace: str) -> None:
        with self.connection.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(namespace)}")
