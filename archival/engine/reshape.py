"""Bring an existing archive table to the shape ``archive_tables`` creates now.

The shape (docs/archive-tables.md): the source key as the PRIMARY KEY, an
index on retention_until, one on the contract column where the table has one,
nothing else of ours. A table made earlier has a UNIQUE key and an index on
reference_date as well; this drops the index this tool made and no reader
needs, adds a missing one, and makes the key the PRIMARY KEY where the engine
can (``Backend.reshape_archive_sql``: in one statement or one transaction, so
duplicates are refused throughout). Indexes this tool did not name are left
alone and reported. Running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from archival.backends import ArchiveIndex, Backend, SchemaError, backend_for, namespace_for
from archival.engine.archive_tables import (
    CONTRACT_INDEX,
    RETENTION_INDEX,
    index_name,
    indexed_contract_column,
    key_constraint_name,
    planned_indexes,
)
from archival.engine.errors import TableError
from archival.engine.spec import META_COLUMNS
from governance.models import AuditEvent, TableConfig

ARCHIVE = "archive"
# Secondary indexes earlier versions of this tool named (and may drop):
# reference_date's is no longer made.
OUR_ROLES = ("refdate", RETENTION_INDEX, CONTRACT_INDEX)


class NotOurTable(TableError):
    """An archive table this tool did not create: left as it is."""


@dataclass
class ReshapePlan:
    config: TableConfig
    table: str
    statements: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    key_to_primary: bool = False
    key_note: str = ""  # why the key stays as it is, or what changing it costs
    others: list[str] = field(default_factory=list)  # indexes not ours, left alone
    missing: bool = False  # nothing archived yet: no table
    needs_dba: bool = False  # the runtime login may not run DDL here (SQL Server)

    @property
    def changes(self) -> bool:
        return bool(self.statements)


def plan_reshape(config: TableConfig, arc: Backend | None = None) -> ReshapePlan:
    """What would bring ``config``'s archive table to the current shape (no change made)."""
    arc = arc or backend_for(ARCHIVE)
    namespace, table = namespace_for(config.source_db), config.table_name
    plan = ReshapePlan(config, arc.qualified(namespace, table))
    if not arc.schema_exists(namespace) or not arc.table_exists(namespace, table):
        plan.missing = True
        return plan
    try:
        columns = set(arc.describe_columns(namespace, table).column_names)
    except SchemaError as exc:
        raise TableError(f"archive table {plan.table}: {exc}") from None
    lacking = [c for c in META_COLUMNS if c not in columns]
    if lacking:
        raise NotOurTable(
            f"archive table {plan.table} lacks {', '.join(lacking)}: it was not created by this tool; left as it is"
        )
    key = tuple(config.pk_columns)
    indexes = arc.archive_indexes(namespace, table)
    keys = [i for i in indexes if i.unique and i.columns == key]
    if not keys:
        raise NotOurTable(
            f"archive table {plan.table} has no unique key on ({', '.join(key)}): it was not created by this "
            "tool, or its key was changed by hand; left as it is (without that key it cannot refuse duplicates)"
        )
    primary = [i for i in keys if i.primary]
    wanted = planned_indexes(arc, table, indexed_contract_column(config))
    roles = [*OUR_ROLES, *(role for role, _ in arc.provisioned_extra_indexes)]
    ours = {index_name(arc, table, role) for role in roles}
    have = {i.name: i for i in indexes if not i.unique}
    drop = [i for name, i in have.items() if name in ours and not _same(i, wanted)]
    create = [w for w in wanted if not (w.name in have and _same(have[w.name], [w]))]
    plan.others = sorted(name for name in have if name not in ours)
    primary_key = None
    if not primary:
        old = keys[0]
        # Only where the engine changes the key in place: SQLite returns no
        # key statement (the same index either way) and says why.
        primary_key = (old, key_constraint_name(table))
        plan.key_note = arc.primary_key_note()
    plan.statements = arc.reshape_archive_sql(namespace, table, drop=drop, create=create, primary_key=primary_key)
    plan.key_to_primary = primary_key is not None and any("PRIMARY KEY" in s for s in plan.statements)
    if primary_key is not None and not plan.key_to_primary:
        plan.key_note = f"key kept as UNIQUE: {plan.key_note}"
    plan.dropped = [i.name for i in drop]
    plan.created = [i.name for i in create]
    plan.needs_dba = bool(plan.statements) and not arc.creates_archive_tables
    return plan


def _same(index: ArchiveIndex, wanted: list[ArchiveIndex]) -> bool:
    return any(index.name == w.name and index.columns == w.columns and index.method == w.method for w in wanted)


def reshape(config: TableConfig, *, actor, dry_run: bool = False) -> ReshapePlan:
    """Plan, then (unless ``dry_run`` or nothing to do) run the reshape of one archive table, audited.

    Where DDL is transactional the statements run in one transaction; on
    MariaDB they are one ALTER TABLE. Where the runtime login may not run DDL
    (SQL Server) nothing runs: the plan's statements are for the DBA.
    """
    arc = backend_for(ARCHIVE)
    plan = plan_reshape(config, arc)
    if dry_run or not plan.changes or plan.needs_dba:
        return plan
    with transaction.atomic(using=ARCHIVE), arc.connection.cursor() as cur:
        for sql in plan.statements:
            cur.execute(sql)
    AuditEvent.objects.record(
        "archive_table.reshaped",
        actor=actor,
        table_label=config.label,
        counts={"indexes_dropped": len(plan.dropped), "indexes_created": len(plan.created)},
        details={
            "table": plan.table,
            "dropped": plan.dropped,
            "created": plan.created,
            "key_to_primary": plan.key_to_primary,
            "statements": plan.statements,
        },
    )
    return plan
