"""Disposal planning, review and execution.

Plan: per table, archive rows whose ``retention_until`` has passed and that
no active hold covers become batches of at most ``effective_batch_size``
rows (a key range and a count). Held rows are reported with the holds that
block them. ``dry_run`` plans without writing.

Review: ``decide_batch`` records an approval or a rejection; the policy
(``policy.py``) says how many distinct approvers a table type needs; the
planner never approves their own batch; superusers are not exempt.

Execute: one batch per archive transaction, which takes the archive lock,
re-reads the holds, deletes the expired unheld rows of the key range through
the archive backend (``Backend.dispose_batch``: ``DELETE ... RETURNING`` the
keys with the range's expired rows counted before and after, or SQL Server's
``archival.usp_dispose_batch``), reconciles the counts and writes the
certificate, all before it commits. A crash before the commit leaves
nothing; a crash after it leaves a certificate, which the next execution
finds (unique per batch) and finalises without deleting again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from django.db import DatabaseError, transaction
from django.utils import timezone

from archival.backends import SchemaError
from archival.disposal.policy import required_approvals
from archival.disposal.tables import ARCHIVE, ArchiveTable, DisposalError, archive_table_for, take_archive_lock
from archival.engine.errors import LeaseLost, describe_database_error
from archival.engine.leases import disposal_batches, new_worker_id
from archival.engine.table_names import select_configs
from archival.hold_coverage import TableFacts, covered_counts, may_cover_table
from archival.rowkeys import ENCODING_NAME, digest_of_keys, key_bounds, key_text, to_json_component
from governance.actors import actor_name
from governance.audit_chain import certificate_hash
from governance.models import (
    DESCRIBED_BY,
    AuditEvent,
    BatchStatus,
    Decision,
    DisposalApproval,
    DisposalBatch,
    DisposalCertificate,
    Hold,
    describe_hold,
)


def _configs(tables):
    """The active configs ``tables`` names (archival.engine.table_names; UnknownTable for a name of none), by label."""
    return sorted(select_configs(tables), key=lambda c: (c.source_db, c.schema_name, c.table_name))


def _relevant_holds(t: ArchiveTable, at: dt.date) -> list:
    """Holds in force that could cover rows of ``t`` (cheap prefilter for reports)."""
    facts = TableFacts.of(t.config, t.contract_column)
    return [h for h in Hold.objects.using(ARCHIVE).active(at).order_by("id") if may_cover_table(h, facts)]


def _holds_checked(at: dt.date) -> list[dict]:
    """The holds in force on ``at``, summarised for a certificate (``holds_checked``).

    Read as values, not Hold instances: a certificate lists every hold in
    force, and building a thousand instances, timestamps parsed, was about a
    tenth of an executed batch's time.
    """
    holds = Hold.objects.using(ARCHIVE).active(at).order_by("id").values(*DESCRIBED_BY, "placed_by", "reason")
    return [
        {
            "id": hold["pk"],
            "scope": hold["scope"],
            "description": describe_hold(**{name: hold[name] for name in DESCRIBED_BY}),
            "placed_by": hold["placed_by"],
            "reason": hold["reason"][:200],
        }
        for hold in holds
    ]


def _scalar(cur, sql: str, params: list) -> int:
    cur.execute(sql, params)
    return int(cur.fetchone()[0] or 0)


# -- planning ---------------------------------------------------------------------


@dataclass
class PlannedBatch:
    batch_no: int
    key_low: list
    key_high: list
    row_count: int
    held_in_range: int = 0
    batch_id: int | None = None
    status: str = ""


@dataclass
class BlockingHold:
    hold_id: int
    description: str
    rows: int


@dataclass
class DisposalTablePlan:
    table_label: str
    table_type: str
    expired_rows: int = 0
    disposable_rows: int = 0
    held_rows: int = 0
    required_approvals: int = 0
    batches: list[PlannedBatch] = field(default_factory=list)
    blocking_holds: list[BlockingHold] = field(default_factory=list)
    skipped: str = ""
    error: str = ""


@dataclass
class DisposalPlanResult:
    plan_id: str
    dry_run: bool
    disposable_before: dt.date
    planned_by: str
    tables: list[DisposalTablePlan] = field(default_factory=list)

    @property
    def batch_count(self) -> int:
        return sum(len(t.batches) for t in self.tables)

    @property
    def disposable_rows(self) -> int:
        return sum(t.disposable_rows for t in self.tables)

    @property
    def held_rows(self) -> int:
        return sum(t.held_rows for t in self.tables)

    @property
    def ok(self) -> bool:
        return not any(t.error for t in self.tables)


def plan_disposal(
    *, tables: list[str] | None = None, actor=None, dry_run: bool = False, today: dt.date | None = None
) -> DisposalPlanResult:
    """Queue expired, unheld archive rows as disposal batches (or only report them).

    ``tables``: labels (source.schema.table), table names or config ids;
    default every active config. A table that already has open batches is
    skipped (reported), so a plan never queues a row twice. Writes
    DisposalBatch rows and ``disposal.planned`` audit events unless
    ``dry_run``; never changes archive data.
    """
    today = today or timezone.localdate()
    planner = actor_name(actor)
    result = DisposalPlanResult(plan_id=str(uuid.uuid4()), dry_run=dry_run, disposable_before=today, planned_by=planner)
    for config in _configs(tables):
        tp = DisposalTablePlan(table_label=config.label, table_type=config.table_type)
        result.tables.append(tp)
        try:
            tp.required_approvals = required_approvals(config.table_type)
            t = archive_table_for(config)
            if t is None:
                tp.skipped = "nothing archived yet"
                continue
            open_batches = DisposalBatch.objects.open().filter(config=config).count()
            if open_batches:
                tp.skipped = f"{open_batches} batch(es) already queued; execute or reject them first"
                continue
            _plan_table(t, tp, today)
        except (SchemaError, DisposalError, DatabaseError) as exc:
            tp.error = str(exc)
            continue
        if dry_run or not tp.batches:
            if not dry_run and (tp.held_rows or tp.expired_rows):
                AuditEvent.objects.record(
                    "disposal.planned",
                    actor=actor,
                    table_label=config.label,
                    counts={"expired": tp.expired_rows, "held": tp.held_rows, "batches": 0},
                    details={"plan_id": result.plan_id, "blocking_holds": [b.__dict__ for b in tp.blocking_holds]},
                )
            continue
        auto = tp.required_approvals == 0
        with transaction.atomic(using="default"):
            for pb in tp.batches:
                batch = DisposalBatch(
                    config=config,
                    table_label=config.label,
                    table_type=config.table_type,
                    batch_no=pb.batch_no,
                    plan_id=result.plan_id,
                    key_low=pb.key_low,
                    key_high=pb.key_high,
                    row_count=pb.row_count,
                    held_in_range=pb.held_in_range,
                    disposable_before=today,
                    planned_by=planner,
                    required_approvals=tp.required_approvals,
                    status=BatchStatus.APPROVED if auto else BatchStatus.PENDING_REVIEW,
                )
                batch.full_clean()
                batch.save()
                pb.batch_id, pb.status = batch.pk, batch.status
            AuditEvent.objects.record(
                "disposal.planned",
                actor=actor,
                table_label=config.label,
                counts={
                    "expired": tp.expired_rows,
                    "disposable": tp.disposable_rows,
                    "held": tp.held_rows,
                    "batches": len(tp.batches),
                },
                details={
                    "plan_id": result.plan_id,
                    "disposable_before": today.isoformat(),
                    "batch_ids": [b.batch_id for b in tp.batches],
                    "required_approvals": tp.required_approvals,
                    "automatic_approval": auto,
                    "blocking_holds": [b.__dict__ for b in tp.blocking_holds],
                },
            )
    return result


def _plan_table(t: ArchiveTable, tp: DisposalTablePlan, today: dt.date) -> None:
    backend = t.backend
    expired = f"{t.col('retention_until')} < %s"
    # The batches are every expired row no hold covers (hold_coverage.unheld_sql,
    # the form the database evaluates set-based); every other expired row is
    # held, so held counts are expired counts minus batch rows.
    unheld, unheld_params = t.unheld_sql(today)
    relevant = _relevant_holds(t, today)
    with backend.connection.cursor() as cur:
        tp.expired_rows = _scalar(cur, f"SELECT COUNT(*) FROM {t.qualified} a WHERE {expired}", [today])
        if not tp.expired_rows:
            return
        size = t.config.effective_batch_size
        cursor_key = None
        batch_no = 0
        while True:
            after, after_params = t.after_sql(cursor_key)
            sql = backend.limit_sql(
                f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {expired} AND {unheld} AND {after} ORDER BY {t.order_by()}",
                "%s",
            )
            cur.execute(sql, [today, *unheld_params, *after_params, size])
            keys = cur.fetchall()
            if not keys:
                break
            batch_no += 1
            low = [to_json_component(v) for v in keys[0]]
            high = [to_json_component(v) for v in keys[-1]]
            pb = PlannedBatch(batch_no, low, high, len(keys))
            if relevant:
                pb.held_in_range = _scalar(cur, *t.expired_in_range_count_sql(low, high, today)) - pb.row_count
            tp.batches.append(pb)
            tp.disposable_rows += len(keys)
            cursor_key = high
            if len(keys) < size:
                break
        tp.held_rows = tp.expired_rows - tp.disposable_rows
    if tp.held_rows:
        # Every hold counted in a few passes (hold_coverage.covered_counts), not one scan per hold.
        covered = covered_counts(t, today, expired, [today])
        for hold in relevant:
            if covered.get(hold.pk):
                tp.blocking_holds.append(BlockingHold(hold.pk, str(hold), covered[hold.pk]))


# -- review -----------------------------------------------------------------------


@dataclass
class ReviewResult:
    batch_id: int
    decision: str
    accepted: bool
    status: str
    approvals: int
    required: int
    message: str


def decide_batch(batch_id: int, *, user, decision: str, comment: str) -> ReviewResult:
    """Approve or reject one batch as ``user`` (a compliance officer).

    Refuses (and audits the refusal) when: the user lacks
    ``governance.approve_disposal``; the user planned the batch; the user
    already decided on it; the comment is empty; the batch is not waiting for
    review. The batch row is locked while deciding so two approvers cannot
    both count as the last one.
    """
    name = actor_name(user)
    comment = (comment or "").strip()

    def refuse(batch, message):
        # A refusal changes nothing, so it reports the batch as it stands:
        # the approvals already recorded, not zero.
        approvals = batch.decisions.filter(decision=Decision.APPROVE).count() if batch is not None else 0
        AuditEvent.objects.record(
            "disposal.review_refused",
            actor=user,
            outcome="REFUSED",
            obj=batch,
            table_label=getattr(batch, "table_label", ""),
            counts={"approvals": approvals, "required": getattr(batch, "required_approvals", 0)},
            details={"batch_id": batch_id, "decision": decision, "reason": message, "comment": comment},
        )
        return ReviewResult(
            batch_id,
            decision,
            False,
            getattr(batch, "status", ""),
            approvals,
            getattr(batch, "required_approvals", 0),
            message,
        )

    if decision not in Decision.values:
        raise DisposalError(f"unknown decision {decision!r}")
    with transaction.atomic(using="default"):
        batch = DisposalBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None:
            raise DisposalError(f"no disposal batch {batch_id}")
        problem = ""
        if not hasattr(user, "has_perm") or not user.is_active or not user.has_perm("governance.approve_disposal"):
            problem = f"{name} may not review disposals (needs governance.approve_disposal)"
        elif name == batch.planned_by:
            problem = f"{name} planned this batch and may not review it"
        elif batch.status != BatchStatus.PENDING_REVIEW:
            problem = f"batch is {batch.get_status_display().lower()}, not waiting for review"
        elif not comment:
            problem = "a comment is required"
        elif batch.decisions.filter(approver=name).exists():
            problem = f"{name} has already decided on this batch; a second approval must come from someone else"
    if problem:
        return refuse(batch, problem)
    with transaction.atomic(using="default"):
        batch = DisposalBatch.objects.select_for_update().get(pk=batch_id)
        if batch.status != BatchStatus.PENDING_REVIEW or batch.decisions.filter(approver=name).exists():
            # Lost a race with another decision between the checks and the lock.
            problem = "the batch changed while deciding; reload it"
        else:
            approval = DisposalApproval(
                batch=batch, approver=name, approver_user=user if user.pk else None, decision=decision, comment=comment
            )
            approval.full_clean()
            approval.save()
            approvals = batch.decisions.filter(decision=Decision.APPROVE).count()
            if decision == Decision.REJECT:
                batch.status = BatchStatus.REJECTED
            elif approvals >= batch.required_approvals:
                batch.status = BatchStatus.APPROVED
            batch.save(update_fields=["status"])
            AuditEvent.objects.record(
                "disposal.approved" if decision == Decision.APPROVE else "disposal.rejected",
                actor=user,
                obj=batch,
                table_label=batch.table_label,
                counts={"approvals": approvals, "required": batch.required_approvals, "rows": batch.row_count},
                details={"batch_id": batch.pk, "comment": comment, "status": batch.status},
            )
            return ReviewResult(batch.pk, decision, True, batch.status, approvals, batch.required_approvals, "recorded")
    return refuse(batch, problem)


# -- execution ----------------------------------------------------------------------


@dataclass
class DisposalBatchOutcome:
    batch_id: int
    table_label: str
    planned: int
    deleted: int = 0
    held: int = 0
    certificate_id: int | None = None
    digest: str = ""
    resumed: bool = False
    skipped: str = ""
    error: str = ""


@dataclass
class DisposalExecutionResult:
    dry_run: bool
    worker: str
    batches: list[DisposalBatchOutcome] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(b.deleted for b in self.batches)

    @property
    def held(self) -> int:
        return sum(b.held for b in self.batches)

    @property
    def errors(self) -> list[DisposalBatchOutcome]:
        return [b for b in self.batches if b.error]

    @property
    def ok(self) -> bool:
        return not self.errors


def execute_disposal(
    *,
    tables: list[str] | None = None,
    batch_ids: list[int] | None = None,
    actor=None,
    dry_run: bool = False,
    today: dt.date | None = None,
    max_batches: int | None = None,
) -> DisposalExecutionResult:
    """Execute approved batches, one table at a time, one transaction per batch.

    Resumable: batches left EXECUTING by a dead worker are taken over at once
    when it is known dead, else once their lease expires
    (``settings.ARCHIVAL["LEASE_SECONDS"]``; archival.engine.leases); one whose
    certificate committed is only finalised. A failing batch stops its table
    (later batches of that table wait) and is retried by the next execution.
    ``dry_run`` runs each batch's transaction and rolls it back.
    """
    today = today or timezone.localdate()
    worker = new_worker_id()
    result = DisposalExecutionResult(dry_run=dry_run, worker=worker)
    qs = DisposalBatch.objects.executable().select_related("config").order_by("table_label", "plan_id", "batch_no")
    if batch_ids:
        qs = qs.filter(pk__in=batch_ids)
    if tables:
        # Batches planned before their config was switched off are still executed.
        qs = qs.filter(config__in=select_configs(tables, active_only=False))
    stopped_tables: set[str] = set()
    done = 0
    for batch in qs:
        if max_batches is not None and done >= max_batches:
            break
        if batch.table_label in stopped_tables:
            continue
        outcome = execute_batch(batch.pk, actor=actor, dry_run=dry_run, today=today, worker=worker)
        result.batches.append(outcome)
        if outcome.error:
            stopped_tables.add(batch.table_label)
        if not outcome.skipped:
            done += 1
    return result


def execute_batch(
    batch_id: int, *, actor=None, dry_run: bool = False, today: dt.date | None = None, worker: str | None = None
) -> DisposalBatchOutcome:
    """Execute one approved batch (see module docstring for the transaction)."""
    today = today or timezone.localdate()
    worker = worker or new_worker_id()
    executor = actor_name(actor)
    batch = DisposalBatch.objects.select_related("config").get(pk=batch_id)
    out = DisposalBatchOutcome(batch.pk, batch.table_label, batch.row_count)
    executable = [BatchStatus.APPROVED, BatchStatus.EXECUTING, BatchStatus.FAILED]
    if batch.status not in executable:
        out.skipped = f"batch is {batch.status}"
        return out
    approvals = list(batch.decisions.filter(decision=Decision.APPROVE).order_by("decided_at"))
    distinct = {a.approver for a in approvals} - {batch.planned_by}
    if len(distinct) < batch.required_approvals:
        # The status says approved but the decisions do not: refuse rather than trust it.
        out.error = f"batch has {len(distinct)} valid approval(s), needs {batch.required_approvals}"
        _fail(batch, out, actor, dry_run)
        return out
    # Two executors never work on one batch (the certificate's unique batch
    # id would stop a double delete anyway, not the wasted work).
    if not dry_run and not disposal_batches.claim(
        batch.pk, worker, where={"status": executable}, status=BatchStatus.EXECUTING
    ):
        out.skipped = "another worker holds this batch"
        return out
    approval_record = [
        {"approver": a.approver, "decided_at": a.decided_at.astimezone(dt.UTC).isoformat(), "comment": a.comment}
        for a in approvals
    ]
    if batch.required_approvals == 0:
        approval_record = [
            {
                "approver": "policy",
                "decided_at": batch.planned_at.astimezone(dt.UTC).isoformat(),
                "comment": "automatic",
            }
        ]
    try:
        t = archive_table_for(batch.config)
        if t is None:
            raise DisposalError(f"archive table of {batch.table_label} does not exist")
        with transaction.atomic(using=ARCHIVE):
            take_archive_lock(f"dispose:{worker}")
            cert = DisposalCertificate.objects.using(ARCHIVE).filter(batch_id=batch.pk).first()
            if cert is not None:
                out.resumed = True
            else:
                cert = _delete_and_certify(t, batch, today, executor, approval_record, out)
            if dry_run:
                transaction.set_rollback(True, using=ARCHIVE)
    except (DisposalError, SchemaError, DatabaseError) as exc:
        # A read-only, full or failing archive file is named, with what to do.
        out.error = describe_database_error(exc, ["archive", batch.config.source_db]) or str(exc)
        _fail(batch, out, actor, dry_run, worker=worker)
        return out
    out.certificate_id = None if dry_run else cert.pk
    out.deleted, out.held, out.digest = cert.row_count, cert.held_count, cert.digest
    if dry_run:
        return out
    # The archive side committed. Anchor the certificate in the audit chain and
    # close the batch in one control transaction; a crash before this is
    # finalised by the next execution (the certificate exists, out.resumed).
    # Guarded by the lease: an executor that lost it (it outlived its lease
    # and another took the batch over) leaves the closing to the new owner,
    # so the batch is closed, and audited, once.
    audit = dict(
        action="disposal.executed",
        actor=actor or executor,
        obj=batch,
        table_label=batch.table_label,
        counts={"planned": batch.row_count, "deleted": cert.row_count, "held": cert.held_count},
        details={
            "batch_id": batch.pk,
            "certificate_id": cert.pk,
            "certificate_hash": cert.certificate_hash,
            "digest": cert.digest,
            "resumed": out.resumed,
        },
    )
    try:
        with transaction.atomic(using="default"):
            disposal_batches.renew(
                batch,
                worker,
                audit=audit,
                status=BatchStatus.EXECUTED,
                deleted_count=cert.row_count,
                held_count=cert.held_count,
                certificate_id=cert.pk,
                executed_by=cert.executed_by,
                executed_at=cert.executed_at,
                lease_owner="",
                lease_expires_at=None,
                last_error="",
            )
    except LeaseLost:
        holder = disposal_batches.holder(batch.pk) or "nobody (the lease expired)"
        out.skipped = f"lease lost to {holder}, who closes the batch (certificate {cert.pk} committed)"
    return out


def _delete_and_certify(
    t: ArchiveTable, batch, today: dt.date, executor: str, approvals: list, out: DisposalBatchOutcome
):
    """Inside the locked archive transaction: re-check holds, delete, certify."""
    cutoff = min(batch.disposable_before, today)
    holds_checked = _holds_checked(today)
    # The hold check is part of the delete itself, in the transaction that
    # holds the archive lock: a hold placed after approval protects its rows.
    # The backend also counts the range's expired rows before and after the
    # delete: what it removed plus what it left (the held rows) must be what
    # was there, or something else changed the range and the batch rolls back.
    disposed = t.backend.dispose_batch(t, key_low=batch.key_low, key_high=batch.key_high, cutoff=cutoff, holds_at=today)
    deleted_keys, held_count = disposed.keys, disposed.expired_left
    # Approved: the planned rows, plus rows of the range that were held at
    # planning and whose hold was released since (the reviewer saw both
    # counts). More than that means rows arrived in the range after review:
    # raising rolls the delete back.
    if len(deleted_keys) > batch.row_count + batch.held_in_range:
        raise DisposalError(
            f"{len(deleted_keys)} disposable rows in the key range but only {batch.row_count} "
            f"(+{batch.held_in_range} held) were reviewed; reject the batch and plan again"
        )
    if len(deleted_keys) + held_count != disposed.expired_before:
        raise DisposalError(
            f"reconciliation failed: {disposed.expired_before} expired rows in the key range before the delete, "
            f"{len(deleted_keys)} deleted and {held_count} left"
        )
    digest, n = digest_of_keys(deleted_keys)
    first, last = key_bounds(deleted_keys)
    prev = (
        DisposalCertificate.objects.using(ARCHIVE).order_by("-id").values_list("certificate_hash", flat=True).first()
        or ""
    )
    cert = DisposalCertificate(
        batch_id=batch.pk,
        config_id=batch.config_id,
        table_label=batch.table_label,
        key_columns=list(t.pk),
        key_low=key_text(first) if first is not None else None,
        key_high=key_text(last) if last is not None else None,
        planned_count=batch.row_count,
        row_count=n,
        held_count=held_count,
        digest=digest,
        encoding=ENCODING_NAME,
        disposable_before=cutoff,
        approvals=approvals,
        holds_checked=holds_checked,
        planned_by=batch.planned_by,
        executed_by=executor,
        executed_at=timezone.now(),
        prev_hash=prev,
    )
    cert.certificate_hash = certificate_hash(cert)
    cert.full_clean()
    cert.save(using=ARCHIVE)
    return cert


def _fail(batch, out: DisposalBatchOutcome, actor, dry_run: bool, worker: str = "") -> None:
    """Record the batch FAILED; with ``worker``, only while its lease is still ``worker``'s (else it is the new owner's)."""

    if dry_run:
        return
    failed = dict(status=BatchStatus.FAILED, last_error=out.error[:4000])
    if worker:
        if not disposal_batches.release(batch.pk, worker, **failed):
            return
    else:
        DisposalBatch.objects.filter(pk=batch.pk).update(**failed, lease_owner="", lease_expires_at=None)
    AuditEvent.objects.record(
        "disposal.failed",
        actor=actor,
        outcome="FAILED",
        obj=batch,
        table_label=batch.table_label,
        details={"batch_id": batch.pk, "error": out.error},
    )
