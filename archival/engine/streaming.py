"""Streaming moves between servers: copy, commit in the archive, then delete.

Used when the archive is on another server (or the source is listed in
ARCHIVAL_STREAMING_SOURCES). Order of commits makes a crash harmless: the
archive copy and its ledger row (state COPIED) commit first; the source
delete commits second and removes only rows still identical to their copy.

Fast path: the source rows are read ``FOR UPDATE`` inside a source
transaction (SQLite: an IMMEDIATE transaction, PostgreSQL: REPEATABLE READ,
so the range DELETE sees exactly the rows that were copied) that stays open
while the archive commits, then the same rows are deleted. A crash between
the two commits leaves the rows in both places with a COPIED ledger row;
``finish_pending`` compares each copy with the source row, refreshes this
run's in-flight copies that changed, and finishes the delete. Rows archived
by earlier runs are never refreshed (invariant 2).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import IntegrityError
from django.utils import timezone

from archival import rowkeys
from archival.engine.dates import add_years, as_date
from archival.engine.errors import ArchiveConflict, ReconcileError
from archival.engine.faults import checkpoint
from archival.engine.jsonkeys import to_json
from archival.engine.same_server import BatchOutcome
from archival.engine.spec import META_COLUMNS, TableSpec
from archival.engine.txn import write_transaction
from governance.models import BatchLedger, LedgerState


def _canon(value):
    """Comparable form of a value whatever engine returned it."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return Decimal(repr(value)).normalize()
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        # SQLite hands dates back as text.
        return value.replace("T", " ")
    return value


def _row_key(row, n_pk_positions: list[int]):
    return tuple(_canon(row[i]) for i in n_pk_positions)


def _same(a, b) -> bool:
    return all(_canon(x) == _canon(y) for x, y in zip(a, b, strict=True))


def _select_sql(spec: TableSpec, low, high, lock: bool, limit: int | None) -> tuple[str, list]:
    on = spec.source
    pk_s = spec.q(on, "s", spec.pk)
    where, params = spec.selection(on, low=low, high=high)
    columns = f"{', '.join(spec.q(on, 's', spec.columns))}, {spec.reference_expr(on)}"
    body = f"FROM {spec.from_clause(on, lock=lock)} WHERE {where} ORDER BY {rowkeys.order_by(pk_s)}"
    return on.select_sql(columns, body, params, limit=limit, lock_alias="s" if lock else None)


def _insert_copies(spec: TableSpec, rows: list, run_id: int) -> None:
    on = spec.archive
    q = on.quote
    years = spec.config.effective_years
    cols = [q(c) for c in spec.columns] + [q(m) for m in META_COLUMNS]
    now = on.param(timezone.now())
    payload = []
    for row in rows:
        ref = as_date(row[-1])
        retention = add_years(ref, years) if ref else None
        payload.append([*(on.param(v) for v in row[:-1]), now, run_id, on.param(ref), on.param(retention)])
    on.insert_rows(spec.archive_table(), cols, payload)


def _existing(spec: TableSpec, low, high) -> dict:
    """Archive rows in (low, high]: key -> (values, archive_run_id)."""
    on = spec.archive
    rng, params = rowkeys.key_range(spec.q(on, "a", spec.pk), low, high)
    cols = spec.q(on, "a", spec.columns)
    with on.connection.cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(cols)}, a.{on.quote('archive_run_id')} FROM {spec.archive_table()} a WHERE {rng}",
            params,
        )
        pk_pos = [spec.columns.index(c) for c in spec.pk]
        return {_row_key(r, pk_pos): (r[:-1], r[-1]) for r in cur.fetchall()}


