"""PostgreSQL: catalog reads through information_schema, moves as one statement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from django.db import OperationalError, transaction
from psycopg import sql as psql

from archival.backends.base import (
    DATE_FAMILIES,
    ISO_DATE_PATTERN,
    ArchiveIndex,
    Backend,
    Column,
    DisposedRange,
    ForeignKey,
    GovernanceSchemaConflict,
    InsertTarget,
    QueryTimeout,
    ReplicaLag,
    SchemaError,
    TableInfo,
    day_in_month_sql,
    generic_type,
)

# PostgreSQL "query_canceled": statement_timeout fired.
QUERY_CANCELED = "57014"


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

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list | None]]:
        # SET LOCAL: the limits end with the batch's transaction and never
        # leak to the connection's next user. A SET takes no snapshot, so a
        # streamed batch can still choose its isolation level after it (a
        # SELECT set_config(...) could not). SET takes no parameters: the
        # numbers are ints from validated settings. lock_timeout covers every
        # lock (another session's LOCK TABLE ... ACCESS EXCLUSIVE included).
        # Both in one round trip (every batch pays it): without parameters
        # psycopg sends the text as one simple query, which may hold several
        # statements.
        return [
            (
                f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}; "
                f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}",
                None,
            )
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
    # pg_namespace make planning most of their cost (2.5 ms of 2.8 ms for
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

    def insertable_columns(self, schema: str, table: str) -> InsertTarget:
        # attgenerated 's': GENERATED ALWAYS AS (...) STORED, refused in an
        # INSERT's column list. attidentity 'a': GENERATED ALWAYS AS IDENTITY,
        # which takes the archived value only with OVERRIDING SYSTEM VALUE
        # ('d', BY DEFAULT, takes it as it is). The sequence is not moved: the
        # restored ids were drawn from it before.
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a' FROM pg_attribute a "
                f"WHERE a.attrelid = {self._OID} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                [schema, table],
            )
            rows = cur.fetchall()
        if not rows:
            raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
        return InsertTarget(
            columns=[name for name, generated, _ in rows if not generated],
            overriding="OVERRIDING SYSTEM VALUE"
            if any(always for _, generated, always in rows if not generated)
            else "",
            derived=tuple(name for name, generated, _ in rows if generated),
        )

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        return self.referencing_tables(schema, [table])[table]

    def referencing_tables(self, schema: str, tables: Sequence[str]) -> dict[str, list[tuple[str, str, str]]]:
        found: dict[str, list[tuple[str, str, str]]] = {table: [] for table in tables}
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT rc.relname, c.relname, a.attname, ra.attname
                FROM pg_constraint con
                JOIN pg_class c ON c.oid = con.conrelid
                JOIN pg_class rc ON rc.oid = con.confrelid
                JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[1]
                WHERE con.contype = 'f' AND rn.nspname = %s AND rc.relname = ANY(%s)
                  AND array_length(con.conkey, 1) = 1
                """,
                [schema, list(tables)],
            )
            for parent, child, column, parent_column in cur.fetchall():
                found[parent].append((child, column, parent_column))
        return found

    def add_years_sql(self, expr: str) -> str:
        # PostgreSQL clamps 29 February + 1 year to 28 February by itself.
        return f"CAST(CAST({expr} AS DATE) + make_interval(years => %s) AS DATE)"

    def readable_date_sql(self, expr: str, column: Column) -> str | None:
        if column.generic in DATE_FAMILIES:
            return None
        if column.generic != "text":
            return "FALSE"
        # The pattern first (CASE keeps the order), then arithmetic on its
        # digits: a cast of '2021-02-30' to date would raise. (pg_input_is_valid
        # does this in one call from PostgreSQL 16.)
        day_ok = day_in_month_sql(expr, lambda e: f"CAST({e} AS integer)")
        return (
            f"(CASE WHEN {expr} ~ '{ISO_DATE_PATTERN}' AND SUBSTRING({expr}, 1, 4) <> '0000' "
            f"THEN {day_ok} ELSE FALSE END)"
        )

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

    # -- engines and connections ---------------------------------------------
    def same_server(self, archive: Backend) -> bool:
        # Schemas do not span databases: the same database on the same server.
        mine, theirs = self.connection.settings_dict, archive.connection.settings_dict
        return self.same_engine(archive) and self._same_host(archive) and mine["NAME"] == theirs["NAME"]

    def source_table_sql(self, source: Backend, source_db: str, schema: str, table: str) -> str:
        return self.qualified(schema, table)

    def param(self, value):
        return value

    def write_transaction(self) -> AbstractContextManager[None]:
        return transaction.atomic(using=self.alias)

    # -- moves ---------------------------------------------------------------
    def moves_through_procedures(self) -> bool:
        return False

    def moves_in_one_statement(self) -> bool:
        return True

    def move_statement_sql(
        self,
        *,
        source: str,
        batch_from: str,
        key: list[str],
        reference: str,
        columns: list[str],
        archive: str,
        archive_columns: str,
    ) -> str:
        """One statement deleting the batch from ``source``, inserting it into ``archive``, and reporting.

        ``batch_from`` is the batch's ``FROM ... LIMIT`` over ``source``
        aliased ``s``; ``reference`` each row's reference date there. The rows get
        ``archive_columns``: the source's ``columns``, then three parameters
        after the batch's (the archive timestamp, the run id, the retention
        years) and the reference date with its retention date. The statement
        returns one row, the last key moved and the counts deleted and
        inserted, or none when the batch was empty.
        """
        q = self.quote
        pk_s = ", ".join(f"s.{q(c)}" for c in key)
        # The DELETE finds each batch row by the ctid the batch read: one TID
        # scan over the batch's ctids (``ctid = ANY(ARRAY(...))``) reads the
        # one heap page, where the key join re-probed the primary key (through
        # Memoize, 5,000 misses: index pages, then the heap) for every row. On
        # 1,000,000 Position rows: 5,000 buffer reads a batch instead of
        # 20,000, and 7-10% less CPU for the statement (bench/batch_statements.py;
        # bench/RESULTS.md). The ctids go through an array, not a join on
        # ``s.ctid = b.__tid``: for that join the planner estimates one row
        # and, on a source under about 400,000 rows, hashed the whole table
        # every batch (a sequential scan: 150-210 ms instead of 15 ms for a
        # batch of Position on the 120-table set). The batch is MATERIALIZED
        # so that it is read once, under the statement's snapshot, for the
        # array and for the join that hands each row its reference date.
        # The key equality stays, as a filter on the row fetched: a ctid is
        # unique only within one table, so on a partitioned source the same
        # ctid names a row in every partition, and the key (unique across the
        # partitions) keeps the one the batch read. When another transaction
        # has updated a batch row meanwhile, its new version has another
        # ctid: the TID scan's recheck skips it, and Verify reports it still
        # in the source. Either way RETURNING feeds the INSERT, so exactly the
        # rows deleted are archived and counted.
        match = " AND ".join(["s.ctid = b.__tid", *(f"s.{q(c)} = b.{q(c)}" for c in key)])
        pk_m = [f"m.{q(c)}" for c in key]
        descending = ", ".join(f"{c} DESC" for c in pk_m)
        return (
            f"WITH b AS MATERIALIZED (SELECT s.ctid AS __tid, {pk_s}, {reference} AS __ref {batch_from}), "
            f"moved AS (DELETE FROM {source} s USING b "
            f"WHERE s.ctid = ANY(ARRAY(SELECT __tid FROM b)) AND {match} "
            f"RETURNING {', '.join(f's.{q(c)}' for c in columns)}, b.__ref), "
            f"ins AS (INSERT INTO {archive} ({archive_columns}) "
            f"SELECT {', '.join(q(c) for c in columns)}, %s, %s, __ref, {self.add_years_sql('__ref')} "
            f"FROM moved RETURNING 1) "
            f"SELECT {', '.join(pk_m)}, (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM ins) "
            f"FROM moved m ORDER BY {descending} LIMIT 1"
        )

    def transactional_ddl(self) -> bool:
        return True

    def lock_hint(self) -> str:
        return ""

    def select_sql(
        self, columns: str, body: str, params: list, *, limit: int | None = None, lock_alias: str | None = None
    ) -> tuple[str, list]:
        sql, params = f"SELECT {columns} {body}", list(params)
        if limit is not None:
            sql, params = f"{sql} LIMIT %s", [*params, limit]
        if lock_alias is not None:
            sql += f" FOR UPDATE OF {lock_alias}"
        return sql, params

    def join_sql(self, left: str, right: str, condition: str, *, pin_left: bool) -> tuple[str, str]:
        return f"{left} JOIN {right} ON {condition}", ""

    def delete_sql(self, alias: str, from_sql: str) -> str:
        return f"DELETE FROM {from_sql}"

    def delete_joins_contract(self) -> bool:
        return False

    def start_locking_read(self, cursor) -> None:
        # Under REPEATABLE READ the range DELETE sees the snapshot of the
        # locking read: exactly the rows that were copied.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def insert_rows(self, table: str, columns: list[str], rows: list[list]) -> None:
        # COPY streams the rows in one round trip; executemany costs about
        # twice as much for the same rows (bench/RESULTS.md, profile).
        # (Django does not wrap COPY's errors; wrap them so a duplicate key
        # is an IntegrityError like everywhere else.)
        with self.connection.cursor() as cur, self.connection.wrap_database_errors:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)

    # -- archive tables --------------------------------------------------------
    def namespace_missing(self, namespace: str, source_db: str) -> str:
        return ""

    def archive_table_ddl(
        self, namespace: str, table: str, column_defs: list[str], indexes: list[ArchiveIndex]
    ) -> list[str]:
        qualified = self.qualified(namespace, table)
        return [
            f"CREATE TABLE {qualified} ({', '.join(column_defs)})",
            *(self._create_index_sql(namespace, table, index) for index in indexes),
        ]

    def _create_index_sql(self, namespace: str, table: str, index: ArchiveIndex) -> str:
        using = f" USING {index.method}" if index.method != "btree" else ""
        columns = ", ".join(self.quote(c) for c in index.columns)
        return f"CREATE INDEX {self.quote(index.name)} ON {self.qualified(namespace, table)}{using} ({columns})"

    def archive_indexes(self, namespace: str, table: str) -> list[ArchiveIndex]:
        with self.connection.cursor() as cur:
            cur.execute(
                f"""
                SELECT i.relname, am.amname, ix.indisprimary, ix.indisunique,
                       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ix.indexrelid),
                       ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
                             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
                             ORDER BY k.ord)
                FROM pg_index ix
                JOIN pg_class i ON i.oid = ix.indexrelid
                JOIN pg_am am ON am.oid = i.relam
                WHERE ix.indrelid = {self._OID}
                ORDER BY i.relname
                """,
                [namespace, table],
            )
            return [
                ArchiveIndex(name, tuple(cols), method, primary, unique, constraint)
                for name, method, primary, unique, constraint, cols in cur.fetchall()
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
        # Run in one transaction (DDL is transactional here): the UNIQUE key
        # is replaced by the PRIMARY KEY inside one ALTER TABLE, under its
        # ACCESS EXCLUSIVE lock, so no row can arrive between the two.
        qualified = self.qualified(namespace, table)
        q = self.quote
        stmts = []
        if primary_key is not None:
            old, name = primary_key
            stmts.append(
                f"ALTER TABLE {qualified} DROP CONSTRAINT {q(old.name)}, "
                f"ADD CONSTRAINT {q(name)} PRIMARY KEY ({', '.join(q(c) for c in old.columns)})"
            )
        stmts += [f"DROP INDEX {self.qualified(namespace, index.name)}" for index in drop]
        stmts += [self._create_index_sql(namespace, table, index) for index in create]
        return stmts

    def primary_key_note(self) -> str:
        return "the key's index is built anew (the table is not copied), under a lock that blocks reads and writes"

    def add_column_sql(self, qualified_table: str, column_def: str) -> str:
        return f"ALTER TABLE {qualified_table} ADD COLUMN {column_def}"

    # -- disposal --------------------------------------------------------------
    def dispose_batch(self, table, *, key_low, key_high, cutoff, holds_at) -> DisposedRange:
        """One statement: the range's expired rows read once, the unheld ones deleted, both counted.

        The base version reads the range three times (two counts of about
        25 ms each around a delete of about 50 ms, for a batch of 5,000 in a
        range of 20,000 rows). Here the range's expired rows are read once
        into a MATERIALIZED CTE; the hold check (``table.unheld_sql`` on
        alias ``a``) filters that CTE, aliased ``a``, in a WHERE, where the
        planner makes its NOT EXISTS anti-joins; the DELETE takes the unheld rows by
        ctid (one TID scan, as the move statement does, with the key kept as
        a filter) and the counts come from the CTEs, under the statement's one
        snapshot. A row another transaction changed or deleted since that
        snapshot is skipped by the ctid recheck, so deleted plus left falls
        short of the count before and the caller rolls the batch back.

        The range is read by its key alone (``OFFSET 0`` keeps the expiry
        filter out of that scan): with both conditions in one scan the
        planner ANDed the key range's bitmap with one of every expired row of
        the table from the retention index, a read of the whole index for
        each batch (17 of the statement's 65 ms on 2,000,000 rows, growing
        with the table).
        """
        q = self.quote
        rng, rng_params = table.range_sql(key_low, key_high)
        # The hold check filters the CTE aliased ``a`` (below).
        unheld_sql, unheld_params = table.unheld_sql(holds_at, "a")
        pk = [q(c) for c in table.pk]
        pk_a = ", ".join(f"a.{c}" for c in pk)
        match = " AND ".join(f"a.{c} = f.{c}" for c in pk)
        sql = (
            f"WITH c AS MATERIALIZED (SELECT * FROM (SELECT a.ctid AS __tid, a.* FROM {table.qualified} a "
            f"WHERE {rng} OFFSET 0) a WHERE {table.col('retention_until')} < %s), "
            f"f AS MATERIALIZED (SELECT a.__tid, {pk_a} FROM c a WHERE {unheld_sql}), "
            f"d AS (DELETE FROM {table.qualified} a USING f "
            f"WHERE a.ctid = ANY(ARRAY(SELECT __tid FROM f)) AND a.ctid = f.__tid AND {match} "
            f"RETURNING {pk_a}) "
            f"SELECT n.before, n.free, {', '.join(f'd.{c}' for c in pk)} "
            f"FROM (SELECT (SELECT COUNT(*) FROM c) AS before, (SELECT COUNT(*) FROM f) AS free) n "
            f"LEFT JOIN d ON true"
        )
        with self.connection.cursor() as cur:
            cur.execute(sql, [*rng_params, cutoff, *unheld_params])
            rows = cur.fetchall()
        before, free = int(rows[0][0]), int(rows[0][1])
        keys = [tuple(row[2:]) for row in rows if row[2] is not None]
        return DisposedRange(keys, before, before - free)

    def key_text_sql(self, columns: list[tuple[str, str, int | None]]) -> tuple[str, list]:
        pieces, params = [], []
        # A decimal prints with its column's scale already.
        for i, (col, generic, _scale) in enumerate(columns):
            if i:
                pieces.append("%s")
                params.append("\t")
            if generic == "date":
                pieces.append(f"to_char({col}, 'YYYY-MM-DD')")
            elif generic == "datetime":
                # CAST prints 10:00:00.12; Python's isoformat .120000 (and
                # no fraction at all when it is zero).
                pieces.append(
                    f"to_char({col}, 'YYYY-MM-DD HH24:MI:SS') || CASE WHEN date_trunc('second', {col}) = {col} "
                    f"THEN '' ELSE to_char({col}, '.US') END"
                )
            elif generic == "bool":
                pieces.append(f"CASE WHEN {col} THEN 'true' ELSE 'false' END")
            elif generic == "binary":
                pieces.append(f"encode({col}, 'hex')")
            elif generic == "text":
                pieces.append(f"REPLACE(REPLACE(REPLACE(CAST({col} AS text), %s, %s), %s, %s), %s, %s)")
                params += ["\\", "\\\\", "\t", "\\t", "\n", "\\n"]
            else:
                pieces.append(f"CAST({col} AS text)")
        return " || ".join(pieces), params

    def text_cast_sql(self, expr: str) -> str:
        return f"CAST({expr} AS text)"

    def prepare_governance_schema(self, schema: str, tables: list[str], own_apps: list[str]) -> list[str]:
        # governance/archive_schema.py says what and why; here, how on PostgreSQL.
        qn = self.quote
        with transaction.atomic(using=self.alias), self.connection.cursor() as cur:
            # Created only when missing: a DBA may have created it for a role
            # without CREATE on the database.
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
            if cur.fetchone() is None:
                cur.execute(f"CREATE SCHEMA {qn(schema)}")
            moved = _bring_history(cur, qn, schema, own_apps)
            for table in tables:
                if not _exists(cur, OLD_SCHEMA, table):
                    continue
                if _exists(cur, schema, table):
                    raise GovernanceSchemaConflict(
                        f"{table} exists in both {OLD_SCHEMA} and {schema}: keep the one holding the archive's rows "
                        f"and drop the other, then run migrate --database archive again"
                    )
                cur.execute(f"ALTER TABLE {qn(OLD_SCHEMA)}.{qn(table)} SET SCHEMA {qn(schema)}")
                moved.append(table)
            cur.execute(
                "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = %s::regnamespace",
                [TRIGGER_FUNCTION, OLD_SCHEMA],
            )
            if moved and cur.fetchone() and not _function_exists(cur, schema):
                cur.execute(f"ALTER FUNCTION {qn(OLD_SCHEMA)}.{qn(TRIGGER_FUNCTION)}() SET SCHEMA {qn(schema)}")
            # Whoever could read a moved table (the read-only role) must still
            # reach it: SELECT came along with the table, USAGE on its new schema
            # did not.
            cur.execute(
                "SELECT DISTINCT a.grantee::regrole::text FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
                "WHERE c.relnamespace = %s::regnamespace AND a.privilege_type = 'SELECT' AND a.grantee <> 0 "
                "AND a.grantee <> c.relowner",
                [schema],
            )
            for (role,) in cur.fetchall():
                cur.execute(f"GRANT USAGE ON SCHEMA {qn(schema)} TO {role}")
        return moved

    def refuse_delete_trigger_sql(self, table: str, name: str, message: str) -> list[str]:
        # (TRUNCATE is not a row delete; it needs table ownership, which the
        # application role should not have in production: docs/disposal.md.)
        q = self.quote
        return [
            "CREATE OR REPLACE FUNCTION governance_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
            "BEGIN RAISE EXCEPTION '%: DELETE refused on %', TG_ARGV[0], TG_TABLE_NAME "
            "USING ERRCODE = 'insufficient_privilege'; END $fn$",
            f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}",
            f"CREATE TRIGGER {q(name)} BEFORE DELETE ON {q(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION governance_refuse_delete('{message}')",
        ]

    def drop_trigger_sql(self, table: str, name: str, table_exists: bool) -> list[str]:
        # A trigger is named on its table, which must exist.
        return [f"DROP TRIGGER IF EXISTS {self.quote(name)} ON {self.quote(table)}"] if table_exists else []

    def draws_ids_under_head_lock(self) -> bool:
        return True

    def take_chain_head_sql(
        self, *, head_table: str, name: str, head_hash: str, last_event_id: str, head_id: str, guard_sql: str | None
    ) -> str:
        """Take the audit chain head's row lock and draw the next event id under it; one row or none.

        An upsert: it creates the head after a flush, and otherwise locks it
        as FOR UPDATE would, returning (head id, head hash, next event id).
        The id comes from the event table's sequence under the lock, so ids
        grow in chain order. (The upsert draws a value from the head table's
        own id sequence each time, a bigint nobody reads.) ``guard_sql``, an
        UPDATE, runs first in the statement, before the head is locked (the
        upsert's row exists only once its EXISTS test has run the guard);
        when it changed no row the statement returns none. Parameters: the
        guard's, the chain's name, the genesis hash, the event table's name
        and its id column's.
        """
        with_guard, only_if = "", ""
        if guard_sql is not None:
            with_guard = f"WITH guard AS ({guard_sql} RETURNING 1) "
            only_if = " WHERE EXISTS (SELECT 1 FROM guard)"
        return (
            f"{with_guard}INSERT INTO {head_table} ({name}, {head_hash}, {last_event_id}) "
            f"SELECT %s, %s, NULL{only_if} ON CONFLICT ({name}) DO UPDATE SET {name} = EXCLUDED.{name} "
            f"RETURNING {head_id}, {head_hash}, nextval(pg_get_serial_sequence(%s, %s))"
        )

    def insert_then_sql(self, insert_sql: str, then_sql: str) -> str:
        """One statement running ``insert_sql`` and then ``then_sql`` (its row count is ``then_sql``'s)."""
        return f"WITH appended AS ({insert_sql}) {then_sql}"

    # -- control-plane statements (governance.rowsql) ----------------------------
    def writes_returning(self) -> bool:
        return True

    def selects_updated_rows(self) -> bool:
        return True

    def select_updated_sql(self, update_sql: str, columns: str, joins: str) -> str:
        """``update_sql``'s changed rows, as table alias t0, selected as ``columns`` with ``joins``: one statement."""
        return f"WITH t0 AS ({update_sql} RETURNING *) SELECT {columns} FROM t0 {joins}"

    # -- search ----------------------------------------------------------------
    def table_names(self, schema: str) -> set[str]:
        with self.connection.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema])
            return {row[0] for row in cur.fetchall()}

    def contains_sql(self, column: str) -> str:
        return f"{column} ILIKE %s ESCAPE '\\'"

    @contextmanager
    def query_time_limit(self, timeout_ms: int) -> Iterator[None]:
        # SET LOCAL statement_timeout (set_config(..., true), so the value is
        # a parameter) in a transaction: it ends with the query's transaction
        # and never leaks to the next request on a persistent connection.
        try:
            with transaction.atomic(using=self.alias):
                with self.connection.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)])
                yield
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == QUERY_CANCELED:
                raise QueryTimeout(timeout_ms) from exc
            raise

    # On the replica: the delay of the last transaction replayed, but only
    # while WAL received is waiting to be replayed. On an idle primary
    # nothing new arrives and now() - pg_last_xact_replay_timestamp() grows
    # without any lag: received == replayed means caught up (0). NULL
    # receive position: no WAL receiver (replication broken or a standby fed
    # from an archive only), unknown. Not in recovery: not a replica.
    REPLICA_LAG_ON_REPLICA = (
        "SELECT pg_is_in_recovery(), "
        "CASE WHEN pg_last_wal_receive_lsn() IS NULL THEN NULL "
        "WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "
        "ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END, "
        "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), "
        "pg_is_wal_replay_paused()"
    )
    # On the primary: pg_stat_replication's row for the standby (by its
    # application_name). replay_lag goes NULL once a standby has caught up
    # and the primary is idle: replayed up to the current position is 0.
    # No row: the standby is not connected. Reading another session's
    # positions needs pg_monitor (or superuser); without it they are NULL.
    REPLICA_LAG_ON_PRIMARY = (
        "SELECT CASE WHEN replay_lsn >= pg_current_wal_lsn() THEN 0 "
        "ELSE EXTRACT(EPOCH FROM replay_lag) END, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), state "
        "FROM pg_stat_replication WHERE application_name = %s"
    )

    def replica_lag(self, cursor, *, on_primary: bool, replica: str) -> ReplicaLag:
        if on_primary:
            cursor.execute(self.REPLICA_LAG_ON_PRIMARY, [replica])
            rows = cursor.fetchall()
            if not rows:
                return ReplicaLag(None, f"no standby named {replica!r} is connected (pg_stat_replication)")
            seconds = [r[0] for r in rows]
            if any(s is None for s in seconds):
                return ReplicaLag(
                    None, f"{replica}: replay position unknown (state {rows[0][2]}; the login needs pg_monitor)"
                )
            behind = max(int(r[1] or 0) for r in rows)
            # replay_lag is sampled as replay passes the positions the primary
            # timed: while the standby's replay stalls it keeps its last value
            # (it does not grow). The WAL not yet replayed does: the watch's
            # queue bound (KB) catches a stalled standby from the primary.
            return ReplicaLag(
                float(max(seconds)), f"{replica}: {behind:,} bytes of WAL not replayed", queue_kb=-(-behind // 1024)
            )
        cursor.execute(self.REPLICA_LAG_ON_REPLICA)
        in_recovery, seconds, behind, paused = cursor.fetchone()
        if not in_recovery:
            return ReplicaLag(None, f"{replica} is not a standby (pg_is_in_recovery() is false)")
        if seconds is None:
            return ReplicaLag(None, f"{replica} receives no WAL (no WAL receiver: replication broken?)")
        detail = f"{replica}: {int(behind or 0):,} bytes of WAL received, not replayed"
        return ReplicaLag(float(seconds), detail + ("; replay is paused" if paused else ""))

    def create_readonly_role(
        self, role: str, password: str | None, namespaces: list[str], tables: list[str]
    ) -> tuple[bool, list[str]]:
        # A read-only transaction default is not enough (any session can
        # switch it off); a missing privilege cannot be switched on from
        # inside a session. TEMPORARY is taken from PUBLIC on the archive
        # database (it is ours) and kept by the owner, so the role cannot
        # create temp tables (docs/search.md).
        q = self.quote
        granted = []
        with transaction.atomic(using=self.alias), self.connection.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            created = cur.fetchone() is None
            verb = "CREATE" if created else "ALTER"
            attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            if password:
                # CREATE ROLE takes no parameters (server-side binding cannot
                # bind $1 there): the password is quoted by the client with
                # the connection's own rules and sent without parameters, so
                # no character of it is read as a placeholder.
                statement = psql.SQL(f"{verb} ROLE {q(role)} {attributes} PASSWORD {{}}").format(psql.Literal(password))
                cur.execute(statement.as_string(self.connection.connection))
            else:
                cur.execute(f"{verb} ROLE {q(role)} {attributes}")
            # Belt and braces only: the missing privileges are what refuse writes.
            cur.execute(f"ALTER ROLE {q(role)} SET default_transaction_read_only = on")
            cur.execute("SELECT current_database(), current_schema()")
            database, schema = cur.fetchone()
            cur.execute(f"GRANT CONNECT ON DATABASE {q(database)} TO {q(role)}")
            cur.execute(f"GRANT TEMPORARY ON DATABASE {q(database)} TO CURRENT_USER")
            cur.execute(f"REVOKE TEMPORARY ON DATABASE {q(database)} FROM PUBLIC")
            cur.execute(f"REVOKE TEMPORARY ON DATABASE {q(database)} FROM {q(role)}")
            cur.execute("SELECT has_database_privilege(%s, %s, 'TEMPORARY')", [role, database])
            if cur.fetchone()[0]:
                raise PermissionError(
                    f"{role} can still create temp tables in {database} (through another role it is a member of, "
                    "or it is a superuser): revoke TEMPORARY from that role, or use a role without memberships"
                )
            for namespace in namespaces:
                cur.execute(f"GRANT USAGE ON SCHEMA {q(namespace)} TO {q(role)}")
                cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {q(namespace)} TO {q(role)}")
                cur.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q(namespace)} GRANT SELECT ON TABLES TO {q(role)}")
            cur.execute(f"GRANT USAGE ON SCHEMA {q(schema)} TO {q(role)}")
            for table in tables:
                if self.table_exists(schema, table):
                    cur.execute(f"GRANT SELECT ON TABLE {self.qualified(schema, table)} TO {q(role)}")
                    granted.append(table)
        return created, granted


