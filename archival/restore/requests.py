"""Restore requests: ask (with a preview of what would happen), approve, reject.

``create_request`` validates everything first and saves nothing when it
refuses (RestoreRefused, with a message a person can act on). A request
plans its tables: the requested table last, before it every configured
table it references (live foreign keys, and the contract join of a contract
config) whose referenced rows are archived, recursively: parents come back
before their children, the reverse of archival. ``preview`` counts, per
table and in SQL, the rows selected, held, in conflict with the source,
already identical there, and eligible again under the current config.

Approval is a second person's: ``governance.approve_restore``, never the
requester, only while the request waits for approval (a conditional UPDATE,
so two decisions cannot both win).
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field

from django.db import DatabaseError, transaction
from django.utils import timezone

from archival.backends import SchemaError, backend_for
from archival.disposal.tables import ARCHIVE, archive_table_for
from archival.engine.dates import subtract_months
from archival.engine.dependencies import references_from
from archival.restore.errors import RestoreRefused
from archival.restore.selection import RestoreTarget, resolve_target, selection_of, selection_sql
from archival.restore.streaming import compare_with_source
from archival.rowkeys import coerce, key_text, parse_component, to_json_component
from governance.actors import actor_name
from governance.models import (
    OPEN_PHASES,
    OPEN_RESTORE_STATUSES,
    ArchivalRun,
    AuditEvent,
    RecoveryState,
    RestoreKey,
    RestoreRequest,
    RestoreSelection,
    RestoreStatus,
    RestoreTable,
    TableConfig,
)

MAX_KEYS = 100_000
REQUEST_PERMISSION = "governance.request_restore"
APPROVE_PERMISSION = "governance.approve_restore"


@dataclass
class RestorePreview:
    """What executing the request would do now, per table in execution order (parents first)."""

    request: object  # RestoreRequest
    tables: list = field(default_factory=list)  # RestoreTable rows, counts saved
    problems: list[str] = field(default_factory=list)

    @property
    def planned(self) -> int:
        return sum(t.planned_count for t in self.tables)

    def __str__(self) -> str:
        lines = [f"Restore {self.request.pk} of {self.request.table_label}: {self.request.get_status_display()}"]
        for t in self.tables:
            lines.append(
                f"  {t.position}. {t.table_label}: {t.planned_count} rows, {t.held_count} held, "
                f"{t.conflict_count} in conflict, {t.identical_count} already in the source, "
                f"{t.eligible_again_count} eligible again"
            )
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


# -- who may ------------------------------------------------------------------


def require_permission(actor, permission: str, what: str) -> None:
    """RestoreRefused unless ``actor`` is an active user holding ``permission`` (superusers are not exempt from review)."""
    if not hasattr(actor, "has_perm"):
        raise RestoreRefused(f"{what} needs a user account (got {actor_name(actor)!r})")
    if not actor.is_active or not actor.has_perm(permission):
        raise RestoreRefused(f"{actor_name(actor)} may not {what} (needs {permission})")


# -- input --------------------------------------------------------------------


def _key(target: RestoreTarget, values, what: str) -> list:
    """One primary key from user input, typed by the archive's key columns; RestoreRefused if it is not one."""
    t = target.archive
    if not isinstance(values, (list, tuple)) or len(values) != len(t.pk):
        raise RestoreRefused(f"{what}: a key of {t.label} has {len(t.pk)} component(s) ({', '.join(t.pk)})")
    typed = []
    for value, name, generic in zip(values, t.pk, t.pk_generic, strict=True):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RestoreRefused(f"{what}: {name} is empty")
        if isinstance(value, str):
            value = value.strip()
        try:
            # Typed text is read like the hold form reads it (``1`` and ``true`` are one boolean).
            out = parse_component(value, generic) if isinstance(value, str) else coerce(value, generic)
            if generic in {"int", "bigint"} and (isinstance(out, bool) or not isinstance(out, int)):
                raise ValueError
            if generic == "decimal":
                out = decimal.Decimal(str(out))
                if not out.is_finite():
                    raise ValueError
        except (ValueError, TypeError, decimal.InvalidOperation):
            raise RestoreRefused(f"{what}: {value!r} is not a valid {name} ({generic})") from None
        typed.append(out)
    return typed