def move_batch(spec: TableSpec, *, run_id: int, batch_no: int, low, size: int, record_ledger) -> BatchOutcome:
    src = spec.source
    pk_pos = [spec.columns.index(c) for c in spec.pk]
    with write_transaction(src.alias):
        with src.connection.cursor() as cur:
            src.start_locking_read(cur)
            sql, params = _select_sql(spec, low, None, lock=True, limit=size)
            cur.execute(sql, params)
            rows = cur.fetchall()
        if not rows:
            return BatchOutcome(0, None)
        high = [rows[-1][i] for i in pk_pos]
        skipped = 0
        try:
            with write_transaction("archive"):
                _insert_copies(spec, rows, run_id)
                _check_present(spec, run_id, batch_no, low, high, len(rows))
                ledger = record_ledger(
                    batch_no=batch_no,
                    low=low,
                    high=high,
                    rows=len(rows),
                    deleted=0,
                    state=LedgerState.COPIED,
                )
        except IntegrityError:
            # Some keys are archived already: identical copies are skipped,
            # a differing copy from an earlier run stops the table.
            with write_transaction("archive"):
                existing = _existing(spec, low, high)
                fresh = []
                for row in rows:
                    found = existing.get(_row_key(row, pk_pos))
                    if found is None:
                        fresh.append(row)
                    elif _same(found[0], row[:-1]):
                        skipped += 1
                    else:
                        key = ", ".join(str(row[i]) for i in pk_pos)
                        raise ArchiveConflict(
                            f"{spec.label}: row ({key}) was archived by run {found[1]} with different values; "
                            "it is not overwritten and nothing was deleted from the source"
                        ) from None
                if fresh:
                    _insert_copies(spec, fresh, run_id)
                _check_present(spec, run_id, batch_no, low, high, len(fresh))
                ledger = record_ledger(
                    batch_no=batch_no,
                    low=low,
                    high=high,
                    rows=len(fresh),
                    deleted=0,
                    state=LedgerState.COPIED,
                )
        checkpoint("stream_after_copy")
        # The rows are locked (or the source file is write-locked) since the
        # read, so the range DELETE removes exactly the copied rows.
        deleted = _delete_range(spec, low, high)
        if deleted != len(rows):
            raise ReconcileError(
                f"batch {batch_no} of {spec.label}: copied {len(rows)} rows but {deleted} matched the delete"
            )
    checkpoint("stream_after_delete")
    BatchLedger.objects.filter(pk=ledger.pk).update(state=LedgerState.DELETED, deleted_count=deleted)
    return BatchOutcome(deleted, high, skipped)


def _check_present(spec: TableSpec, run_id: int, batch_no: int, low, high, expected: int) -> None:
    """Counted before the archive commits: every copy must be there, or nothing is deleted."""
    on = spec.archive
    rng, params = rowkeys.key_range(spec.q(on, "a", spec.pk), low, high)
    with on.connection.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*) FROM {spec.archive_table()} a WHERE a.{on.quote('archive_run_id')} = %s AND {rng}",
            [run_id, *params],
        )
        present = cur.fetchone()[0]
    if present != expected:
        raise ReconcileError(
            f"batch {batch_no} of {spec.label}: copied {expected} rows but {present} are in the archive; rolled back"
        )


def _delete_range_sql(spec: TableSpec, low, high) -> tuple[str, list]:
    """The range DELETE of a streamed batch: eligible rows in (low, high], still matched by eligibility."""
    on = spec.source
    q = on.quote
    rng, rng_params = rowkeys.key_range(spec.q(on, "s", spec.pk), low, high)
    par, par_params = spec.parent_rule(on, at_mark=False)
    if spec.is_contract:
        elig = (
            f"EXISTS (SELECT 1 FROM {spec.contract_table(on)} c WHERE c.{q(spec.config.contract_key_column)} = "
            f"s.{q(spec.config.contract_reference_column)} AND {spec.date_before(on)})"
        )
    else:
        elig = spec.date_before(on)
    delete = on.delete_sql("s", f"{spec.source_table(on)} AS s")
    return f"{delete} WHERE {elig} AND {rng} AND {par}", [spec.threshold_param(on), *rng_params, *par_params]


def _delete_range(spec: TableSpec, low, high) -> int:
    sql, params = _delete_range_sql(spec, low, high)
    with spec.source.connection.cursor() as cur:
        return spec.source.execute_counted(cur, sql, params)


def _delete_keys(spec: TableSpec, keys_to_delete: list) -> int:
    on = spec.source
    q = on.quote
    total = 0
    with on.connection.cursor() as cur:
        for key in keys_to_delete:
            cond = " AND ".join(f"{q(c)} = %s" for c in spec.pk)
            total += on.execute_counted(cur, f"DELETE FROM {spec.source_table(on)} WHERE {cond}", list(key))
    return total


