"""Create and evolve archive tables from the source's live columns.

An archive table has the source's columns plus the archive metadata, the
source primary key as its PRIMARY KEY (invariant 2: at most one copy of a
source row), and the secondary indexes disposal and search need. A new source column
is added; a changed type stops the table (silently converting archived data
would rewrite history).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext

from archival.backends import ArchiveIndex, Column, SchemaError, TableInfo
from archival.engine.errors import TableError
from archival.engine.spec import META_COLUMNS, TableSpec
from archival.engine.txn import write_transaction


def _index_name(table: str, suffix: str) -> str:
    name = f"{table}_{suffix}"
    if len(name) > 60:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{table[:40]}_{digest}_{suffix}"[:60]
    return name


def ensure_archive_table(spec: TableSpec, *, dry_run: bool = False, in_transaction: bool = False) -> list[str]:
    """Create or extend the archive table; return the DDL run (or that would run).

    ``in_transaction``: run the DDL in the archive connection's open
    transaction (a same-server batch's, on engines whose DDL is transactional)
    instead of one of its own.
    """
    arc = spec.archive
    ns, table = spec.namespace, spec.config.table_name
    statements: list[str] = []
    # describe() raises SchemaError for a missing table: one catalog read
    # answers both "does it exist" and "does it still match the source"; the
    # namespace is looked at only when the table is not there.
    try:
        existing = arc.describe_columns(ns, table)
    except SchemaError:
        if not arc.creates_archive_tables and not dry_run:
            raise TableError(_not_provisioned(spec, "does not exist")) from None
        if not arc.schema_exists(ns):
            missing = arc.namespace_missing(ns, spec.config.source_db)
            if missing:
                raise TableError(missing) from None
            statements.append(f"CREATE SCHEMA {arc.quote(ns)}")
            if not dry_run:
                arc.create_namespace(ns)
        deferred = not dry_run and indexes_after_batches(spec)
        statements += _create_statements(spec, with_indexes=not deferred)
        spec.indexes_pending = deferred
    else:
        statements += _alter_statements(spec, existing)
        if statements and not arc.creates_archive_tables and not dry_run:
            raise TableError(_not_provisioned(spec, "lacks columns the source has now"))
        if arc.creates_archive_tables:
            # Indexes a run that created the table did not get to build (it
            # stopped or crashed after its batches): built before more rows come.
            statements += _missing_index_statements(spec)
    if not dry_run and statements:
        # One transaction for the table and its indexes (one commit, and no
        # half-made archive table after a crash where DDL is transactional).
        with nullcontext() if in_transaction else write_transaction(arc.alias), arc.connection.cursor() as cur:
            for sql in statements:
                if sql.startswith("CREATE SCHEMA"):
                    continue
                cur.execute(sql)
    return statements


# From this many rows to move, a new archive table gets its secondary indexes
# after its batches; a smaller one gets them with the table. Building an index
# is a fixed cost per table (about 3 ms on PostgreSQL, 7 ms for MariaDB's
# ALTER TABLE ... ADD INDEX) that a table of a few thousand rows does not earn
# back, while from a few batches on, one sort of the moved rows beats an index
# entry placed per row. Measured on PostgreSQL (bench/RESULTS.md, 2026-12-07
# evening; engine seconds, medians of alternated pairs, indexes always after
# the batches against this rule): the 120-table set at 1,000,000 rows (115
# tables of about 1,000 rows to move) 8.62 -> 7.46 s; at 12,000,000 rows
# (about 12,000 each) 76.7 -> 78.4 s with 10,000 (within the noise), but
# 80.3 -> 92.5 s with 50,000. SQLite and MariaDB: within their noise.
INDEXES_AFTER_ROWS = 10_000


def indexes_after_batches(spec: TableSpec) -> bool:
    """Whether a new archive table is created without its secondary indexes, built after its batches.

    For a table about to receive many rows (Mark's count), or whose count is
    not known yet (a table made at Mark, before its count: MariaDB, SQL
    Server, streamed moves): one sort of the moved rows instead of an index
    entry placed per row, and no reader needs them before the table's first
    rows are verified. A small table gets them with the table
    (``INDEXES_AFTER_ROWS``; measured on PostgreSQL, where the first batch
    makes the table).
    """
    return spec.eligible_rows is None or spec.eligible_rows >= INDEXES_AFTER_ROWS


def build_pending_indexes(spec: TableSpec) -> list[str]:
    """Build the secondary indexes of an archive table this process created; return the DDL run.

    Called once the table's batches are done (before Verify). Nothing to do
    for a table that existed before the run: its indexes were checked when
    it was opened (``ensure_archive_table``).
    """
    if not spec.indexes_pending:
        return []
    statements = _missing_index_statements(spec)
    if statements:
        with write_transaction(spec.archive.alias), spec.archive.connection.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    spec.indexes_pending = False
    return statements


def _missing_index_statements(spec: TableSpec) -> list[str]:
    """CREATE INDEX statements for the planned secondary indexes the archive table lacks (by name)."""
    arc = spec.archive
    ns, table = spec.namespace, spec.config.table_name
    have = {index.name for index in arc.archive_indexes(ns, table)}
    missing = [i for i in planned_indexes(arc, table, indexed_contract_column(spec.config)) if i.name not in have]
    return arc.reshape_archive_sql(ns, table, drop=[], create=missing, primary_key=None) if missing else []


def _not_provisioned(spec: TableSpec, what: str) -> str:
    """The error for an archive table this login may not create or alter: who provisions it, and how."""
    return (
        f"archive table {spec.archive_table()} {what}, and archive tables on {spec.archive.alias} are "
        f"provisioned by a DBA (the runtime login has no DDL right): {spec.archive.provisioning_hint(spec.config)}"
    )


def created_by_first_batch(spec: TableSpec) -> bool:
    """True when the archive table is created inside the table's first batch transaction.

    Same-server moves by the engine's SQL on an engine whose DDL is
    transactional: the table appears with its first rows, in one commit.
    Where DDL commits implicitly, where stored procedures move the batches
    (they create nothing), and for streamed moves, the table is made at Mark,
    in a transaction of its own.
    """
    arc = spec.archive
    return spec.mode == "same_server" and not arc.moves_through_procedures() and arc.transactional_ddl()


def _column_sql(spec: TableSpec, col: Column, not_null: bool) -> str:
    arc = spec.archive
    typ = arc.archive_type(col, spec.source)
    return f"{arc.quote(col.name)} {typ}{' NOT NULL' if not_null else ''}"


# The secondary indexes of an archive table, each for the readers that need
# it (docs/archive-tables.md has the queries and the measurements):
# - retention_until: disposal's plan counts expired rows (and finds there are
#   none without reading the table); the retention report counts by week;
# - the contract column, where the table has one: the search page's exact
#   filter on it (a contract's rows, for a hold or a request).
# Everything else reads by the source key (the move, verify, the conflict
# check, disposal's batches, restore's key ranges, search's key order), which
# is the PRIMARY KEY. reference_date has no index: each batch paid for one
# and no frequent reader used it (restore's DATE_RANGE selection scans).
RETENTION_INDEX = "retention"
CONTRACT_INDEX = "contract"
KEY_CONSTRAINT = "src_key"


def key_constraint_name(table: str) -> str:
    """The name of the source-key constraint (the PRIMARY KEY; a UNIQUE constraint in older tables)."""
    return _index_name(table, KEY_CONSTRAINT)


def indexed_contract_column(config) -> str:
    """The column the contract index covers ("" where the table has none).

    A contract table's own key (the parent a CONTRACT_MATURITY config joins
    to) is its PRIMARY KEY already.
    """
    if config.hold_contract_column:
        return config.hold_contract_column
    return config.contract_reference_column if config.archival_logic == "CONTRACT_MATURITY" else ""


def index_name(arc, table: str, role: str) -> str:
    """The name of the index of ``role`` on ``table``: as the DBA's script names it where it provisions tables."""
    suffix = arc.provisioned_index_names.get(role)
    if suffix:
        # QUOTENAME refuses names over 128 characters (MSSQLBackend.name_errors refuses such configs).
        return f"ix_{table}_{suffix}"[:128]
    return _index_name(table, role)


def planned_indexes(arc, table: str, contract: str) -> list[ArchiveIndex]:
    """The secondary indexes an archive table of this shape has on ``arc``'s engine."""
    indexes = [ArchiveIndex(index_name(arc, table, RETENTION_INDEX), ("retention_until",))]
    if contract:
        indexes.append(ArchiveIndex(index_name(arc, table, CONTRACT_INDEX), (contract,)))
    indexes += [ArchiveIndex(index_name(arc, table, role), cols) for role, cols in arc.provisioned_extra_indexes]
    return indexes


def _create_statements(spec: TableSpec, *, with_indexes: bool = True) -> list[str]:
    arc = spec.archive
    q = arc.quote
    table = spec.config.table_name
    pk = set(spec.pk)
    cols = [_column_sql(spec, c, c.name in pk) for c in spec.info.columns]
    cols += [
        f"{q('archived_at')} {arc.timestamp_type()} NOT NULL",
        f"{q('archive_run_id')} BIGINT NOT NULL",
        f"{q('reference_date')} DATE NULL",
        f"{q('retention_until')} DATE NULL",
    ]
    # The source key as the PRIMARY KEY: invariant 2, and on InnoDB the
    # clustered index itself instead of a hidden row id plus a unique index.
    cols.append(f"CONSTRAINT {q(key_constraint_name(table))} PRIMARY KEY ({', '.join(q(c) for c in spec.pk)})")
    contract = indexed_contract_column(spec.config)
    indexes = planned_indexes(arc, table, contract)
    if with_indexes:
        return arc.archive_table_ddl(spec.namespace, table, cols, indexes)
    return arc.archive_table_ddl(spec.namespace, table, cols, [])


def _alter_statements(spec: TableSpec, existing: TableInfo) -> list[str]:
    arc = spec.archive
    have = {c.name: c for c in existing.columns}
    stmts = []
    for meta in META_COLUMNS:
        if meta not in have:
            raise TableError(
                f"archive table {spec.archive_table()} lacks column {meta}; it was not created by this tool"
            )
    for col in spec.info.columns:
        old = have.get(col.name)
        if old is None:
            stmts.append(arc.add_column_sql(spec.archive_table(), _column_sql(spec, col, False)))
            continue
        if arc.same_engine(spec.source):
            # As the archive declares it (SQL Server: rowversion is kept as binary(8)).
            same = _norm(old.db_type) == _norm(arc.archive_type(col, spec.source))
        else:
            same = old.generic == col.generic or {old.generic, col.generic} <= {
                "int",
                "bigint",
            }
        if not same:
            raise TableError(
                f"column {col.name} of {spec.label} changed type: source {col.db_type}, archive {old.db_type}; "
                "migrate the archive table deliberately (nothing was moved)"
            )
    return stmts


def _norm(db_type: str) -> str:
    return " ".join(db_type.lower().replace("character varying", "varchar").split())
