"""Streaming restore batches: the archive on another server than the source.

No transaction spans both servers, so the order of commits keeps every row
somewhere (archival's streaming, the other way round):

1. archive transaction: read the batch's rows (the next ``size`` selected
   after the cursor), check them against the source (a key there with other
   values stops the table before anything is written), record the ledger row
   COPYING with the counts it will reach;
2. source transaction: insert the batch's rows the source lacks (identical
   ones are there already); a key that appeared meanwhile with other values
   stops the table; commit;
3. archive transaction: check that every row of the batch is in the source
   with its archived values, record its keys (RestoredKey), delete the batch
   from the archive, ledger DELETED; commit.

A crash between 1 and 3 leaves the rows in the archive and perhaps in the
source too, never in neither; ``finish_batch`` (what the resume runs for a
COPYING ledger row) repeats 2 and 3, which are idempotent.
"""

from __future__ import annotations

from archival.backends.base import RestoreBatchCounts
from archival.disposal.tables import ARCHIVE
from archival.engine.faults import checkpoint
from archival.engine.streaming import _canon, _same
from archival.engine.txn import write_transaction
from archival.restore.errors import RestoreConflict, RestoreReconcileError
from archival.restore.same_server import batch_predicate, conflict_message
from archival.restore.selection import RestoreTarget
from archival.rowkeys import coerce, keyset_predicate, to_json_component
from governance.models import RestoredKey, RestoreLedger, RestoreLedgerState


def _key_positions(target: RestoreTarget) -> list[int]:
    return [target.columns.index(c) for c in target.pk]


def _key_of(row, positions: list[int]) -> tuple:
    return tuple(_canon(row[i]) for i in positions)


def _archive_rows(target: RestoreTarget, selection_pred: tuple[str, list], limit: int | None = None) -> list:
    """Archive rows (the columns written back, in key order) matching the predicate on alias ``a``."""
    t = target.archive
    b = t.backend
    pred, params = selection_pred
    sql = f"SELECT {', '.join(t.col(c) for c in target.columns)} FROM {t.qualified} a WHERE {pred} ORDER BY {t.order_by()}"
    if limit is not None:
        sql, params = b.limit_sql(sql, "%s"), [*params, limit]
    with b.connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _source_rows(target: RestoreTarget, low, high, *, lock: bool = False) -> dict:
    """Source rows with ``low <= key <= high`` (the bounds of the rows read): key -> row (columns written back)."""
    src = target.source
    q = src.quote
    cols = [f"s.{q(c)}" for c in target.pk]
    generic = target.archive.pk_generic
    parts, params = [], []
    for op, bound in ((">=", low), ("<=", high)):
        sql, bound_params = keyset_predicate(
            cols, op, [src.param(coerce(v, g)) for v, g in zip(bound, generic, strict=True)]
        )
        parts.append(sql)
        params += bound_params
    body = (
        f"FROM {target.source_table(src)} s{src.lock_hint() if lock else ''} WHERE {' AND '.join(parts)} "
        f"ORDER BY {', '.join(cols)}"
    )
    sql, params = src.select_sql(
        ", ".join(f"s.{q(c)}" for c in target.columns), body, params, lock_alias="s" if lock else None
    )
    positions = _key_positions(target)
    with src.connection.cursor() as cur:
        if lock:
            src.start_locking_read(cur)
        cur.execute(sql, params)
        return {_key_of(r, positions): r for r in cur.fetchall()}


def _compare(target: RestoreTarget, rows: list, existing: dict) -> tuple[list, int, tuple | None]:
    """(rows the source lacks, rows it has identical, the first key it has with other values)."""
    positions = _key_positions(target)
    missing, identical = [], 0
    for row in rows:
        found = existing.get(_key_of(row, positions))
        if found is None:
            missing.append(row)
        elif _same(found, row):
            identical += 1
        else:
            return missing, identical, tuple(row[i] for i in positions)
    return missing, identical, None


def _bounds(target: RestoreTarget, rows: list) -> tuple[list, list]:
    positions = _key_positions(target)
    return [rows[0][i] for i in positions], [rows[-1][i] for i in positions]


def compare_with_source(
    target: RestoreTarget, sel: str, params: list, chunk: int = 5000
) -> tuple[int, int, tuple | None]:
    """Preview across servers: (rows in conflict, rows identical, first conflicting key) of a selection.

    The rows must cross servers to be compared; they are read a chunk at a time in key order.
    """
    t = target.archive
    conflicts = identical = 0
    first = None
    after: tuple[str, list] = ("1=1", [])
    positions = _key_positions(target)
    while True:
        rows = _archive_rows(target, (f"({sel}) AND {after[0]}", [*params, *after[1]]), limit=chunk)
        if not rows:
            break
        low, high = _bounds(target, rows)
        existing = _source_rows(target, low, high)
        for row in rows:
            found = existing.get(_key_of(row, positions))
            if found is None:
                continue
            if _same(found, row):
                identical += 1
            else:
                conflicts += 1
                first = first or tuple(row[i] for i in positions)
        if len(rows) < chunk:
            break
        after = t.after_sql(high)
    return conflicts, identical, first


