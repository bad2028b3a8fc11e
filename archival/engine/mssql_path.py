"""SQL Server same-instance path: the per-batch work runs in stored procedures.

On SQL Server the move, its reconciliation and its ledger row happen inside
``archival.usp_archive_batch`` (sql/07_procedures.sql), which a DBA reviews
and grants EXECUTE on; the engine only orchestrates and records progress in
the same recovery state as every other backend. The procedure owns its
transaction, so nothing here wraps it in ``transaction.atomic``. The
procedures know a source by its Django alias (the registry's ``source_alias``,
the holds' ``source_db``), never by its database name.
"""

from __future__ import annotations

from contextlib import contextmanager

from archival.backends.mssql.procedures import ProcedureCallError
from archival.engine.errors import TableError
from archival.engine.same_server import BatchOutcome
from archival.engine.spec import TableSpec


def uses_procedures(spec: TableSpec) -> bool:
    return spec.mode == "same_server" and spec.archive.moves_through_procedures()


def mark_counts(spec: TableSpec) -> tuple[int, int, list | None, list | None]:
    with _stops_the_table(spec):
        result = spec.archive.mark_table(
            source_alias=spec.config.source_db,
            schema_name=spec.config.schema_name,
            table_name=spec.config.table_name,
            threshold=spec.threshold,
            child_thresholds={child.table: child.threshold for child in spec.children},
        )
    return result.eligible, result.null_dates, result.key_low, result.key_high


def move_batch(spec: TableSpec, *, run_id: int, batch_no: int, low, size: int) -> BatchOutcome:
    with _stops_the_table(spec):
        result = spec.archive.archive_batch(
            run_id=run_id,
            config_id=spec.config.pk,
            source_alias=spec.config.source_db,
            schema_name=spec.config.schema_name,
            table_name=spec.config.table_name,
            threshold=spec.threshold,
            years_retention=spec.config.effective_years,
            batch_size=size,
            batch_no=batch_no,
            key_after=low,
        )
    return BatchOutcome(result.rows_moved + result.rows_skipped, result.key_high, result.rows_skipped)


@contextmanager
def _stops_the_table(spec: TableSpec):
    """A call the adapter refuses (or an answer it cannot read) fails this table, not the run."""
    try:
        yield
    except ProcedureCallError as exc:
        raise TableError(f"{spec.label}: {exc}") from exc
