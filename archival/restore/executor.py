"""Execute (or resume) an approved restore: table by table, parents first, batch by batch.

One owner: the request's lease (``lease_owner``/``lease_expires_at``), taken
by a conditional UPDATE whose row count says who won (as archival's leases,
``archival.engine.leases``); a crashed owner on this machine is taken over at
once, another's lease when it expires. The claim refuses while an archival
run has not finished one of the request's tables (and archival, while the
restore EXECUTES, reports those tables blocked by it).

Per table: the RestoreLedger (archive database) is the record of what
committed; the RestoreTable's cursor and counts (control database) are
reconciled with it before the first batch, and a streamed batch left COPYING
is finished first. After the last batch the table's RestoreCertificate is
written in an archive transaction of its own (hash-chained, its digest over
the RestoredKey lines), then ``restore.table_restored`` is audited with its
hash and the table is RESTORED. A crash after the certificate commits is
finalised by the next execution (the certificate is unique per table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.db import Error, transaction
from django.db.models import Sum
from django.utils import timezone

from archival.disposal.tables import ARCHIVE
from archival.engine.errors import LeaseLost, TableError, describe_database_error
from archival.engine.faults import checkpoint
from archival.engine.leases import new_worker_id, restores
from archival.engine.txn import bound_sessions
from archival.restore import same_server, streaming
from archival.restore.certificates import issue_certificate
from archival.restore.errors import RestoreRefused
from archival.restore.requests import REQUEST_PERMISSION, require_permission
from archival.restore.selection import resolve_target, selection_of
from governance.actors import actor_name
from governance.models import (
    OPEN_PHASES,
    AuditEvent,
    RecoveryState,
    RestoreLedger,
    RestoreLedgerState,
    RestorePhase,
    RestoreRequest,
    RestoreStatus,
    RestoreTable,
    TableConfig,
)

EXECUTABLE = ("APPROVED", "EXECUTING", "FAILED")


@dataclass
class TableOutcome:
    label: str
    position: int
    phase: str = ""
    batches: int = 0
    restored: int = 0
    skipped_identical: int = 0
    held: int = 0
    certificate_id: int | None = None
    certificate_hash: str = ""
    error: str = ""


@dataclass
class RestoreResult:
    request_id: int
    worker: str
    status: str = ""
    tables: list[TableOutcome] = field(default_factory=list)
    error: str = ""
    skipped: str = ""  # why nothing ran (another worker holds the request)

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and not self.error

    @property
    def restored(self) -> int:
        return sum(t.restored for t in self.tables)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "restored": self.restored}

    def __str__(self) -> str:
        if self.skipped:
            return f"Restore {self.request_id}: not executed: {self.skipped}"
        held = sum(t.held for t in self.tables)
        skipped = sum(t.skipped_identical for t in self.tables)
        text = (
            f"Restore {self.request_id} {self.status}: {self.restored} rows restored in {len(self.tables)} table(s), "
            f"{skipped} already in the source (identical), {held} under a hold"
        )
        return text + (f"; {self.error}" if self.error else "")


def _claim(request_id: int, worker: str, executor: str) -> bool:
    """Take the request's lease and make it EXECUTING, unless an archival run holds one of its tables.

    The config rows are locked for the check (as ``start_run`` locks them for
    its own), so a run and a restore of one table cannot both start.
    """
    now = timezone.now()
    message = ""
    won = None
    # One transaction with the config rows locked: the check and the claim,
    # so a run cannot start on a table between them.
    with transaction.atomic(using="default"):
        config_ids = list(RestoreTable.objects.filter(request_id=request_id).values_list("config_id", flat=True))
        list(TableConfig.objects.select_for_update().filter(pk__in=config_ids).order_by("pk"))
        busy = (
            RecoveryState.objects.filter(config_id__in=config_ids, phase__in=OPEN_PHASES)
            .values_list("table_label", "run_id")
            .first()
        )
        other = (
            RestoreRequest.objects.filter(status=RestoreStatus.EXECUTING, tables__config_id__in=config_ids)
            .exclude(pk=request_id)
            .filter(lease_expires_at__gte=now)
            .values_list("pk", flat=True)
            .first()
        )
        if busy:
            message = f"archival run {busy[1]} has not finished {busy[0]}; resume or abandon it, then execute again"
        elif other:
            message = f"restore {other} is executing one of these tables now; execute this one after it"
        else:
            won = restores.claim(
                request_id,
                worker,
                where={"status": list(EXECUTABLE)},
                status=RestoreStatus.EXECUTING,
                executed_by=executor,
                last_error="",
            )
    if message:
        # The request says why it waits (the claim changed nothing).
        RestoreRequest.objects.filter(pk=request_id).update(last_error=message)
        raise RestoreRefused(message)
    return bool(won)


def _reconcile_with_ledger(table) -> None:
    """Bring the RestoreTable's cursor and counts in line with the ledger (what committed)."""
    ledger = RestoreLedger.objects.using(ARCHIVE).filter(request_id=table.request_id, config_id=table.config_id)
    last = ledger.order_by("-batch_no").values_list("key_high", flat=True).first()
    totals = ledger.aggregate(n=Sum("row_count"), s=Sum("skipped_identical"))
    fields = dict(
        cursor=last,
        batches_done=ledger.count(),
        restored_count=totals["n"] or 0,
        skipped_identical=totals["s"] or 0,
    )
    RestoreTable.objects.filter(pk=table.pk).update(**fields)
    for name, value in fields.items():
        setattr(table, name, value)