def restore_batch(
    target: RestoreTarget, *, request_id: int, table_label: str, batch_no: int, key_after, size: int,
    selection: dict, today,
) -> RestoreBatchCounts:  # fmt: skip
    """Steps 1 to 3 of the module docstring for the next batch after ``key_after``."""
    t = target.archive
    with write_transaction(ARCHIVE):
        rows = _archive_rows(target, batch_predicate(target, selection, key_after, None), limit=size)
        if not rows:
            return RestoreBatchCounts(0, 0, 0, 0, None)
        low, high = _bounds(target, rows)
        _, identical, clash = _compare(target, rows, _source_rows(target, low, high))
        if clash:
            raise RestoreConflict(conflict_message(target, clash, request_id))
        pred, params = batch_predicate(target, selection, key_after, high)
        held_sql, held_params = t.held_sql(today)
        with t.backend.connection.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {t.qualified} a WHERE {pred} AND {held_sql}", [*params, *held_params])
            held = int(cur.fetchone()[0] or 0)
        ledger = RestoreLedger(
            request_id=request_id,
            config_id=target.config.pk,
            table_label=table_label,
            batch_no=batch_no,
            key_low=[to_json_component(v) for v in key_after] if key_after is not None else None,
            key_high=[to_json_component(v) for v in high],
            row_count=len(rows) - identical,
            skipped_identical=identical,
            held_count=held,
            state=RestoreLedgerState.COPYING,
        )
        ledger.save(using=ARCHIVE)
    return finish_batch(target, ledger, selection)


def finish_batch(target: RestoreTarget, ledger, selection: dict) -> RestoreBatchCounts:
    """Steps 2 and 3 for a COPYING ledger row (a fresh batch, or one a crash interrupted): idempotent."""
    t = target.archive
    b = t.backend
    q = b.quote
    src = target.source
    request_id = ledger.request_id
    batch = batch_predicate(target, selection, ledger.key_low, ledger.key_high)
    rows = _archive_rows(target, batch)
    if rows:
        low, high = _bounds(target, rows)
        with write_transaction(src.alias):
            missing, _, clash = _compare(target, rows, _source_rows(target, low, high, lock=True))
            if clash:
                raise RestoreConflict(conflict_message(target, clash, request_id))
            if missing:
                cols = ", ".join(src.quote(c) for c in target.columns)
                overriding = f" {target.insert.overriding}" if target.insert.overriding else ""
                marks = ", ".join(["%s"] * len(target.columns))
                with src.connection.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {target.source_table(src)} ({cols}){overriding} VALUES ({marks})",
                        [[src.param(v) for v in row] for row in missing],
                    )
        checkpoint("restore_stream_after_copy")
    with write_transaction(ARCHIVE):
        rows = _archive_rows(target, batch)
        deleted = 0
        if rows:
            low, high = _bounds(target, rows)
            missing, _, clash = _compare(target, rows, _source_rows(target, low, high))
            if clash or missing:
                raise RestoreReconcileError(
                    f"restore batch {ledger.batch_no} of {target.label}: {len(missing)} row(s) are not in the source"
                    f"{' and one differs' if clash else ''} after the copy; nothing deleted from the archive"
                )
            pred, params = batch
            key_sql, key_params = t.key_text_sql()
            rk = RestoredKey._meta
            with b.connection.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {q(rk.db_table)} ({q('request_id')}, {q('config_id')}, {q('batch_no')}, "
                    f"{q('key_text')}) SELECT %s, %s, %s, {key_sql} FROM {t.qualified} a WHERE {pred}",
                    [request_id, target.config.pk, ledger.batch_no, *key_params, *params],
                )
                recorded = cur.rowcount
                deleted = b.execute_counted(cur, f"{b.delete_sql('a', f'{t.qualified} AS a')} WHERE {pred}", params)
            expected = ledger.row_count + ledger.skipped_identical
            if not (deleted == recorded == len(rows) == expected):
                raise RestoreReconcileError(
                    f"restore batch {ledger.batch_no} of {target.label}: {expected} rows copied, {len(rows)} in the "
                    f"archive, {deleted} deleted, {recorded} keys recorded; rolled back"
                )
        elif ledger.row_count + ledger.skipped_identical:
            raise RestoreReconcileError(
                f"restore batch {ledger.batch_no} of {target.label}: its archive rows are gone but the ledger "
                "says the delete has not committed"
            )
        RestoreLedger.objects.using(ARCHIVE).filter(pk=ledger.pk).update(
            state=RestoreLedgerState.DELETED, deleted_count=deleted
        )
    checkpoint("restore_stream_after_delete")
    return RestoreBatchCounts(ledger.row_count, ledger.skipped_identical, deleted, ledger.held_count, ledger.key_high)
