"""SQL Server same-instance path: the per-batch work runs in stored procedures.

On SQL Server the move, its reconciliation and its ledger row happen inside
``archival.usp_archive_batch`` (sql/07_procedures.sql), which a DBA reviews
and grants EXECUTE on; the engine only orchestrates and records progress in
the same recovery state as every other backend. The procedure owns its
transaction, so nothing here wraps it in ``transaction.atomic``.
"""

from __future__ import annotations

from archival.backends.mssql.templates import source_database_name
from archival.engine.same_server import BatchOutcome
from archival.engine.spec import TableSpec


def uses_procedures(spec: TableSpec) -> bool:
    return spec.mode == "same_server" and spec.archive.moves_through_procedures()


def mark_counts(spec: TableSpec) -> tuple[int, int, list | None, list | None]:
    result = spec.archive.mark_table(
        source_alias=source_database_name(spec.config.source_db),
        schema_name=spec.config.schema_name,
        table_name=spec.config.table_name,
        threshold=spec.threshold,
    )
    return result.eligible, result.null_dates, result.key_low, result.key_high


def move_batch(spec: TableSpec, *, run_id: int, batch_no: int, low, size: int) -> BatchOutcome:
    result = spec.archive.archive_batch(
        run_id=run_id,
        config_id=spec.config.pk,
        source_alias=source_database_name(spec.config.source_db),
        schema_name=spec.config.schema_name,
        table_name=spec.config.table_name,
        threshold=spec.threshold,
        years_retention=spec.config.effective_years,
        batch_size=size,
        batch_no=batch_no,
        key_after=low,
    )
    return BatchOutcome(result.rows_moved + result.rows_skipped, result.key_high, result.rows_skipped)