def _restore_table(request, table, worker: str, executor: str, out: TableOutcome) -> None:
    target = resolve_target(table.config)
    selection = selection_of(table)
    today = timezone.localdate()
    RestoreTable.objects.filter(pk=table.pk).update(phase=RestorePhase.RESTORING, last_error="")
    if target.mode == "streaming":
        pending = RestoreLedger.objects.using(ARCHIVE).filter(
            request_id=request.pk, config_id=table.config_id, state=RestoreLedgerState.COPYING
        )
        for ledger in pending.order_by("batch_no"):
            streaming.finish_batch(target, ledger, selection)
    _reconcile_with_ledger(table)
    mover = streaming if target.mode == "streaming" else same_server
    size = table.config.effective_batch_size
    cert = issue_certificate(request, table, target, executor, existing_only=True)
    while cert is None:
        counts = mover.restore_batch(
            target,
            request_id=request.pk,
            table_label=table.table_label,
            batch_no=table.batches_done + 1,
            key_after=table.cursor,
            size=size,
            selection=selection,
            today=today,
        )
        if counts.key_high is None:
            break
        table.cursor = counts.key_high
        table.batches_done += 1
        table.restored_count += counts.restored
        table.skipped_identical += counts.skipped_identical
        out.batches += 1
        RestoreTable.objects.filter(pk=table.pk).update(
            cursor=table.cursor,
            batches_done=table.batches_done,
            restored_count=table.restored_count,
            skipped_identical=table.skipped_identical,
        )
        restores.renew(request, worker)
        if counts.deleted < size:
            break
    if cert is None:
        cert = issue_certificate(request, table, target, executor)
    checkpoint("restore_table_done")
    with transaction.atomic(using="default"):
        AuditEvent.objects.record(
            "restore.table_restored",
            actor=executor,
            obj=request,
            table_label=table.table_label,
            counts={"restored": cert.row_count, "skipped_identical": cert.skipped_identical, "held": cert.held_count},
            details={
                "request_id": request.pk,
                "certificate_id": cert.pk,
                "certificate_hash": cert.certificate_hash,
                "digest": cert.digest,
                "selection": cert.selection,
                "held_rows_restored": cert.held_count,
            },
        )
        RestoreTable.objects.filter(pk=table.pk).update(
            phase=RestorePhase.RESTORED,
            certificate_id=cert.pk,
            restored_count=cert.row_count,
            skipped_identical=cert.skipped_identical,
            last_error="",
        )
    out.phase = RestorePhase.RESTORED
    out.restored, out.skipped_identical, out.held = cert.row_count, cert.skipped_identical, cert.held_count
    out.certificate_id, out.certificate_hash = cert.pk, cert.certificate_hash


