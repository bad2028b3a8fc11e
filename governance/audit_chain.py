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

This module writes the chains: the hashes, and the append under the head's
lock (``AuditChainHead.objects.append``, which ``AuditEvent.objects.record``
calls). It imports no model module when it loads, so the models can import
it (the model types in its hints are read by the type checker only);
``governance.chain_verification`` recomputes the chains and names the first
broken entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING

from django.db import IntegrityError, connections, models, router, transaction
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

if TYPE_CHECKING:
    # AuditChainHead is named in the manager's base class, a string ruff does not read as a type.
    from governance.models.audit import AuditChainHead, AuditEvent  # noqa: F401
    from governance.models.disposal import DisposalCertificate

CHAIN_NAME = "audit"
GENESIS = ""


def canonical_json(value: object) -> str:
    """JSON text of ``value`` as the hashes cover it: as stored by a JSONField, keys sorted."""
    # Normalise like a JSONField round trip (int keys become strings) before
    # hashing, then fix the key order: jsonb reorders keys on PostgreSQL.
    normalised = json.loads(json.dumps(value, default=str))
    return json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp_text(value: dt.datetime | None) -> str:
    """ISO text of a timestamp in UTC, as the hashes cover it (empty for None)."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = value.astimezone(dt.UTC)
    return value.isoformat()


def audit_entry_hash(event: AuditEvent) -> str:
    """SHA-256 of an audit event's fields and its prev_hash (``actor_user`` is
    left out: it is SET_NULL when the account is deleted, legitimately)."""
    parts = [
        "audit-v1",
        str(event.pk),
        timestamp_text(event.occurred_at),
        event.actor,
        event.action,
        event.outcome,
        event.object_type,
        event.object_id,
        event.object_repr,
        "" if event.run_id is None else str(event.run_id),
        event.table_label,
        canonical_json(event.counts),
        canonical_json(event.details),
        event.host,
        event.prev_hash,
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def certificate_hash(cert: DisposalCertificate) -> str:
    """SHA-256 of a certificate's fields and its prev_hash."""
    parts = [
        "certificate-v1",
        str(cert.batch_id),
        str(cert.config_id),
        cert.table_label,
        canonical_json(cert.key_columns),
        canonical_json(cert.key_low),
        canonical_json(cert.key_high),
        str(cert.planned_count),
        str(cert.row_count),
        str(cert.held_count),
        cert.digest,
        cert.encoding,
        cert.disposable_before.isoformat() if cert.disposable_before else "",
        canonical_json(cert.approvals),
        canonical_json(cert.holds_checked),
        cert.planned_by,
        cert.executed_by,
        timestamp_text(cert.executed_at),
        cert.prev_hash,
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class GuardNotMet(Exception):
    """The UPDATE that had to go with an audit event changed no row: nothing was appended."""


class AuditChainHeadManager(models.Manager["AuditChainHead"]):
    """The write path of the audit chain, on the head row it locks (``AuditChainHead.objects``)."""

    def append(self, event: AuditEvent, guard: tuple[str, list] | None = None) -> AuditEvent:
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
        event_model = type(event)
        using = router.db_for_write(event_model)
        # savepoint=False: inside the caller's transaction a failure here rolls
        # the whole of it back anyway; a savepoint would cost two statements per event.
        with transaction.atomic(using=using, savepoint=False):
            backend = backend_for(using)
            if plain_sql(using) and backend.draws_ids_under_head_lock():
                return self._append_with_sequence(event, backend, guard)
            if guard is not None:
                with connections[using].cursor() as cur:
                    changed = execute_counted(using, cur, *guard)
                if changed != 1:
                    raise GuardNotMet(f"the update guarding {event.action} changed {changed} rows")
            head_id, event.prev_hash = self._lock_head(using)
            event.entry_hash = ""
            insert(event, using)
            # The hash covers the id, which the insert assigned.
            event.entry_hash = audit_entry_hash(event)
            update_where(event_model, {"entry_hash": event.entry_hash}, pk=event.pk)
            linked = update_where(self.model, {"last_event_id": event.pk, "head_hash": event.entry_hash}, pk=head_id)
            if linked != 1:
                raise IntegrityError(f"audit chain head {CHAIN_NAME!r} disappeared while an event was appended")
        return event

    def _lock_head(self, using: str) -> tuple[int, str]:
        """Lock the chain head row for the rest of the transaction; return its id and hash."""
        head_model = self.model
        head = self.using(using).select_for_update().values_list("pk", "head_hash")
        if plain_sql(using):
            connection = connections[using]
            # SQLite has no row locks: the IMMEDIATE write transaction holds the file.
            lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
            sql = (
                f"SELECT {column(head_model, 'id')}, {column(head_model, 'head_hash')} "
                f"FROM {connection.ops.quote_name(head_model._meta.db_table)} "
                f"WHERE {column(head_model, 'name')} = %s{lock}"
            )
            with connection.cursor() as cur:
                cur.execute(sql, [CHAIN_NAME])
                row = cur.fetchone()
            if row is not None:
                return row[0], row[1]
        else:
            try:
                return head.get(name=CHAIN_NAME)
            except head_model.DoesNotExist:
                pass
        # First append after a flush: create the head; a concurrent creator wins the
        # unique name and we lock its row instead.
        try:
            with transaction.atomic(using=using):
                self.using(using).create(name=CHAIN_NAME)
        except IntegrityError:
            pass
        return head.get(name=CHAIN_NAME)

    def _append_with_sequence(self, event: AuditEvent, backend: Backend, guard: tuple[str, list] | None) -> AuditEvent:
        """The same append in two statements, the guard's included (four elsewhere, five with a guard).

        The first statement (``Backend.take_chain_head_sql``) takes the head,
        creating it after a flush, and draws the event's id under that lock, so
        ids still grow in chain order; the guard's UPDATE runs in it, before the
        head is locked, and stops it when it changed nothing. The hash is then
        computed before the insert, and the insert and the head's move are the
        second statement (``Backend.insert_then_sql``).
        """
        event_model, head_model = type(event), self.model
        using = backend.alias
        head_table = backend.quote(head_model._meta.db_table)
        head_id_col = column(head_model, "id")
        last_event_col, head_hash = column(head_model, "last_event_id"), column(head_model, "head_hash")
        take_sql = backend.take_chain_head_sql(
            head_table=head_table,
            name=column(head_model, "name"),
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
                    event_model._meta.db_table,
                    event_model._meta.pk.column,
                ],
            )
            row = cur.fetchone()
            if row is None:
                raise GuardNotMet(f"the update guarding {event.action} changed no row")
            head_id, event.prev_hash, event.pk = row
            # pre_save fills occurred_at (auto_now_add), which the hash covers:
            # once, before both.
            for field in event_model._meta.concrete_fields:
                field.pre_save(event, True)
            event.entry_hash = audit_entry_hash(event)
            insert_sql, insert_params = insert_statement(event, using, with_pk=True, pre_save=False)
            cur.execute(
                backend.insert_then_sql(
                    insert_sql,
                    f"UPDATE {head_table} SET {last_event_col} = %s, {head_hash} = %s WHERE {head_id_col} = %s",
                ),
                [*insert_params, event.pk, event.entry_hash, head_id],
            )
            if cur.rowcount != 1:
                raise IntegrityError(f"audit chain head {CHAIN_NAME!r} disappeared while an event was appended")
        mark_saved(event, using)
        return event
