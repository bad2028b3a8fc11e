"""Restore certificates: per request and table, what came back, hash-chained like disposal certificates.

``certificate_hash`` covers every field and the previous certificate's hash;
``digest`` is SHA-256 over the canonical key lines (``pk-lines-v1``,
archival.rowkeys) of the RestoredKey rows the batches wrote as they
deleted the rows from the archive. A certificate is appended under the
archive lock, so two restores finishing at once cannot fork the chain.
``verify_restore_certificates`` recomputes all of it, read only.
"""

from __future__ import annotations

import hashlib
import json

from django.db.models import Sum
from django.utils import timezone

from archival.disposal.tables import ARCHIVE, take_archive_lock
from archival.engine.txn import write_transaction
from archival.restore.errors import RestoreReconcileError
from archival.restore.selection import selection_of
from archival.rowkeys import ENCODING_NAME, digest_of_lines
from governance.audit_chain import canonical_json, timestamp_text
from governance.models import AuditEvent, RestoreCertificate, RestoredKey, RestoreLedger, RestoreLedgerState


def restore_certificate_hash(cert) -> str:
    """SHA-256 of a restore certificate's fields and its prev_hash."""
    parts = [
        "restore-certificate-v1",
        str(cert.request_id),
        str(cert.config_id),
        cert.table_label,
        canonical_json(cert.key_columns),
        str(cert.row_count),
        str(cert.skipped_identical),
        str(cert.held_count),
        cert.digest,
        cert.encoding,
        canonical_json(cert.selection),
        cert.reason,
        cert.requested_by,
        cert.approved_by,
        cert.executed_by,
        timestamp_text(cert.executed_at),
        cert.prev_hash,
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _restored_lines(request_id: int, config_id: int) -> list[str]:
    return list(
        RestoredKey.objects.using(ARCHIVE)
        .filter(request_id=request_id, config_id=config_id)
        .values_list("key_text", flat=True)
    )


def issue_certificate(request, table, target, executor: str, *, existing_only: bool = False):
    """The table's certificate: the one already written, or (unless ``existing_only``) a new one.

    Reconciles first: no batch may be left COPYING, and the keys recorded
    must number the rows the ledger says left the archive.
    """
    mine = RestoreCertificate.objects.using(ARCHIVE).filter(request_id=request.pk, config_id=table.config_id)
    found = mine.first()
    if found is not None or existing_only:
        return found
    with write_transaction(ARCHIVE):
        take_archive_lock(f"restore:{request.pk}")
        found = mine.first()
        if found is not None:
            return found
        ledger = RestoreLedger.objects.using(ARCHIVE).filter(request_id=request.pk, config_id=table.config_id)
        if ledger.filter(state=RestoreLedgerState.COPYING).exists():
            raise RestoreReconcileError(f"{table.table_label}: a streamed batch is still COPYING; execute again")
        totals = ledger.aggregate(
            rows=Sum("row_count"),
            skipped=Sum("skipped_identical"),
            held=Sum("held_count"),
            deleted=Sum("deleted_count"),
        )
        lines = _restored_lines(request.pk, table.config_id)
        if len(lines) != (totals["deleted"] or 0):
            raise RestoreReconcileError(
                f"{table.table_label}: {totals['deleted'] or 0} rows left the archive but {len(lines)} keys are recorded"
            )
        prev = (
            RestoreCertificate.objects.using(ARCHIVE).order_by("-id").values_list("certificate_hash", flat=True).first()
            or ""
        )
        cert = RestoreCertificate(
            request_id=request.pk,
            config_id=table.config_id,
            table_label=table.table_label,
            key_columns=list(target.pk),
            row_count=totals["rows"] or 0,
            skipped_identical=totals["skipped"] or 0,
            held_count=totals["held"] or 0,
            digest=digest_of_lines(lines),
            encoding=ENCODING_NAME,
            selection=selection_of(table),
            reason=request.reason,
            requested_by=request.requested_by,
            approved_by=request.decided_by,
            executed_by=executor,
            executed_at=timezone.now(),
            prev_hash=prev,
        )
        cert.certificate_hash = restore_certificate_hash(cert)
        cert.full_clean()
        cert.save(using=ARCHIVE)
    return cert


def verify_restore_certificates() -> list[str]:
    """Recompute every restore certificate: its hash, the chain, its digest and its audit anchor. [] when sound."""
    problems: list[str] = []
    anchored = {
        (e.get("certificate_id"), e.get("certificate_hash"))
        for e in AuditEvent.objects.filter(action="restore.table_restored").values_list("details", flat=True)
    }
    prev = ""
    for cert in RestoreCertificate.objects.using(ARCHIVE).order_by("id"):
        name = f"restore certificate {cert.pk} ({cert.table_label})"
        if cert.prev_hash != prev:
            problems.append(f"{name}: prev_hash does not match the previous certificate")
        if restore_certificate_hash(cert) != cert.certificate_hash:
            problems.append(f"{name}: its fields do not match its hash")
        if digest_of_lines(_restored_lines(cert.request_id, cert.config_id)) != cert.digest:
            problems.append(f"{name}: the restored keys do not match its digest")
        if (cert.pk, cert.certificate_hash) not in anchored:
            problems.append(f"{name}: no restore.table_restored audit event carries its hash")
        prev = cert.certificate_hash
    return problems