def _date(value, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value or "").strip())
    except ValueError:
        raise RestoreRefused(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def _validated_values(target: RestoreTarget, selection: str, values: dict) -> tuple[dict, list[str]]:
    """The request's fields for ``selection`` (and, for KEYS, the canonical key texts), or RestoreRefused."""
    if selection not in RestoreSelection.values:
        raise RestoreRefused(f"unknown selection {selection!r}; one of {', '.join(RestoreSelection.values)}")
    fields: dict = {}
    key_texts: list[str] = []
    if selection == RestoreSelection.KEY_RANGE:
        if values["key_low"] is None or values["key_high"] is None:
            raise RestoreRefused("a key range needs its first and its last key")
        low = _key(target, values["key_low"], "first key")
        high = _key(target, values["key_high"], "last key")
        try:
            backwards = tuple(low) > tuple(high)
        except TypeError:  # components the database orders but Python does not compare: it finds nothing
            backwards = False
        if backwards:
            raise RestoreRefused("the first key of the range is after the last key")
        fields["key_low"] = [to_json_component(v) for v in low]
        fields["key_high"] = [to_json_component(v) for v in high]
    elif selection == RestoreSelection.CONTRACT:
        value = str(values["contract_value"] or "").strip()
        if not value:
            raise RestoreRefused("a contract restore needs the contract id")
        if len(value) > 200:
            raise RestoreRefused("a contract id is at most 200 characters")
        if not target.archive.contract_column:
            raise RestoreRefused(f"{target.label} has no contract column; choose its rows another way")
        fields["contract_value"] = value
    elif selection == RestoreSelection.KEYS:
        keys = values["keys"]
        if not keys:
            raise RestoreRefused("a keys restore needs at least one key")
        if len(keys) > MAX_KEYS:
            raise RestoreRefused(f"at most {MAX_KEYS:,} keys per request; split the list")
        seen = {}
        for i, key in enumerate(keys, 1):
            text = key_text(_key(target, key, f"key {i}"), target.archive.pk_generic, target.archive.scales)
            seen.setdefault(text, None)
        key_texts = list(seen)
        if any(len(text) > 1000 for text in key_texts):
            raise RestoreRefused("a key is longer than 1,000 characters")
        fields["key_count"] = len(key_texts)
    elif selection == RestoreSelection.DATE_RANGE:
        if values["date_from"] is None or values["date_to"] is None:
            raise RestoreRefused("a date range needs its first and its last date")
        date_from, date_to = _date(values["date_from"], "first date"), _date(values["date_to"], "last date")
        if date_from > date_to:
            raise RestoreRefused("the first date of the range is after the last date")
        fields.update(date_from=date_from, date_to=date_to)
    elif selection == RestoreSelection.RUN:
        run_id = values["archive_run_id"]
        if isinstance(run_id, str) and run_id.strip().isdigit():
            run_id = int(run_id)
        if type(run_id) is not int or run_id < 1:
            raise RestoreRefused(f"archive run must be a run number, not {run_id!r}")
        if not ArchivalRun.objects.filter(pk=run_id).exists():
            raise RestoreRefused(f"there is no archival run {run_id}")
        fields["archive_run_id"] = run_id
    return fields, key_texts


# -- planning -----------------------------------------------------------------


def _parents_of(config) -> list[tuple[object, str, str]]:
    """(parent config, our referencing column, the parent's referenced column) of ``config``.

    A parent is an active config of the same source database and schema that
    ``config``'s table references by a single-column foreign key of the live
    catalog, or by its contract join; only parents with an archive table (rows
    never archived are in the source and need nothing). A table's reference
    to itself is left out: its rows come back in one selection.
    """
    source = backend_for(config.source_db)
    try:
        info = source.describe(config.schema_name, config.table_name)
    except SchemaError:
        raise RestoreRefused(f"source table {config} does not exist") from None
    candidates = TableConfig.objects.active().filter(source_db=config.source_db, schema_name=config.schema_name)
    return [
        (ref.parent, ref.column, ref.parent_column)
        for ref in references_from(config, candidates, info.foreign_keys)
        if archive_table_for(ref.parent) is not None
    ]


def plan_tables(request) -> list:
    """Create the request's RestoreTable rows: parents (and theirs) first, the requested table last."""
    # Breadth-first from the requested table; a table reached twice keeps its
    # first (nearest) route. Depth decides the order: the deepest ancestors first.
    nodes = [(request.config, None, "", "", 0)]  # (config, child index, ref column, key column, depth)
    seen = {request.config.pk}
    i = 0
    while i < len(nodes):
        config, _, _, _, depth = nodes[i]
        for parent, column, ref_column in _parents_of(config):
            if parent.pk in seen:
                continue
            seen.add(parent.pk)
            nodes.append((parent, i, column, ref_column, depth + 1))
        i += 1
    order = sorted(range(len(nodes)), key=lambda n: (-nodes[n][4], n))
    created: dict[int, RestoreTable] = {}
    # Children must exist before the parents that point at them: create from the requested table outwards.
    for n in range(len(nodes)):
        config, child, column, ref_column, _ = nodes[n]
        row = RestoreTable(
            request=request,
            config=config,
            table_label=config.label,
            position=order.index(n) + 1,
            referenced_by=created.get(child) if child is not None else None,
            ref_column=column,
            key_column=ref_column,
        )
        row.full_clean()
        row.save()
        created[n] = row
    return [created[n] for n in order]


# -- counting -----------------------------------------------------------------


def _count(backend, sql: str, params: list) -> int:
    with backend.connection.cursor() as cur:
        cur.execute(sql, params)
        return int(cur.fetchone()[0] or 0)


def count_table(table, target: RestoreTarget, today: dt.date) -> dict:
    """The preview counts of one RestoreTable, in SQL (``streaming.compare_with_source`` across servers)."""
    t = target.archive
    b = t.backend
    sel, params = selection_sql(t, selection_of(table))
    base = f"FROM {t.qualified} a WHERE {sel}"
    counts = {"planned_count": _count(b, f"SELECT COUNT(*) {base}", params)}
    held, held_params = t.held_sql(today)
    counts["held_count"] = (
        _count(b, f"SELECT COUNT(*) {base} AND {held}", [*params, *held_params]) if counts["planned_count"] else 0
    )
    threshold = subtract_months(today, table.config.effective_months)
    counts["eligible_again_count"] = _count(
        b, f"SELECT COUNT(*) {base} AND {t.col('reference_date')} < %s", [*params, b.param(threshold)]
    )
    if target.mode == "same_server" and b.moves_through_procedures():
        # The runtime login reads no source table on SQL Server; the signed procedure compares.
        counts["conflict_count"], counts["identical_count"] = b.restore_source_counts(
            config=table.config, selection=selection_of(table)
        )
    elif target.mode == "same_server":
        src = target.source_table(b)
        joined = f"FROM {t.qualified} a, {src} s WHERE {target.key_match(b, 's', 'a')} AND {sel}"
        same = target.identical(b, "a", "s")
        counts["conflict_count"] = _count(b, f"SELECT COUNT(*) {joined} AND NOT ({same})", params)
        counts["identical_count"] = _count(b, f"SELECT COUNT(*) {joined} AND {same}", params)
    else:
        counts["conflict_count"], counts["identical_count"], _ = compare_with_source(target, sel, params)
    return counts


def _unfinished_runs(config_ids) -> dict[int, int]:
    """config id -> an archival run that has not finished that table (the restore waits for it)."""
    return dict(
        RecoveryState.objects.filter(config_id__in=list(config_ids), phase__in=OPEN_PHASES).values_list(
            "config_id", "run_id"
        )
    )


def preview(request) -> RestorePreview:
    """Recount and save every table's preview counts; report what stands in the way or needs a decision.

    Changes nothing but the RestoreTable counts of an open request (a
    finished one keeps the counts it was executed with).
    """
    result = RestorePreview(request=request)
    tables = list(RestoreTable.objects.filter(request=request).select_related("config", "request").order_by("position"))
    result.tables = tables
    if request.status not in OPEN_RESTORE_STATUSES:
        return result
    today = timezone.localdate()
    blocked = _unfinished_runs(t.config_id for t in tables)
    for table in tables:
        try:
            target = resolve_target(table.config)
            counts = count_table(table, target, today)
        except RestoreRefused as exc:
            result.problems.append(f"{table.table_label}: cannot be restored: {exc}")
            continue
        except DatabaseError as exc:
            result.problems.append(f"{table.table_label}: could not be counted: {exc}")
            continue
        for name, value in counts.items():
            setattr(table, name, value)
        RestoreTable.objects.filter(pk=table.pk).update(**counts)
        label = table.table_label
        if table.conflict_count:
            result.problems.append(
                f"{label}: {table.conflict_count} selected row(s) exist in the source with other values; "
                "the table stops with nothing moved until they are resolved in the source"
            )
        if table.eligible_again_count:
            result.problems.append(
                f"{label}: {table.eligible_again_count} of {table.planned_count} rows are eligible under the "
                f"current config ({table.config.effective_months} months in source): fix the config first "
                "(TableConfig months/retention) or the next run archives them again"
            )
        if table.held_count:
            result.problems.append(
                f"{label}: {table.held_count} row(s) are under an active hold; restoring them is allowed "
                "(nothing is destroyed) and recorded"
            )
        if table.config_id in blocked:
            result.problems.append(
                f"{label}: archival run {blocked[table.config_id]} has not finished this table; "
                "the restore waits until it is resumed or abandoned"
            )
    return result


# -- the request --------------------------------------------------------------


def create_request(
    config,
    selection: str,
    *,
    actor,
    reason: str,
    key_low: list | None = None,
    key_high: list | None = None,
    contract_value: str = "",
    keys: list[list] | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    archive_run_id: int | None = None,
):
    """Validate, save and preview a restore request (status PENDING_APPROVAL); audit ``restore.requested``.

    Raises RestoreRefused (nothing saved) when the actor lacks
    ``governance.request_restore``, a value is not valid for the table, the
    table has nothing archived or cannot take its rows back, or no archived
    row matches the selection.
    """
    require_permission(actor, REQUEST_PERMISSION, "request a restore")
    if config is None or getattr(config, "pk", None) is None:
        raise RestoreRefused("choose the table to restore")
    reason = (reason or "").strip()
    if not reason:
        raise RestoreRefused("say why the rows come back (a ticket, a recalculation, a regulator's case)")
    target = resolve_target(config)
    fields, key_texts = _validated_values(
        target,
        selection,
        {
            "key_low": key_low,
            "key_high": key_high,
            "contract_value": contract_value,
            "keys": keys,
            "date_from": date_from,
            "date_to": date_to,
            "archive_run_id": archive_run_id,
        },
    )
    request = RestoreRequest(
        config=config,
        table_label=config.label,
        selection=selection,
        reason=reason,
        requested_by=actor_name(actor),
        **fields,
    )
    try:
        request.full_clean()
    except Exception as exc:  # ValidationError: a field the form did not bound
        raise RestoreRefused(f"the request is not valid: {exc}") from None
    # One transaction per database, rolled back together on a refusal below.
    with transaction.atomic(using="default"), transaction.atomic(using=ARCHIVE):
        request.save()
        if key_texts:
            RestoreKey.objects.using(ARCHIVE).bulk_create(
                [RestoreKey(request_id=request.pk, key_text=text) for text in key_texts], batch_size=1000
            )
        plan_tables(request)
        shown = preview(request)
        own = shown.tables[-1]
        if own.planned_count == 0:
            raise RestoreRefused(f"no archived row of {config} matches the selection; nothing to restore")
        AuditEvent.objects.record(
            "restore.requested",
            actor=actor,
            obj=request,
            table_label=request.table_label,
            counts={t.table_label: t.planned_count for t in shown.tables},
            details={
                "request_id": request.pk,
                "selection": selection_of(own),
                "reason": reason,
                "tables": [t.table_label for t in shown.tables],
                "held": sum(t.held_count for t in shown.tables),
                "conflicts": sum(t.conflict_count for t in shown.tables),
                "eligible_again": sum(t.eligible_again_count for t in shown.tables),
                "problems": shown.problems,
            },
        )
    return request


def _decide(request, *, actor, comment: str, approve: bool):
    require_permission(actor, APPROVE_PERMISSION, "approve or reject restores")
    comment = (comment or "").strip()
    if not comment:
        raise RestoreRefused("a comment is required")
    name = actor_name(actor)
    current = RestoreRequest.objects.filter(pk=request.pk).first()
    if current is None:
        raise RestoreRefused(f"there is no restore request {request.pk}")
    if name == current.requested_by:
        raise RestoreRefused(f"{name} requested restore {current.pk} and may not decide on it")
    if current.status != RestoreStatus.PENDING_APPROVAL:
        raise RestoreRefused(
            f"restore {current.pk} is {current.get_status_display().lower()}, not waiting for approval"
        )
    status = RestoreStatus.APPROVED if approve else RestoreStatus.REJECTED
    now = timezone.now()
    with transaction.atomic(using="default"):
        # Conditional: of two decisions at once, one changes the row.
        won = RestoreRequest.objects.filter(pk=current.pk, status=RestoreStatus.PENDING_APPROVAL).update(
            status=status, decided_by=name, decided_user=actor if actor.pk else None, decided_at=now,
            decision_comment=comment,
        )  # fmt: skip
        if not won:
            raise RestoreRefused(f"restore {current.pk} was decided by someone else meanwhile; reload it")
        current.refresh_from_db()
        AuditEvent.objects.record(
            "restore.approved" if approve else "restore.rejected",
            actor=actor,
            obj=current,
            table_label=current.table_label,
            details={"request_id": current.pk, "comment": comment, "requested_by": current.requested_by},
        )
    request.__dict__.update(
        {k: getattr(current, k) for k in ("status", "decided_by", "decided_at", "decision_comment")}
    )
    request.decided_user_id = current.decided_user_id
    return current


def approve(request, *, actor, comment: str):
    """Approve a waiting request as ``actor`` (governance.approve_restore, not the requester)."""
    return _decide(request, actor=actor, comment=comment, approve=True)


def reject(request, *, actor, comment: str):
    """Reject a waiting request as ``actor`` (governance.approve_restore, not the requester)."""
    return _decide(request, actor=actor, comment=comment, approve=False)
