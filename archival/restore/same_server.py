"""Same-server restore batches: one archive-connection transaction per batch, no row in Python.

The archive connection reaches the source table (one PostgreSQL database, one
MariaDB server, SQLite files attached to the archive connection), so one
transaction: picks the batch (its last key ``high`` after the cursor),
refuses it if a selected row's key is in the source with other values,
records the keys it restores (RestoredKey), inserts the rows the source
lacks, deletes the batch from the archive, writes the RestoreLedger row
(MOVED) and reconciles the counts before the commit. SQL Server does the same
in ``archival.usp_restore_batch`` (``Backend.restore_batch``).
"""

from __future__ import annotations

from archival.backends.base import RestoreBatchCounts
from archival.disposal.tables import ARCHIVE
from archival.engine.faults import checkpoint
from archival.engine.txn import write_transaction
from archival.restore.errors import RestoreConflict, RestoreReconcileError
from archival.restore.selection import RestoreTarget, selection_sql
from archival.rowkeys import keyset_predicate, to_json_component
from governance.models import RestoredKey, RestoreLedger, RestoreLedgerState


def batch_predicate(target: RestoreTarget, selection: dict, low, high, alias: str = "a") -> tuple[str, list]:
    """Selected archive rows with ``low < key <= high`` (either bound None: open)."""
    t = target.archive
    sel, params = selection_sql(t, selection, alias)
    parts = [sel]
    if low is not None:
        sql, low_params = keyset_predicate(t.pk_cols(alias), ">", t.coerce_key(low))
        parts.append(sql)
        params = [*params, *low_params]
    if high is not None:
        sql, high_params = keyset_predicate(t.pk_cols(alias), "<=", t.coerce_key(high))
        parts.append(sql)
        params = [*params, *high_params]
    return " AND ".join(f"({p})" for p in parts), params


def conflict_message(target: RestoreTarget, key, request_id: int) -> str:
    shown = ", ".join(f"{c}={v}" for c, v in zip(target.pk, key, strict=True))
    return (
        f"{target.label}: the source already has the row ({shown}) with other values than its archived copy; "
        f"restore {request_id} stopped this table and moved nothing of the batch. Resolve the row in the source "
        "(or restore other rows) and execute again"
    )


def _scalar(cur, sql: str, params: list) -> int:
    cur.execute(sql, params)
    return int(cur.fetchone()[0] or 0)


def restore_batch(
    target: RestoreTarget, *, request_id: int, table_label: str, batch_no: int, key_after, size: int,
    selection: dict, today,
) -> RestoreBatchCounts:  # fmt: skip
    """Restore the next batch after ``key_after`` in one transaction (see the module docstring).

    Raises RestoreConflict (nothing moved) or RestoreReconcileError (rolled back).
    """
    b = target.archive.backend
    if b.moves_through_procedures():
        return b.restore_batch(
            request_id=request_id,
            config=target.config,
            batch_no=batch_no,
            key_after=key_after,
            batch_size=size,
            selection=selection,
        )
    t = target.archive
    q = b.quote
    src = target.source_table(b)
    with write_transaction(ARCHIVE), b.connection.cursor() as cur:
        # The batch: the next ``size`` selected keys after the cursor; its last key bounds it.
        pred, params = batch_predicate(target, selection, key_after, None)
        inner = b.limit_sql(f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {pred} ORDER BY {t.order_by()}", "%s")
        keys_b = ", ".join(q(c) for c in t.pk)
        cur.execute(
            f"SELECT {keys_b}, COUNT(*) OVER () FROM ({inner}) b ORDER BY "
            + ", ".join(f"{q(c)} DESC" for c in t.pk)
            + " LIMIT 1",
            [*params, size],
        )
        row = cur.fetchone()
        if row is None:
            return RestoreBatchCounts(0, 0, 0, 0, None)
        high, candidates = list(row[:-1]), int(row[-1])
        pred, params = batch_predicate(target, selection, key_after, high)
        joined = f"FROM {t.qualified} a, {src} s WHERE {target.key_match(b, 's', 'a')} AND {pred}"
        same = target.identical(b, "a", "s")
        cur.execute(b.limit_sql(f"SELECT {t.pk_select()} {joined} AND NOT ({same})", "1"), params)
        clash = cur.fetchone()
        if clash:
            raise RestoreConflict(conflict_message(target, clash, request_id))
        identical = _scalar(cur, f"SELECT COUNT(*) {joined} AND {same}", params)
        held_sql, held_params = t.held_sql(today)
        held = _scalar(
            cur, f"SELECT COUNT(*) FROM {t.qualified} a WHERE {pred} AND {held_sql}", [*params, *held_params]
        )
        # The record of what came back, written before the rows leave the archive.
        key_sql, key_params = t.key_text_sql()
        rk = RestoredKey._meta
        cur.execute(
            f"INSERT INTO {q(rk.db_table)} ({q('request_id')}, {q('config_id')}, {q('batch_no')}, {q('key_text')}) "
            f"SELECT %s, %s, %s, {key_sql} FROM {t.qualified} a WHERE {pred}",
            [request_id, target.config.pk, batch_no, *key_params, *params],
        )
        recorded = cur.rowcount
        cols = ", ".join(q(c) for c in target.columns)
        overriding = f" {target.insert.overriding}" if target.insert.overriding else ""
        inserted = b.execute_counted(
            cur,
            f"INSERT INTO {src} ({cols}){overriding} SELECT {', '.join(t.col(c) for c in target.columns)} "
            f"FROM {t.qualified} a WHERE {pred} AND NOT EXISTS (SELECT 1 FROM {src} s WHERE {target.key_match(b, 's', 'a')})",
            params,
        )
        # Every row of the batch is in the source now, with its archived values.
        present = _scalar(cur, f"SELECT COUNT(*) {joined} AND {same}", params)
        deleted = b.execute_counted(cur, f"{b.delete_sql('a', f'{t.qualified} AS a')} WHERE {pred}", params)
        if not (deleted == inserted + identical == candidates and present == deleted and recorded == deleted):
            raise RestoreReconcileError(
                f"restore batch {batch_no} of {target.label}: {candidates} selected, {inserted} inserted, "
                f"{identical} already identical, {present} present in the source, {deleted} deleted from the "
                f"archive, {recorded} keys recorded; rolled back"
            )
        ledger = RestoreLedger(
            request_id=request_id,
            config_id=target.config.pk,
            table_label=table_label,
            batch_no=batch_no,
            key_low=[to_json_component(v) for v in key_after] if key_after is not None else None,
            key_high=[to_json_component(v) for v in high],
            row_count=inserted,
            skipped_identical=identical,
            deleted_count=deleted,
            held_count=held,
            state=RestoreLedgerState.MOVED,
        )
        ledger.save(using=ARCHIVE)
        checkpoint("restore_batch_before_commit")
    checkpoint("restore_batch_after_commit")
    return RestoreBatchCounts(inserted, identical, deleted, held, ledger.key_high)
