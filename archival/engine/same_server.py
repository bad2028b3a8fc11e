"""Same-server moves: one server-side transaction per batch, no row in Python.

The batch is the next ``n`` eligible keys after the cursor; its last key
``hi`` is read first (one row), then the rows in ``(cursor, hi]`` that are
eligible move, are counted, and the ledger row is written, all in one
transaction on the archive connection. PostgreSQL moves them in a single
statement (``WITH moved AS (DELETE ... RETURNING ...) INSERT``); SQLite (and
MariaDB) with ``INSERT ... SELECT`` + ``DELETE`` between ATTACHed files or
databases, atomic because the transaction spans both.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError
from django.utils import timezone

from archival import rowkeys
from archival.engine.archive_tables import ensure_archive_table
from archival.engine.errors import ArchiveConflict, ReconcileError
from archival.engine.faults import checkpoint
from archival.engine.spec import META_COLUMNS, TableSpec
from archival.engine.txn import write_transaction


@dataclass
class BatchOutcome:
    moved: int
    high: list | None  # last key moved (None: nothing was left)
    skipped_identical: int = 0
    # No eligible key was left after ``high`` when the batch ran: the caller
    # need not open another transaction to find nothing.
    exhausted: bool = False


def batch_bound(spec: TableSpec, cur, low, size: int) -> tuple[list | None, int]:
    """The next batch's key range: its last key (None when nothing is left) and its candidate count.

    The candidates are the next ``size`` keys after ``low`` that may be old
    enough to go (``TableSpec.candidates``), without the parent rule; the
    batch then moves those of them that are eligible. With the rule inside this ordered LIMIT, the planners
    evaluate it (one probe per child table per row) for every eligible row
    after ``low`` before they can sort and cut: on a contract table of
    240,000 rows with 21 child tables, 1.1-1.7 s a batch against 0.1 s for
    the bounded batch (EXPLAIN ANALYZE, PostgreSQL; bench/RESULTS.md). The
    batch may move fewer than ``size`` rows, or none; fewer than ``size``
    candidates means this was the last batch.
    """
    on = spec.archive
    pk_s = spec.q(on, "s", spec.pk)
    where, params = spec.candidates(on, low=low)
    inner = (
        f"SELECT {', '.join(pk_s)} FROM {spec.from_clause(on)} WHERE {where} ORDER BY {rowkeys.order_by(pk_s)} LIMIT %s"
    )
    alias_cols = [on.quote(c) for c in spec.pk]
    # The window counts the candidates before the outer LIMIT keeps the last one.
    sql = (
        f"SELECT {', '.join(alias_cols)}, COUNT(*) OVER () FROM ({inner}) b "
        f"ORDER BY {rowkeys.order_by(alias_cols, descending=True)} LIMIT 1"
    )
    cur.execute(sql, [*params, size])
    row = cur.fetchone()
    return (list(row[:-1]), row[-1]) if row else (None, 0)


def _archive_count_sql(spec: TableSpec, run_id: int, low, high) -> tuple[str, list]:
    """The COUNT of this run's rows of ``(low, high]`` present in the archive table (SQL and parameters)."""
    on = spec.archive
    rng, params = rowkeys.key_range(spec.q(on, "a", spec.pk), low, high)
    sql = f"SELECT COUNT(*) FROM {spec.archive_table()} a WHERE a.{on.quote('archive_run_id')} = %s AND {rng}"
    return sql, [run_id, *params]


def _insert_columns(spec: TableSpec) -> str:
    q = spec.archive.quote
    return ", ".join([q(c) for c in spec.columns] + [q(m) for m in META_COLUMNS])


def _insert_select(spec: TableSpec, run_id: int, years: int, low, high, skip_existing: bool) -> tuple[str, list]:
    on = spec.archive
    now = timezone.now()
    ref = on.as_date_sql(spec.reference_expr(on))
    where, params = spec.selection(on, low=low, high=high)
    cols = ", ".join(spec.q(on, "s", spec.columns))
    extra = ""
    if skip_existing:
        match = " AND ".join(f"a.{on.quote(c)} = s.{on.quote(c)}" for c in spec.pk)
        extra = f" AND NOT EXISTS (SELECT 1 FROM {spec.archive_table()} a WHERE {match})"
    # Every backend's year arithmetic takes the raw expression (SQLite's
    # skips a date() per row that way).
    retention = on.add_years_sql(spec.reference_expr(on))
    sql = (
        f"INSERT INTO {spec.archive_table()} ({_insert_columns(spec)}) "
        f"SELECT {cols}, %s, %s, {ref}, {retention} "
        f"FROM {spec.from_clause(on)} WHERE {where}{extra}"
    )
    ts = on.param(now)
    # A backend's clamped year arithmetic may name the years more than once.
    return sql, [ts, run_id, *[years] * retention.count("%s"), *params]


