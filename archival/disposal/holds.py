"""Placing and releasing holds: the one write path for holds (admin calls these).

Both take the archive lock, so they serialize with disposal batches: a hold
is either seen by a batch's hold check or placed after that batch committed.
Holds are never deleted (database triggers refuse it); they are released.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.connection import ConnectionDoesNotExist

from archival.backends import SchemaError, backend_for
from archival.disposal.batches import _configs
from archival.disposal.tables import ARCHIVE, archive_table_for, take_archive_lock
from archival.rowkeys import canonical_key_text, key_text_of_input, scale_of
from governance.actors import actor_name
from governance.models import AuditEvent, Hold, HoldKey, HoldScope, TableConfig


def _config_for(source_db: str, schema_name: str, table_name: str):
    qs = TableConfig.objects.filter(source_db=source_db, table_name=table_name)
    if schema_name:
        qs = qs.filter(schema_name=schema_name)
    return qs.first()


def key_column_types(config) -> tuple[list[str], list[int | None]] | None:
    """The generic types and decimal scales of ``config``'s key columns: the archive
    table's, else the source table's; None when neither can be read."""
    try:
        table = archive_table_for(config)
        if table is not None:
            return table.pk_generic, table.scales
        info = backend_for(config.source_db).describe(config.schema_name, config.table_name)
    except (SchemaError, DatabaseError, ConnectionDoesNotExist):
        return None
    columns = [info.column(name) for name in config.pk_columns]
    if any(c is None for c in columns):
        return None
    return [c.generic for c in columns], [scale_of(c) for c in columns]


@dataclass
class HoldCheck:
    """What ``check_hold`` found: errors by field, and the values a placement stores."""

    errors: dict[str, str]
    schema_name: str
    config: object | None
    key_texts: list[str]


def check_hold(
    *,
    scope: str,
    reason: str,
    source_db: str = "",
    schema_name: str = "",
    table_name: str = "",
    contract_value: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    keys: Iterable[Sequence | str] | None = None,
) -> HoldCheck:
    """The rules a hold must meet, without placing it: errors keyed by field.

    The one home of these rules: ``place_hold`` refuses what this finds, and
    the admin's form shows the same errors beside its fields before anything
    is saved. A KEYS hold's keys must each have as many components as the
    table's primary key.
    """
    errors: dict[str, str] = {}
    if not (reason or "").strip():
        errors["reason"] = "A hold needs a reason."
    key_texts: list[str] = []
    config = None
    if scope in (HoldScope.TABLE, HoldScope.KEYS):
        if not source_db or not table_name:
            errors["table_name"] = "This scope needs a source database and a table."
        else:
            config = _config_for(source_db, schema_name, table_name)
            if config is None:
                errors["table_name"] = f"No table config for {source_db}.{schema_name or '*'}.{table_name}."
            elif not schema_name:
                schema_name = config.schema_name
    if scope == HoldScope.CONTRACT and (not source_db or not contract_value):
        errors["contract_value"] = "A contract hold needs a source database and a contract id."
    if scope == HoldScope.DATE_RANGE:
        if date_from is None and date_to is None:
            errors["date_from"] = "A date-range hold needs at least one bound."
        elif date_from and date_to and date_from > date_to:
            errors["date_to"] = "The range ends before it starts."
    if scope == HoldScope.KEYS:
        # Unknown types (neither table readable): the keys are taken as text.
        generics, scales = (key_column_types(config) if config is not None else None) or (None, None)
        for k in keys or []:
            parts = k.split("\t") if isinstance(k, str) else list(k)
            shown = ",".join(str(p) for p in parts)  # comma-separated, as the hold form takes them
            if config is not None and len(parts) != len(config.pk_columns):
                errors["keys"] = (
                    f"Key {shown} has {len(parts)} component(s); each key of {config.table_name} has "
                    f"{len(config.pk_columns)} component(s) ({', '.join(config.pk_columns)}), in that order."
                )
                break
            try:
                if isinstance(k, str):
                    # Key text (components escaped, joined by a TAB), in its
                    # canonical form when the table's types are known.
                    key_texts.append(k if generics is None else canonical_key_text(k, generics, scales))
                else:
                    key_texts.append(key_text_of_input(parts, generics, scales))
            except ValueError as exc:
                errors["keys"] = f"Key {shown}: {exc}."
                break
        if not key_texts and "keys" not in errors:
            errors["keys"] = "A keys hold needs at least one key."
    if scope not in HoldScope.values:
        errors["scope"] = f"Unknown scope {scope!r}."
    return HoldCheck(errors=errors, schema_name=schema_name, config=config, key_texts=key_texts)


def place_hold(
    *,
    scope: str,
    actor,
    reason: str,
    source_db: str = "",
    schema_name: str = "",
    table_name: str = "",
    contract_value: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    keys: Iterable[Sequence | str] | None = None,
    review_by: dt.date | None = None,
    hold_until: dt.date | None = None,
    dry_run: bool = False,
):
    """Place a hold and return it (audited as ``hold.placed``).

    ``keys`` (KEYS scope): each a sequence of key components in key order
    (values, or text as the hold form takes it: ``rowkeys.key_text_of_input``
    reads it by the key columns' types), or an already canonical key text
    (components joined by a TAB). Raises
    ValidationError when the scope's fields are missing or inconsistent
    (``check_hold``).

    ``dry_run``: validate and save the hold inside the archive transaction,
    count what it covers (``hold.impact``, as ``hold_impact``), then roll
    back: nothing is kept and nothing is audited. The form's preview.
    """
    checked = check_hold(
        scope=scope,
        reason=reason,
        source_db=source_db,
        schema_name=schema_name,
        table_name=table_name,
        contract_value=contract_value,
        date_from=date_from,
        date_to=date_to,
        keys=keys,
    )
    if checked.errors:
        raise ValidationError(checked.errors)
    schema_name, config, key_texts = checked.schema_name, checked.config, checked.key_texts
    hold = Hold(
        scope=scope,
        source_db=source_db,
        schema_name=schema_name,
        table_name=table_name,
        contract_value=contract_value,
        date_from=date_from,
        date_to=date_to,
        reason=reason.strip(),
        placed_by=actor_name(actor),
        review_by=review_by,
        hold_until=hold_until,
    )
    with transaction.atomic(using=ARCHIVE):
        take_archive_lock(f"hold:{actor_name(actor)}")
        hold.full_clean()
        hold.save(using=ARCHIVE)
        for text in dict.fromkeys(key_texts):
            hk = HoldKey(hold=hold, key_text=text)
            hk.full_clean()
            hk.save(using=ARCHIVE)
        if dry_run:
            hold.impact = hold_impact(hold)
            transaction.set_rollback(True, using=ARCHIVE)
    if dry_run:
        hold.pk = None
        return hold
    # Recorded after the archive commit: the audit trail never shows a hold
    # that did not commit.
    AuditEvent.objects.record(
        "hold.placed",
        actor=actor,
        obj=hold,
        table_label=config.label if config else "",
        counts={"keys": len(key_texts)} if key_texts else {},
        details={
            "scope": scope,
            "reason": hold.reason,
            "hold_until": str(hold_until or ""),
            "review_by": str(review_by or ""),
        },
    )
    return hold


def release_hold(hold_id: int, *, actor, reason: str):
    """Release an active hold (audited as ``hold.released``); returns it."""
    if not (reason or "").strip():
        raise ValidationError({"release_reason": "Releasing a hold needs a reason."})
    with transaction.atomic(using=ARCHIVE):
        take_archive_lock(f"release:{actor_name(actor)}")
        hold = Hold.objects.using(ARCHIVE).select_for_update().get(pk=hold_id)
        if hold.released_at is not None:
            raise ValidationError(f"{hold} was already released by {hold.released_by}.")
        hold.released_by = actor_name(actor)
        hold.released_at = timezone.now()
        hold.release_reason = reason.strip()
        hold.full_clean()
        hold.save(using=ARCHIVE, update_fields=["released_by", "released_at", "release_reason"])
    AuditEvent.objects.record("hold.released", actor=actor, obj=hold, details={"reason": hold.release_reason})
    return hold


def update_review_date(hold_id: int, *, review_by: dt.date | None, actor):
    """Change only a hold's review-by date (audited as ``hold.review_changed``)."""
    with transaction.atomic(using=ARCHIVE):
        take_archive_lock(f"review:{actor_name(actor)}")
        hold = Hold.objects.using(ARCHIVE).select_for_update().get(pk=hold_id)
        old = hold.review_by
        hold.review_by = review_by
        hold.full_clean()
        hold.save(using=ARCHIVE, update_fields=["review_by"])
    AuditEvent.objects.record(
        "hold.review_changed", actor=actor, obj=hold, details={"from": str(old or ""), "to": str(review_by or "")}
    )
    return hold


class HoldKeysUnreadable(Exception):
    """Some stored KEYS hold key cannot be read by its table's key types; nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} hold key problem(s); nothing was changed: " + "; ".join(problems))
        self.problems = problems


@dataclass
class CanonicalKeys:
    """What ``canonicalize_hold_keys`` found and added."""

    holds_read: int
    # Per hold id: (stored text, its canonical text) for each canonical text added.
    added: dict[int, list[tuple[str, str]]]
    # Released holds (they protect nothing) with a key, or a table's key
    # types, that cannot be read: reported, and left as they are.
    released_unread: list[str]

    @property
    def keys_added(self) -> int:
        return sum(len(pairs) for pairs in self.added.values())


def canonicalize_hold_keys(*, actor, dry_run: bool = False) -> CanonicalKeys:
    """Give every KEYS hold the canonical text (``rowkeys.canonical_key_text``) of each key it stores.

    Key texts written by earlier encoders (booleans 1/0, timestamps with a
    ``T`` or a shortened fraction, decimals short of the column's scale,
    unescaped text) do not equal the text disposal builds for the row, so
    the hold would not protect it. Each key is read by its table's key
    column types, from the live archive table (else the source table), and
    its canonical text is added to the hold beside it: hold keys are never
    changed or deleted (sql/10 refuses both on SQL Server), and the stored
    text stays as the record of what was placed. Coverage only grows.

    Idempotent (a canonical text the hold has is not added again). Raises
    HoldKeysUnreadable, changing nothing, when a key of an unreleased hold
    cannot be read, or its table's key types cannot be known. Under the
    archive lock, like every hold write; each hold given keys is audited
    (``hold.keys_canonicalized``). ``dry_run``: report, change nothing.
    """
    problems: list[str] = []
    result = CanonicalKeys(holds_read=0, added={}, released_unread=[])
    changed: dict[int, tuple[object, str]] = {}  # hold id -> (hold, table label)
    with transaction.atomic(using=ARCHIVE):
        take_archive_lock(f"hold-keys:{actor_name(actor)}")
        holds = Hold.objects.using(ARCHIVE).filter(scope=HoldScope.KEYS).prefetch_related("keys").order_by("pk")
        for hold in holds:
            result.holds_read += 1
            found = result.released_unread if hold.released_at is not None else problems
            config = _config_for(hold.source_db, hold.schema_name, hold.table_name)
            types = key_column_types(config) if config is not None else None
            if types is None:
                where = f"{hold.source_db}.{hold.schema_name or '*'}.{hold.table_name}"
                found.append(
                    f"{hold}: no table config for {where}"
                    if config is None
                    else f"{hold}: the key column types of {config.label} cannot be read (no archive or source table)"
                )
                continue
            generics, scales = types
            stored = sorted(k.key_text for k in hold.keys.all())
            held = set(stored)
            additions = []
            for text in stored:
                try:
                    canonical = canonical_key_text(text, generics, scales)
                except ValueError as exc:
                    found.append(f"{hold}, key {text!r}: {exc}")
                    break
                if canonical not in held:
                    held.add(canonical)
                    additions.append((text, canonical))
            else:
                if additions:
                    result.added[hold.pk] = additions
                    changed[hold.pk] = (hold, config.label)
        if problems:
            raise HoldKeysUnreadable(problems)
        for hold_id, additions in result.added.items():
            for _, canonical in additions:
                key = HoldKey(hold=changed[hold_id][0], key_text=canonical)
                key.full_clean()
                key.save(using=ARCHIVE)
        if dry_run:
            transaction.set_rollback(True, using=ARCHIVE)
    if dry_run:
        return result
    # Recorded after the archive commit, as for placing a hold.
    for hold_id, additions in result.added.items():
        hold, label = changed[hold_id]
        AuditEvent.objects.record(
            "hold.keys_canonicalized",
            actor=actor,
            obj=hold,
            table_label=label,
            counts={"keys": len(additions)},
            details={"added": [list(pair) for pair in additions]},
        )
    return result


@dataclass
class HoldImpact:
    table_label: str
    rows: int


def hold_impact(hold) -> list[HoldImpact]:
    """Archived rows the hold covers, per configured table (one count query per table)."""

    out = []
    for config in _configs(None):
        try:
            t = archive_table_for(config)
        except Exception:  # a broken archive table shows as absent, not as a crash of the page
            continue
        if t is None:
            continue
        sql, params = t.held_by_sql(hold.pk)
        with t.backend.connection.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {t.qualified} a WHERE {sql}", params)
            n = int(cur.fetchone()[0])
        if n:
            out.append(HoldImpact(config.label, n))
    return out
