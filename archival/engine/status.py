"""What ``archival status`` shows: runs, their tables, and what the ledger says committed.

The batch ledger (in the archive database) is the record of what committed:
a process killed mid-table leaves its recovery state behind the ledger (the
state is written at most once a second, and not at all after the kill). So
the archived counts come from the ledger, summed per run and table in one
aggregate query for all the runs shown, not from the recovery state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import DatabaseError
from django.db.models import Count, Q, Sum

from archival.engine import pacing
from governance.models import ArchivalRun, BatchLedger, LedgerState, RecoveryState


@dataclass
class TableStatus:
    table: str
    phase: str
    eligible: int | None
    unreadable_dates: int | None  # rows whose reference value is not a date (never eligible), counted by Mark
    archived: int  # rows taken out of the source, per the ledger
    batches: int  # committed batches, per the ledger
    copied_pending_delete: int  # streamed rows copied whose source delete has not committed
    state_archived: int  # what the recovery state last recorded (lags after a kill)
    error: str
    waiting_for: str = ""  # WAITING tables: database:<alias>, lock:<table>, window:<from>-<until>, replica:<name>
    # Pacing (archival.engine.pacing): what the engine does instead of moving
    # rows now, and the time it spent so per reason, in one line; and the figures.
    pacing: str = ""
    pacing_seconds: dict = field(default_factory=dict)


@dataclass
class RunStatusReport:
    run_id: int
    status: str
    cutoff: str
    started_at: str
    finished_at: str | None
    ledger_read: bool = True  # False: the archive database could not be read; counts are the states'
    tables: list[TableStatus] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def ledger_totals(run_ids: list[int]) -> dict[tuple[int, int], Mapping[str, Any]]:
    """{(run id, config id): {"archived", "batches", "copied"}} from one aggregate query over the ledger."""
    rows = (
        BatchLedger.objects.filter(run_id__in=run_ids)
        .order_by()
        .values("run_id", "config_id")
        .annotate(
            archived=Sum("deleted_count"),
            batches=Count("id"),
            # Streamed batches copied whose source delete has not committed yet.
            copied=Sum("row_count", filter=Q(state=LedgerState.COPIED)),
        )
    )
    return {(r["run_id"], r["config_id"]): r for r in rows}


def run_status(run_id: int | None = None, *, runs: int = 1) -> list[RunStatusReport]:
    """The latest ``runs`` runs (or run ``run_id``), newest first, with per-table ledger counts."""
    qs = ArchivalRun.objects.all()
    if run_id is not None:
        qs = qs.filter(pk=run_id)
    chosen = list(qs[: max(runs, 1)])
    ids = [run.pk for run in chosen]
    states = list(RecoveryState.objects.filter(run_id__in=ids).order_by("run_id", "id"))
    try:
        totals = ledger_totals(ids)
        ledger_read = True
    except DatabaseError:
        totals, ledger_read = {}, False
    reports = []
    for run in chosen:
        report = RunStatusReport(
            run_id=run.pk,
            status=run.status,
            cutoff=run.cutoff.isoformat(),
            started_at=run.started_at.isoformat(),
            finished_at=run.finished_at.isoformat() if run.finished_at else None,
            ledger_read=ledger_read,
        )
        for s in (s for s in states if s.run_id == run.pk):
            total = totals.get((run.pk, s.config_id))
            report.tables.append(
                TableStatus(
                    table=s.table_label,
                    phase=s.phase,
                    eligible=s.eligible_count,
                    unreadable_dates=s.unreadable_date_count,
                    archived=int(total["archived"] or 0) if total else (0 if ledger_read else s.archived_count),
                    batches=int(total["batches"]) if total else (0 if ledger_read else s.batches_done),
                    copied_pending_delete=int(total["copied"] or 0) if total else 0,
                    state_archived=s.archived_count,
                    error=s.last_error,
                    waiting_for=s.waiting_for,
                    pacing=pacing.summary(s.pacing),
                    pacing_seconds=(s.pacing or {}).get("seconds", {}),
                )
            )
        reports.append(report)
    return reports