def _delete(spec: TableSpec, low, high) -> tuple[str, list]:
    """DELETE the eligible rows of ``(low, high]`` from the source, by direct predicates.

    The key-range conjuncts let every engine range-scan the primary key; the
    contract's maturity is checked with EXISTS so the DELETE names one table.
    """
    on = spec.archive
    src = spec.source_table(on)
    rng, rng_params = rowkeys.key_range(spec.q(on, "s", spec.pk), low, high)
    par, par_params = spec.parent_rule(on, at_mark=False)
    q = on.quote
    if spec.is_contract:
        elig = (
            f"EXISTS (SELECT 1 FROM {spec.contract_table(on)} c WHERE c.{q(spec.config.contract_key_column)} = "
            f"s.{q(spec.config.contract_reference_column)} AND {spec.date_before(on)})"
        )
    else:
        elig = spec.date_before(on)
    if on.delete_joins_contract():
        if spec.is_contract:
            # MariaDB turns the EXISTS into a semi-join driven from the
            # contract's date index and rescans every eligible row per batch;
            # a multi-table DELETE with the source pinned first range-scans
            # the key instead (PERFORMANCE.md).
            elig = spec.date_before(on)
        target = spec.from_clause(on)
    else:
        target = f"{src} AS s"
    sql = f"{on.delete_sql('s', target)} WHERE {elig} AND {rng} AND {par}"
    return sql, [spec.threshold_param(on), *rng_params, *par_params]


def _one_statement_move(spec: TableSpec, run_id: int, years: int, low, size: int, high=None) -> tuple[str, list]:
    """One statement: pick the batch, delete it, insert it, report its last key and counts.

    For backends that ``moves_in_one_statement``. The batch is chosen,
    deleted and inserted under one snapshot; the statement hands Python one
    row (the last key and two counts), or none when nothing eligible is left
    after ``low``. The batch carries each row's reference date, so the
    DELETE joins nothing but the batch (the contract was read under the
    same snapshot). ``high`` bounds the batch from above (a parent table's
    batch, see ``batch_bound``).
    """
    on = spec.archive
    pk_s = spec.q(on, "s", spec.pk)
    where, params = spec.selection(on, low=low, high=high)
    ref = on.as_date_sql(spec.reference_expr(on))
    batch_from = f"FROM {spec.from_clause(on)} WHERE {where} ORDER BY {rowkeys.order_by(pk_s)} LIMIT %s"
    sql = on.move_statement_sql(
        source=spec.source_table(on),
        batch_from=batch_from,
        key=spec.pk,
        reference=ref,
        columns=spec.columns,
        archive=spec.archive_table(),
        archive_columns=_insert_columns(spec),
    )
    return sql, [*params, size, on.param(timezone.now()), run_id, years]


def move_batch(spec: TableSpec, *, run_id: int, batch_no: int, low, size: int, record_ledger) -> BatchOutcome:
    """Move the next batch after ``low`` in one transaction; reconcile; record it in the ledger.

    Raises ArchiveConflict when an earlier run archived a row with the same key
    but other values, ReconcileError when counts disagree (both roll back).
    """
    try:
        return _move(
            spec,
            run_id=run_id,
            batch_no=batch_no,
            low=low,
            size=size,
            record_ledger=record_ledger,
            slow=False,
        )
    except IntegrityError:
        # A key is already in the archive: take the careful path, which skips
        # identical copies and refuses to touch rows whose copy differs.
        return _move(
            spec,
            run_id=run_id,
            batch_no=batch_no,
            low=low,
            size=size,
            record_ledger=record_ledger,
            slow=True,
        )


