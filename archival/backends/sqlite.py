"""SQLite: attached files stand in for schemas.

The archive connection ATTACHes every SQLite source file (as ``src_<alias>``)
and one archive namespace file per source database (as ``archive_<alias>``),
so a batch moves with INSERT ... SELECT + DELETE in one transaction. That
transaction is atomic across the files only in a rollback-journal mode
(DELETE/TRUNCATE with synchronous FULL, set in settings): WAL is not.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from archival.backends.base import (
    Backend,
    Column,
    ForeignKey,
    SchemaError,
    TableInfo,
    generic_type,
)

SQLITE_ENGINES = {"django.db.backends.sqlite3", "governance.db.sqlite_readonly"}


def source_attach_name(alias: str) -> str:
    return f"src_{alias}"


def namespace_for(alias: str) -> str:
    return f"{settings.ARCHIVAL['NAMESPACE_PREFIX']}{alias.lower()}"


def namespace_file(archive_name: str, alias: str) -> Path:
    """The archive namespace file for one source database, beside the archive file."""
    archive = Path(str(archive_name).removeprefix("file:").split("?")[0])
    return archive.with_name(f"{archive.stem}__{alias.lower()}{archive.suffix or '.sqlite3'}")


def attach_namespaces(sender, connection, **kwargs) -> None:
    """connection_created hook: ATTACH sources and namespaces to the archive connection."""
    if connection.vendor != "sqlite" or connection.alias not in {
        "archive",
        "archive_readonly",
    }:
        return
    archive_name = connection.settings_dict["NAME"]
    if str(archive_name).startswith(":memory:") or "mode=memory" in str(archive_name):
        return
    try:
        _attach(connection, archive_name)
    except Exception:
        # A source file locked past the busy timeout: without its ATTACH the
        # connection is not the archive connection; the next use connects again.
        connection.connection.close()
        connection.connection = None
        raise


def _attach(connection, archive_name) -> None:
    readonly = connection.alias == "archive_readonly"
    from django.db import connections

    cur = connection.connection.cursor()
    attached = {row[1] for row in cur.execute("PRAGMA database_list")}
    for alias in settings.SOURCE_DATABASES:
        ns = namespace_for(alias)
        path = namespace_file(archive_name, alias)
        if ns not in attached:
            if readonly:
                if path.exists():
                    cur.execute("ATTACH DATABASE ? AS " + _q(ns), [f"file:{path}?mode=ro"])
            else:
                cur.execute("ATTACH DATABASE ? AS " + _q(ns), [str(path)])
                cur.execute(f"PRAGMA {_q(ns)}.journal_mode=DELETE")
                cur.execute(f"PRAGMA {_q(ns)}.synchronous=FULL")
                cur.execute(f"PRAGMA {_q(ns)}.cache_size=-65536")
        if readonly:
            continue
        src_settings = connections[alias].settings_dict
        # A streamed source is worked through its own connection; attaching it
        # here too would make every archive transaction lock its file.
        if src_settings["ENGINE"] not in SQLITE_ENGINES or alias in settings.ARCHIVAL["STREAMING_SOURCES"]:
            continue
        name = source_attach_name(alias)
        if name not in attached:
            cur.execute("ATTACH DATABASE ? AS " + _q(name), [str(src_settings["NAME"])])
            cur.execute(f"PRAGMA {_q(name)}.journal_mode=DELETE")
            cur.execute(f"PRAGMA {_q(name)}.synchronous=FULL")
            cur.execute(f"PRAGMA {_q(name)}.cache_size=-65536")
    cur.close()


def use_wal_for_control(sender, connection, **kwargs) -> None:
    """connection_created hook: put the control database in WAL mode once.

    The mode is stored in the file, so only the first connection switches it;
    later connections only read it (switching needs an exclusive lock, which a
    busy control database would refuse at connect time).
    """
    if connection.vendor != "sqlite" or connection.alias != "default":
        return
    cur = connection.connection.cursor()
    try:
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
    finally:
        cur.close()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteBackend(Backend):
    vendor = "sqlite"

    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # SQLite waits for another connection's lock on its busy timeout, at
        # BEGIN IMMEDIATE for a batch and at the first read of a count: the
        # PRAGMA must precede them. (PRAGMA takes no parameters; the number
        # is an int from a validated setting.) SQLite has no statement
        # timeout: with the file locked for us, a statement only computes.
        return [(f"PRAGMA busy_timeout = {int(lock_timeout_ms)}", [])]

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        return []

    def schema_exists(self, schema: str) -> bool:
        with self.connection.cursor() as cur:
            cur.execute("PRAGMA database_list")
            return schema in {row[1] for row in cur.fetchall()}

    def table_exists(self, schema: str, table: str) -> bool:
        if not self.schema_exists(schema):
            return False
        with self.connection.cursor() as cur:
            cur.execute(
                f"SELECT 1 FROM {self.quote(schema)}.sqlite_master WHERE type = 'table' AND name = %s",
                [table],
            )
            return cur.fetchone() is not None

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # SQLite keeps no row statistics unless ANALYZE ran; the largest
        # rowid is one b-tree descent and, for tables that rarely lose rows
        # from the end, close to the count. WITHOUT ROWID tables have none.
        try:
            with self.connection.cursor() as cur:
                cur.execute(f"SELECT MAX(rowid) FROM {self.qualified(schema, table)}")
                row = cur.fetchone()
        except DatabaseError:
            return None
        return int(row[0] or 0) if row else None

    def describe(self, schema: str, table: str) -> TableInfo:
        with self.connection.cursor() as cur:
            # One catalog read answers "is the schema attached", "is it a
            # table (not a view)" and "which columns" (pragma_table_list:
            # SQLite 3.37+); the name compares exactly, as on the other engines.
            cur.execute(
                'SELECT p.name, p.type, p."notnull", p.pk FROM pragma_table_list(%s) t, '
                "pragma_table_info(t.name, t.schema) p "
                "WHERE t.schema = %s AND t.name = %s AND t.type = 'table' ORDER BY p.cid",
                [table, schema, table],
            )
            rows = cur.fetchall()
            if not rows:
                raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
            cur.execute(
                'SELECT "from", "table", "to" FROM pragma_foreign_key_list(%s, %s)',
                [table, schema],
            )
            fks = [ForeignKey(r[0], r[1], r[2]) for r in cur.fetchall() if r[2]]
        columns = []
        pk_pos = []
        for name, db_type, notnull, pk in rows:
            db_type = db_type or "TEXT"
            columns.append(Column(name, db_type, generic_type(db_type), not notnull, _size(db_type)))
            if pk:
                pk_pos.append((pk, name))
        pk_cols = [name for _, name in sorted(pk_pos)]
        return TableInfo(schema, table, columns, pk_cols, fks)

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(
                f'SELECT m.name, f."from", f."to" FROM {self.quote(schema)}.sqlite_master m, '
                'pragma_foreign_key_list(m.name, %s) f WHERE m.type = \'table\' AND f."table" = %s AND f."to" IS NOT NULL',
                [schema, table],
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # date(x, '+N years') turns 29 February into 1 March; clamp it back to
        # 28 February like PostgreSQL, MariaDB and SQL Server do. This runs for
        # every archived row, so a plain 'YYYY-MM-DD' text that is not 29
        # February costs one date(): for it date(x, '+N years') is the exact
        # answer. Anything else takes the full form on date(x): a time of day
        # (the modifier rounds 23:59:59.9995 up to the next day), an offset
        # (it moves the date), a Julian day number, and 29 February itself.
        day = f"date({expr})"
        shifted = f"date({day}, '+' || %s || ' years')"
        full = (
            f"(CASE WHEN substr({day}, 6, 5) = '02-29' "
            f"THEN date({shifted}, '-' || (strftime('%%m', {shifted}) = '03') || ' days') ELSE {shifted} END)"
        )
        plain = f"length({expr}) = 10 AND substr({expr}, 5, 1) = '-' AND substr({expr}, 6, 5) <> '02-29'"
        return f"(CASE WHEN {plain} THEN date({expr}, '+' || %s || ' years') ELSE {full} END)"

    def as_date_sql(self, expr: str) -> str:
        return f"date({expr})"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"({left} IS {right})"

    generic_types = {
        "int": "INTEGER",
        "bigint": "BIGINT",
        "float": "REAL",
        "bool": "BOOL",
        "date": "DATE",
        "datetime": "DATETIME",
        "binary": "BLOB",
    }

    def timestamp_type(self) -> str:
        return "DATETIME"

    def create_namespace(self, namespace: str) -> None:
        # Namespaces are attached at connect time (attach_namespaces).
        if not self.schema_exists(namespace):
            raise SchemaError(f"archive namespace {namespace} is not attached to {self.alias}")


def _size(db_type: str) -> tuple[int | None, int | None]:
    if "(" not in db_type:
        return (None, None)
    inner = db_type[db_type.index("(") + 1 : db_type.rindex(")")]
    parts = [p.strip() for p in inner.split(",")]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        return (None, None)
    return (nums[0], nums[1] if len(nums) > 1 else None)
