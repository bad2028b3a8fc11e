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
    reads_beside_writes = True
    # Verify counts a table right after the archive phase deleted a large
    # share of it. Every page that lost a row lost its all-visible bit, but
    # the planner's statistics still say all-visible and it picks an
    # index-only scan that fetches every heap tuple at random: 10.8 s for
    # Position at 12,000,000 rows, against 0.56 s for the sequential scan it
    # takes without index-only scans (EXPLAIN ANALYZE, bench/RESULTS.md).
    settings_after_bulk_delete = ("SET LOCAL enable_indexonlyscan = off",)

    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        return []

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # SET LOCAL: the limits end with the batch's transaction and never
        # leak to the connection's next user. A SET takes no snapshot, so a
        # streamed batch can still choose its isolation level after it (a
        # SELECT set_config(...) could not). SET takes no parameters: the
        # numbers are ints from validated settings. lock_timeout covers every
        # lock (another session's LOCK TABLE ... ACCESS EXCLUSIVE included).
        return [
            (f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}", []),
            (f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}", []),
        ]

    def schema_exists(self, schema: str) -> bool:
        return self._exists("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])

    def table_exists(self, schema: str, table: str) -> bool:
        return self._exists(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s", [schema, table]
        )

    # The table's oid from its quoted name (None when there is no such
    # table): a lookup the planner does not have to join for. Catalog reads
    # are planned anew every time, and the joins of pg_class and
    # pg_namespace made planning most of their cost (2.5 ms of 2.8 ms for
    # the foreign keys below; 0.3 ms this way).
    _OID = "to_regclass(quote_ident(%s) || '.' || quote_ident(%s))"

    def describe(self, schema: str, table: str) -> TableInfo:
        # The columns and, in the same round trip, the single-column foreign
        # keys out of the table and those naming it (build_spec takes the
        # latter instead of asking ``referencing``): an uncorrelated
        # subquery, evaluated once and repeated on every column's row.
        return self._describe(schema, table, foreign_keys=True)

    _FOREIGN_KEYS = f"""
        (SELECT COALESCE(json_agg(json_build_array(
                    con.conrelid = r.oid, con.confrelid = r.oid,
                    (SELECT relname FROM pg_class WHERE oid = con.conrelid),
                    (SELECT attname FROM pg_attribute WHERE attrelid = con.conrelid AND attnum = con.conkey[1]),
                    (SELECT relname FROM pg_class WHERE oid = con.confrelid),
                    (SELECT attname FROM pg_attribute WHERE attrelid = con.confrelid AND attnum = con.confkey[1]))),
                '[]')
         FROM (SELECT {_OID}::oid AS oid) r
         JOIN pg_constraint con ON con.contype = 'f' AND array_length(con.conkey, 1) = 1
              AND (con.conrelid = r.oid OR con.confrelid = r.oid))
    """

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # reltuples is -1 until the table's first VACUUM or ANALYZE; its
        # size on disk at about 100 bytes a row is estimate enough then.
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint ELSE pg_relation_size(oid) / 100 END "
                f"FROM pg_class WHERE oid = {self._OID}",
                [schema, table],
            )
            row = cur.fetchone()
        return int(row[0]) if row else None

    def describe_columns(self, schema: str, table: str) -> TableInfo:
        return self._describe(schema, table, foreign_keys=False)

    def _describe(self, schema: str, table: str, *, foreign_keys: bool) -> TableInfo:
        fk_column = f", {self._FOREIGN_KEYS}" if foreign_keys else ""
        with self.connection.cursor() as cur:
            # Columns and each one's place in the primary key in one round trip.
            cur.execute(
                f"""
                SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                       information_schema._pg_char_max_length(a.atttypid, a.atttypmod),
                       information_schema._pg_numeric_precision(a.atttypid, a.atttypmod),
                       information_schema._pg_numeric_scale(a.atttypid, a.atttypmod),
                       array_position(
                           (SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary),
                           a.attnum){fk_column}
                FROM pg_attribute a
                WHERE a.attrelid = (SELECT c.oid FROM pg_class c WHERE c.oid = {self._OID} AND c.relkind IN ('r', 'p'))
                  AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attnum
                """,
                [*([schema, table] if foreign_keys else []), schema, table],
            )
            rows = cur.fetchall()
        if not rows:
            raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
        columns = []
        for name, db_type, nullable, length, precision, scale, *_ in rows:
            size = (length, None) if length else (precision, scale)
            columns.append(Column(name, db_type, generic_type(db_type), bool(nullable), size))
        pk = [r[0] for r in sorted((r for r in rows if r[6] is not None), key=lambda r: r[6])]
        info = TableInfo(schema, table, columns, pk)
        if foreign_keys:
            # A self-reference is both: out of the table, and naming it.
            fks = rows[0][7]
            info.foreign_keys = [ForeignKey(col, ref_t, ref_col) for out, _, _, col, ref_t, ref_col in fks if out]
            info.referenced_by = [(child, col, ref_col) for _, into, child, col, _, ref_col in fks if into]
        return info

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