def _move(spec, *, run_id, batch_no, low, size, record_ledger, slow) -> BatchOutcome:
    on = spec.archive
    with write_transaction(on.alias):
        if not spec.archive_ready:
            # The archive table appears with its first rows (one commit); a
            # rollback takes both back (archive_tables.created_by_first_batch).
            ensure_archive_table(spec, in_transaction=True)
        with on.connection.cursor() as cur:
            outcome = _move_rows(spec, cur, run_id=run_id, batch_no=batch_no, low=low, size=size,
                                 record_ledger=record_ledger, slow=slow)  # fmt: skip
    spec.archive_ready = True
    return outcome


def _move_rows(spec, cur, *, run_id, batch_no, low, size, record_ledger, slow) -> BatchOutcome:
    """The batch's statements, in the caller's transaction."""
    on = spec.archive
    years = spec.config.effective_years
    skipped = 0
    if on.moves_in_one_statement() and not slow:
        high = candidates = None
        if spec.children:
            # A parent table: its candidates bound the batch, and the
            # statement moves those no child row references (possibly none).
            high, candidates = batch_bound(spec, cur, low, size)
            if high is None:
                return BatchOutcome(0, None)
        # One statement picks (within the bound, if any), moves and counts the batch.
        sql, params = _one_statement_move(spec, run_id, years, low, size, high=high)
        cur.execute(sql, params)
        row = cur.fetchone()
        n = len(spec.pk)
        if high is None:
            if row is None:
                return BatchOutcome(0, None)
            # Without children every candidate moves: the last moved key is the bound.
            high, candidates = list(row[:n]), row[n]
        deleted, inserted = row[n:] if row else (0, 0)
    else:
        high, candidates = batch_bound(spec, cur, low, size)
        if high is None:
            return BatchOutcome(0, None)
        if slow:
            skipped = _check_conflicts(spec, cur, low, high)
        sql, params = _insert_select(spec, run_id, years, low, high, skip_existing=slow)
        cur.execute(sql, params)
        inserted = cur.rowcount
        sql, params = _delete(spec, low, high)
        cur.execute(sql, params)
        deleted = cur.rowcount
    # The archive counts the batch inside the ledger row's INSERT (one
    # statement fewer a batch); the row is checked before the commit, and a
    # mismatch rolls back the batch with its ledger row.
    ledger = record_ledger(
        batch_no=batch_no, low=low, high=high, rows=inserted, deleted=deleted,
        counted_rows=_archive_count_sql(spec, run_id, low, high),
    )  # fmt: skip
    present = ledger.row_count
    if not (deleted == inserted + skipped and present == inserted):
        raise ReconcileError(
            f"batch {batch_no} of {spec.label}: deleted {deleted}, inserted {inserted}, "
            f"already archived {skipped}, present in archive {present}; rolled back"
        )
    checkpoint("batch_before_commit")
    # Every eligible key up to the bound moved in this one transaction; fewer
    # than ``size`` candidates means the bound was the last eligible key.
    return BatchOutcome(deleted, high, skipped, exhausted=candidates < size)


def _check_conflicts(spec: TableSpec, cur, low, high) -> int:
    """Count batch rows already archived with identical values; raise on a differing copy."""
    on = spec.archive
    where, params = spec.selection(on, low=low, high=high)
    match = " AND ".join(f"a.{on.quote(c)} = s.{on.quote(c)}" for c in spec.pk)
    same = " AND ".join(on.null_safe_equal(f"a.{on.quote(c)}", f"s.{on.quote(c)}") for c in spec.columns)
    # A contract table's batch keeps its pinned join order with the archive joined last.
    joined, in_where = on.join_sql(spec.from_clause(on), f"{spec.archive_table()} a", match, pin_left=spec.is_contract)
    base = f"FROM {joined} WHERE {in_where}{where}"
    cur.execute(
        f"SELECT {', '.join(spec.q(on, 's', spec.pk))}, a.{on.quote('archive_run_id')} {base} AND NOT ({same}) LIMIT 1",
        params,
    )
    row = cur.fetchone()
    if row:
        key = ", ".join(str(v) for v in row[:-1])
        raise ArchiveConflict(
            f"{spec.label}: row ({key}) was archived by run {row[-1]} with different values; "
            "it is not overwritten and nothing was deleted from the source"
        )
    cur.execute(f"SELECT COUNT(*) {base}", params)
    return cur.fetchone()[0]