def execute(request_id: int, *, actor, worker_id: str | None = None) -> RestoreResult:
    """Run or resume an APPROVED, EXECUTING or FAILED request; return what happened per table.

    Raises RestoreRefused when the request does not exist, is not approved,
    ``actor`` (a user) lacks ``governance.request_restore``, or an archival
    run has not finished one of its tables. Another live worker holding the
    request is not an error: the result says so (``skipped``). A table that
    fails (a conflict, a reconciliation, a database error) stops the request
    FAILED with the table named; executing again resumes where it stopped.
    """
    if hasattr(actor, "has_perm"):
        require_permission(actor, REQUEST_PERMISSION, "execute a restore")
    executor = actor_name(actor)
    worker = worker_id or new_worker_id()
    result = RestoreResult(request_id=request_id, worker=worker)
    request = RestoreRequest.objects.select_related("config").filter(pk=request_id).first()
    if request is None:
        raise RestoreRefused(f"there is no restore request {request_id}")
    if request.status not in EXECUTABLE:
        raise RestoreRefused(
            f"restore {request_id} is {request.get_status_display().lower()}; only an approved request is executed"
        )
    if not request.decided_by or request.decided_by == request.requested_by:
        raise RestoreRefused(f"restore {request_id} has no valid approval")
    if not _claim(request_id, worker, executor):
        result.status = request.status
        result.skipped = "another worker is executing this request"
        return result
    request.refresh_from_db()
    AuditEvent.objects.record(
        "restore.started",
        actor=actor,
        obj=request,
        table_label=request.table_label,
        details={"request_id": request.pk, "attempt": request.attempts, "worker": worker},
    )
    tables = list(RestoreTable.objects.filter(request=request).select_related("config").order_by("position"))
    failed: tuple | None = None
    try:
        bound_sessions(["archive", *dict.fromkeys(t.config.source_db for t in tables)])
        for table in tables:
            out = TableOutcome(table.table_label, table.position, table.phase)
            result.tables.append(out)
            if table.phase == RestorePhase.RESTORED:
                out.restored, out.skipped_identical = table.restored_count, table.skipped_identical
                out.certificate_id = table.certificate_id
                continue
            try:
                _restore_table(request, table, worker, executor, out)
            except (TableError, RestoreRefused, Error) as exc:
                text = (
                    describe_database_error(exc, ["archive", table.config.source_db]) if isinstance(exc, Error) else ""
                )
                out.error = text or str(exc)
                out.phase = RestorePhase.FAILED
                RestoreTable.objects.filter(pk=table.pk).update(phase=RestorePhase.FAILED, last_error=out.error[:4000])
                failed = (table, out.error)
                break
    except LeaseLost as exc:
        result.error = str(exc)
        result.status = RestoreStatus.EXECUTING
        return result
    now = timezone.now()
    if failed:
        table, error = failed
        result.status, result.error = RestoreStatus.FAILED, f"{table.table_label}: {error}"
        restores.release(request.pk, worker, status=RestoreStatus.FAILED, last_error=result.error[:4000])
        AuditEvent.objects.record(
            "restore.failed",
            actor=actor,
            outcome="FAILED",
            obj=request,
            table_label=table.table_label,
            details={"request_id": request.pk, "error": error},
        )
        return result
    with transaction.atomic(using="default"):
        restores.release(request.pk, worker, status=RestoreStatus.COMPLETED, finished_at=now, last_error="")
        AuditEvent.objects.record(
            "restore.completed",
            actor=actor,
            obj=request,
            table_label=request.table_label,
            counts={t.label: t.restored for t in result.tables},
            details={
                "request_id": request.pk,
                "restored": result.restored,
                "skipped_identical": sum(t.skipped_identical for t in result.tables),
                "held": sum(t.held for t in result.tables),
                "certificates": [t.certificate_id for t in result.tables],
            },
        )
    result.status = RestoreStatus.COMPLETED
    return result
