"""Hash chains over the audit trail and the disposal certificates.

Audit chain (control database): each ``AuditEvent`` stores ``prev_hash`` (the
previous event's ``entry_hash``) and ``entry_hash`` = SHA-256 over its own
fields and ``prev_hash``. Appends lock the ``AuditChainHead`` row first, so
concurrent workers take turns and the chain never forks; ids grow in chain
order because the insert happens under that lock.

Certificate chain (archive database): each ``DisposalCertificate`` stores the
previous certificate's hash; appends happen under the archive lock, which
every disposal batch holds anyway. Each certificate is also anchored in the
audit chain by a ``disposal.executed`` event whose details carry its hash, so
rewriting a certificate and its own chain still breaks the audit chain.

``verify_chains()`` recomputes all of it and names the first broken entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from archival.backends import Backend, backend_for
from governance.rowsql import (
    column,
    execute_counted,
    insert,
    insert_statement,
    mark_saved,
    plain_sql,
    update_where,
)

CHAIN_NAME = "audit"
GENESIS = ""


def _canonical_json(value) -> str:
    # Normalise like a JSONField round trip (int keys become strings) before
    # hashing, then fix the key order: jsonb reorders keys on PostgreSQL.
    normalised = json.loads(json.dumps(value, default=str))
    return json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _ts(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = value.astimezone(dt.UTC)
    return value.isoformat()


def audit_entry_hash(event) -> str:
    """SHA-256 of an audit event's fields and its prev_hash (``actor_user`` is
    left out: it is SET_NULL when the account is deleted, legitimately)."""
    parts = [
        "audit-v1",
        str(event.pk),
        _ts(event.occurred_at),
        event.actor,
        event.action,
        event.outcome,
        event.object_type,
        event.object_id,
        event.object_repr,
        "" if event.run_id is None else str(event.run_id),
        event.table_label,
        _canonical_json(event.counts),
        _canonical_json(event.details),
        event.host,
        event.prev_hash,
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def certificate_hash(cert) -> str:
    """SHA-256 of a certificate's fields and its prev_hash."""
    parts = [
        "certificate-v1",
        str(cert.batch_id),
        str(cert.config_id),
        cert.table_label,
        _canonical_json(cert.key_columns),
        _canonical_json(cert.key_low),
        _canonical_json(cert.key_high),
        str(cert.planned_count),
        str(cert.row_count),
        str(cert.held_count),
        cert.digest,
        cert.encoding,
        cert.disposable_before.isoformat() if cert.disposable_before else "",
        _canonical_json(cert.approvals),
        _canonical_json(cert.holds_checked),
        cert.planned_by,
        cert.executed_by,
        _ts(cert.executed_at),
        cert.prev_hash,
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _lock_head(using: str) -> tuple[int, str]:
    """Lock the chain head row for the rest of the transaction; return its id and hash."""
    from governance.models import AuditChainHead

    head = AuditChainHead.objects.using(using).select_for_update().values_list("pk", "head_hash")
    if plain_sql(using):
        connection = connections[using]
        # SQLite has no row locks: the IMMEDIATE write transaction holds the file.
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        sql = (
            f"SELECT {column(AuditChainHead, 'id')}, {column(AuditChainHead, 'head_hash')} "
            f"FROM {connection.ops.quote_name(AuditChainHead._meta.db_table)} "
            f"WHERE {column(AuditChainHead, 'name')} = %s{lock}"
        )
        with connection.cursor() as cur:
            cur.execute(sql, [CHAIN_NAME])
            row = cur.fetchone()
        if row is not None:
            return row[0], row[1]
    else:
        try:
            return head.get(name=CHAIN_NAME)
        except AuditChainHead.DoesNotExist:
            pass
    # First append after a flush: create the head; a concurrent creator wins the
    # unique name and we lock its row instead.
    try:
        with transaction.atomic(using=using):
            AuditChainHead.objects.using(using).create(name=CHAIN_NAME)
    except IntegrityError:
        pass
    return head.get(name=CHAIN_NAME)


class GuardNotMet(Exception):
    """The UPDATE that had to go with an audit event changed no row: nothing was appended."""


def append_audit_event(event, guard: tuple[str, list] | None = None):
    """Insert ``event`` as the new head of the audit chain and return it.

    Takes the chain head's row lock (an upsert of the head on PostgreSQL,
    SELECT ... FOR UPDATE on MariaDB; the IMMEDIATE write transaction on
    SQLite) for the rest of the caller's transaction. Lock order everywhere:
    archive lock first, then this one. The statements are plain ones from
    the models' metadata (governance.rowsql): they run twice per archived table.

    ``guard``: an UPDATE (SQL and parameters) that must change one row before
    the event goes in, in the same transaction, else GuardNotMet and nothing
    is appended (the engine's lease check on its recovery state). Its row is
    locked before the head, as when the caller runs it first; on PostgreSQL
    it rides in the statement that takes the head.
    """
    from governance.models import AuditChainHead, AuditEvent

    using = router.db_for_write(AuditEvent)
    # savepoint=False: inside the caller's transaction a failure here rolls
    # the whole of it back anyway; the savepoint cost two statements per event.
    with transaction.atomic(using=using, savepoint=False):
        backend = backend_for(using)
        if plain_sql(using) and backend.draws_ids_under_head_lock():
            return _append_with_sequence(event, backend, guard)
        if guard is not None:
            with connections[using].cursor() as cur:
                changed = execute_counted(using, cur, *guard)
            if changed != 1:
                raise GuardNotMet(f"the update guarding {event.action} changed {changed} rows")
        head_id, event.prev_hash = _lock_head(using)
        event.entry_hash = ""
        insert(event, using)
        # The hash covers the id, which the insert assigned.
        event.entry_hash = audit_entry_hash(event)
        update_where(AuditEvent, {"entry_hash": event.entry_hash}, pk=event.pk)
        linked = update_where(AuditChainHead, {"last_event_id": event.pk, "head_hash": event.entry_hash}, pk=head_id)
        if linked != 1:
            raise IntegrityError(f"audit chain head {CHAIN_NAME!r} disappeared while an event was appended")
    return event


def _append_with_sequence(event, backend: Backend, guard: tuple[str, list] | None):
    """The same append in two statements, the guard's included (four elsewhere, five with a guard).

    The first statement (``Backend.take_chain_head_sql``) takes the head,
    creating it after a flush, and draws the event's id under that lock, so
    ids still grow in chain order; the guard's UPDATE runs in it, before the
    head is locked, and stops it when it changed nothing. The hash is then
    computed before the insert, and the insert and the head's move are the
    second statement (``Backend.insert_then_sql``).
    """
    from governance.models import AuditChainHead, AuditEvent

    using = backend.alias
    head_table = backend.quote(AuditChainHead._meta.db_table)
    head_id_col = column(AuditChainHead, "id")
    last_event_col, head_hash = column(AuditChainHead, "last_event_id"), column(AuditChainHead, "head_hash")
    take_sql = backend.take_chain_head_sql(
        head_table=head_table,
        name=column(AuditChainHead, "name"),
        head_hash=head_hash,
        last_event_id=last_event_col,
        head_id=head_id_col,
        guard_sql=guard[0] if guard is not None else None,
    )
    with backend.connection.cursor() as cur:
        cur.execute(
            take_sql,
            [
                *(guard[1] if guard is not None else []),
                CHAIN_NAME,
                GENESIS,
                AuditEvent._meta.db_table,
                AuditEvent._meta.pk.column,
            ],
        )
        row = cur.fetchone()
        if row is None:
            raise GuardNotMet(f"the update guarding {event.action} changed no row")
        head_id, event.prev_hash, event.pk = row
        # pre_save fills occurred_at (auto_now_add), which the hash covers:
        # once, before both.
        for field in AuditEvent._meta.concrete_fields:
            field.pre_save(event, True)
        event.entry_hash = audit_entry_hash(event)
        insert_sql, insert_params = insert_statement(event, using, with_pk=True, pre_save=False)
        cur.execute(
            backend.insert_then_sql(
                insert_sql, f"UPDATE {head_table} SET {last_event_col} = %s, {head_hash} = %s WHERE {head_id_col} = %s"
            ),
            [*insert_params, event.pk, event.entry_hash, head_id],
        )
        if cur.rowcount != 1:
            raise IntegrityError(f"audit chain head {CHAIN_NAME!r} disappeared while an event was appended")
    mark_saved(event, using)
    return event


def rechain_all(using: str = "default") -> int:
    """Chain every audit event in id order (migration backfill). Returns the count."""
    from governance.models import AuditChainHead, AuditEvent

    prev = GENESIS
    count = 0
    last_id = None
    for event in AuditEvent.objects.using(using).order_by("id").iterator():
        event.prev_hash = prev
        event.entry_hash = audit_entry_hash(event)
        AuditEvent.objects.using(using).filter(pk=event.pk).update(
            prev_hash=event.prev_hash, entry_hash=event.entry_hash
        )
        prev = event.entry_hash
        last_id = event.pk
        count += 1
    AuditChainHead.objects.using(using).update_or_create(
        name=CHAIN_NAME, defaults={"head_hash": prev, "last_event_id": last_id}
    )
    return count


@dataclass
class ChainReport:
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
    from governance.models import AuditChainHead, AuditEvent, BatchStatus, DisposalBatch, DisposalCertificate

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