def finish_earlier_attempt(spec: TableSpec, ledger: BatchLedger) -> BatchOutcome:
    """Finish a batch whose copy committed in an attempt that then failed."""
    finish_batch(spec, ledger)
    ledger.refresh_from_db()
    return BatchOutcome(ledger.deleted_count, ledger.key_high, 0)


def finish_pending(spec: TableSpec, *, run_id: int) -> None:
    """Finish batches whose copy committed but whose source delete may not have."""
    for ledger in BatchLedger.objects.filter(
        run_id=run_id, config_id=spec.config.pk, state=LedgerState.COPIED
    ).order_by("batch_no"):
        finish_batch(spec, ledger)


def finish_batch(spec: TableSpec, ledger: BatchLedger, rounds: int = 3) -> None:
    on_src, on_arc = spec.source, spec.archive
    pk_pos = [spec.columns.index(c) for c in spec.pk]
    low, high = ledger.key_low, ledger.key_high
    for _ in range(rounds):
        with write_transaction("archive"):
            copies = {k: v for k, (v, run) in _existing(spec, low, high).items() if run == ledger.run_id}
        refresh, drop = [], []
        with write_transaction(on_src.alias):
            with on_src.connection.cursor() as cur:
                on_src.start_locking_read(cur)
                sql, params = _select_sql(spec, low, high, lock=True, limit=None)
                cur.execute(sql, params)
                eligible = {_row_key(r, pk_pos): r for r in cur.fetchall()}
                rng, rparams = rowkeys.key_range(spec.q(on_src, "s", spec.pk), low, high)
                cur.execute(
                    f"SELECT {', '.join(spec.q(on_src, 's', spec.pk))} FROM {spec.source_table(on_src)} s WHERE {rng}",
                    rparams,
                )
                present = {tuple(_canon(v) for v in r) for r in cur.fetchall()}
            to_delete = []
            for key, copy in copies.items():
                if key in eligible:
                    if _same(copy, eligible[key][:-1]):
                        to_delete.append(eligible[key])
                    else:
                        refresh.append(eligible[key])
                elif key in present:
                    drop.append(key)  # no longer eligible: the source keeps it
            _delete_keys(spec, [[r[i] for i in pk_pos] for r in to_delete])
        if not refresh and not drop:
            break
        # Archive side first: refresh this run's in-flight copies or drop the
        # copies of rows that stopped being eligible; the source still has them.
        with write_transaction("archive"):
            with on_arc.connection.cursor() as cur:
                for key in drop + [_row_key(r, pk_pos) for r in refresh]:
                    raw = copies[key]
                    cond = " AND ".join(f"{on_arc.quote(c)} = %s" for c in spec.pk)
                    cur.execute(
                        f"DELETE FROM {spec.archive_table()} WHERE {on_arc.quote('archive_run_id')} = %s AND {cond}",
                        [ledger.run_id, *[raw[i] for i in pk_pos]],
                    )
            if refresh:
                _insert_copies(spec, refresh, ledger.run_id)
    with write_transaction("archive"):
        copies = {k: v for k, (v, run) in _existing(spec, low, high).items() if run == ledger.run_id}
        with on_src.connection.cursor() as cur:
            rng, rparams = rowkeys.key_range(spec.q(on_src, "s", spec.pk), low, high)
            cur.execute(
                f"SELECT {', '.join(spec.q(on_src, 's', spec.pk))} FROM {spec.source_table(on_src)} s WHERE {rng}",
                rparams,
            )
            present = {tuple(_canon(v) for v in r) for r in cur.fetchall()}
        still = [k for k in copies if k in present]
        if still:
            raise ReconcileError(
                f"batch {ledger.batch_no} of {spec.label}: {len(still)} copied rows could not be deleted from the source"
            )
        BatchLedger.objects.filter(pk=ledger.pk).update(
            state=LedgerState.DELETED, row_count=len(copies), deleted_count=len(copies)
        )


__all__ = ["finish_pending", "move_batch", "to_json"]