# The archive's own tables before they had a schema of their own, and what
# comes along with them (PostgresBackend.prepare_governance_schema).
RECORDER_TABLE = "django_migrations"
TRIGGER_FUNCTION = "governance_refuse_delete"
OLD_SCHEMA = "public"


def _exists(cur, schema: str, table: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = %s::regnamespace AND relkind IN ('r', 'p')",
        [table, schema],
    )
    return cur.fetchone() is not None


def _function_exists(cur, schema: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = %s::regnamespace", [TRIGGER_FUNCTION, schema]
    )
    return cur.fetchone() is not None


def _bring_history(cur, qn, schema: str, ours: list[str]) -> list[str]:
    """Move (or copy, when shared) this archive's django_migrations from public; returns it if it came."""
    if not _exists(cur, OLD_SCHEMA, RECORDER_TABLE) or _exists(cur, schema, RECORDER_TABLE):
        return []
    old, new = f"{qn(OLD_SCHEMA)}.{qn(RECORDER_TABLE)}", f"{qn(schema)}.{qn(RECORDER_TABLE)}"
    cur.execute(f"SELECT DISTINCT app FROM {old}")
    recorded = {app for (app,) in cur.fetchall()}
    if "governance" not in recorded:
        return []  # another application's history, never this archive's
    if recorded <= set(ours):
        cur.execute(f"ALTER TABLE {old} SET SCHEMA {qn(schema)}")
        return [RECORDER_TABLE]
    # Another application records its migrations here too: copy the rows of
    # this project's apps and leave the table to it. LIKE ... INCLUDING ALL
    # gives the copy its own identity; the ids are kept and it restarts after them.
    cur.execute(f"CREATE TABLE {new} (LIKE {old} INCLUDING ALL)")
    cur.execute(f"INSERT INTO {new} OVERRIDING SYSTEM VALUE SELECT * FROM {old} WHERE app = ANY(%s)", [ours])
    cur.execute(
        f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE((SELECT max(id) FROM {new}), 0) + 1, false)",
        [new],
    )
    return [RECORDER_TABLE]
