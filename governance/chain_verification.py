"""Verification of the audit chain, the certificate chain and the anchors between them.

``governance.audit_chain`` writes the chains; this module reads them back,
recomputes every hash and names the first entry that does not match. It
reads the models, which the write path must not (the models call it), so the
two live apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from governance.audit_chain import CHAIN_NAME, GENESIS, audit_entry_hash, certificate_hash
from governance.models import AuditChainHead, AuditEvent, BatchStatus, DisposalBatch, DisposalCertificate


@dataclass
class ChainReport:
    """What ``verify_chains`` found: counts, head hashes, and the broken entries by name."""

    ok: bool = True
    audit_events: int = 0
    certificates: int = 0
    audit_head: str = ""
    certificate_head: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_broken: str = ""
    log_path: str = ""

    def fail(self, message: str) -> None:
        if self.ok:
            self.first_broken = message
        self.ok = False
        self.errors.append(message)


def verify_chains(*, write_log: bool = True) -> ChainReport:
    """Recompute the audit chain, the certificate chain and their anchors.

    Reads only. Names the first broken entry (``report.first_broken``). When
    ``write_log`` is set, appends the head hashes to the daily log
    ``archival_YYYYMMDD.log`` in ``settings.ARCHIVAL["LOG_DIR"]`` for anchoring
    outside the database.
    """
    report = ChainReport()
    prev = GENESIS
    anchors: dict[int, str] = {}
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        report.audit_events += 1
        if event.prev_hash != prev:
            report.fail(
                f"audit event {event.pk} ({event.action}): prev_hash does not match the entry before it (deleted or reordered entry)"
            )
        expected = audit_entry_hash(event)
        if event.entry_hash != expected:
            report.fail(
                f"audit event {event.pk} ({event.action}): entry_hash does not match its contents (row altered)"
            )
        prev = event.entry_hash
        if (
            event.action == "disposal.executed"
            and isinstance(event.details, dict)
            and "certificate_id" in event.details
        ):
            try:
                anchors[int(event.details["certificate_id"])] = str(event.details.get("certificate_hash", ""))
            except (TypeError, ValueError):
                report.fail(f"audit event {event.pk}: malformed certificate anchor")
    report.audit_head = prev
    head = AuditChainHead.objects.filter(name=CHAIN_NAME).first()
    if head is not None and head.head_hash != prev:
        report.fail(
            f"audit chain head: stored head {head.head_hash[:12]} is not the last entry's hash {prev[:12]} (entries removed at the end?)"
        )

    cprev = GENESIS
    for cert in DisposalCertificate.objects.order_by("id").iterator(chunk_size=2000):
        report.certificates += 1
        if cert.prev_hash != cprev:
            report.fail(
                f"certificate {cert.pk} ({cert.table_label}): prev_hash does not match the certificate before it"
            )
        expected = certificate_hash(cert)
        if cert.certificate_hash != expected:
            report.fail(
                f"certificate {cert.pk} ({cert.table_label}): certificate_hash does not match its contents (row altered)"
            )
        anchor = anchors.get(cert.pk)
        if anchor is None:
            executed = DisposalBatch.objects.filter(pk=cert.batch_id, status=BatchStatus.EXECUTED).exists()
            message = f"certificate {cert.pk}: no disposal.executed audit event anchors it"
            if executed:
                report.fail(message)
            else:
                report.warnings.append(message + " yet (execution not finalised; resume the disposal)")
        elif anchor != cert.certificate_hash:
            report.fail(
                f"certificate {cert.pk} ({cert.table_label}): its hash differs from the one anchored in the audit trail"
            )
        cprev = cert.certificate_hash
    report.certificate_head = cprev

    if write_log:
        report.log_path = str(write_head_to_log(report))
    return report


def write_head_to_log(report: ChainReport) -> Path:
    """Append the head hashes to today's ``archival_YYYYMMDD.log``, a copy kept outside the database."""
    log_dir = Path(settings.ARCHIVAL["LOG_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    now = timezone.now()
    path = log_dir / f"archival_{now:%Y%m%d}.log"
    line = (
        f"{now.isoformat()} chain-head audit={report.audit_head or '-'} events={report.audit_events} "
        f"certificates={report.certificate_head or '-'} count={report.certificates} status={'OK' if report.ok else 'BROKEN'}\n"
    )
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
    return path
