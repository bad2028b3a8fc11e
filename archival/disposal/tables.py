"""An archive table as disposal sees it, and the SQL fragments it needs.

Every identifier reaching SQL here was read from the live archive catalog
(``backend.describe``) and is quoted by the backend; values are parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from archival import hold_coverage
from archival.backends import Backend, SchemaError, backend_for, namespace_for
from archival.rowkeys import coerce, keyset_predicate, scale_of
from governance.models import ArchiveLock, TableConfig

ARCHIVE = "archive"
LOCK_NAME = "archive"
REQUIRED_COLUMNS = ("reference_date", "retention_until")


class DisposalError(Exception):
    """A disposal step refused to go on (the message says why)."""


@dataclass
class ArchiveTable:
    config: TableConfig
    backend: Backend
    namespace: str
    table: str
    pk: list[str]
    pk_generic: list[str]
    contract_column: str | None
    pk_scale: list[int | None] | None = None  # decimal scales of the key columns (rowkeys.scale_of)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def qualified(self) -> str:
        return self.backend.qualified(self.namespace, self.table)

    def col(self, name: str, alias: str = "a") -> str:
        return f"{alias}.{self.backend.quote(name)}"

    def pk_cols(self, alias: str = "a") -> list[str]:
        return [self.col(c, alias) for c in self.pk]

    def pk_select(self, alias: str = "a") -> str:
        return ", ".join(self.pk_cols(alias))

    def order_by(self, alias: str = "a") -> str:
        return ", ".join(self.pk_cols(alias))

    def coerce_key(self, values) -> list:
        return [coerce(v, g) for v, g in zip(values, self.pk_generic, strict=True)]

    def range_sql(self, low, high, alias: str = "a") -> tuple[str, list]:
        """Inclusive key range [low, high]; either bound may be None."""
        parts, params = [], []
        cols = self.pk_cols(alias)
        for op, bound in ((">=", low), ("<=", high)):
            if bound is not None:
                # index_bound: the leading key column bounds the range, so the planner
                # reads the batch's slice of the key index, not every expired row.
                sql, bound_params = keyset_predicate(cols, op, self.coerce_key(bound), index_bound=True)
                parts.append(sql)
                params += bound_params
        return (" AND ".join(parts) or "1=1"), params

    def expired_in_range_count_sql(self, low, high, cutoff: dt.date) -> tuple[str, list]:
        """A count of the rows in the key range [low, high] whose ``retention_until`` is before ``cutoff``.

        The expiry is summed, not filtered on: as a WHERE condition beside the
        key range, PostgreSQL ANDed the range's bitmap with one of every
        expired row of the table, read from the retention index for each
        batch (about 25 ms of a 28 ms count on 2,000,000 rows, growing with
        the table); summed, the count reads the key range alone.
        """
        rng, rng_params = self.range_sql(low, high)
        return (
            f"SELECT SUM(CASE WHEN {self.col('retention_until')} < %s THEN 1 ELSE 0 END) "
            f"FROM {self.qualified} a WHERE {rng}",
            [cutoff, *rng_params],
        )

    def after_sql(self, cursor_key, alias: str = "a") -> tuple[str, list]:
        if cursor_key is None:
            return "1=1", []
        return keyset_predicate(self.pk_cols(alias), ">", self.coerce_key(cursor_key), index_bound=True)

    # -- canonical key text in SQL (KEYS holds) --------------------------------
    def key_text_sql(self, alias: str = "a") -> tuple[str, list]:
        """SQL (and parameters) building the canonical key text (archival.rowkeys) of row ``alias``."""
        columns = [
            (self.col(name, alias), generic, scale)
            for name, generic, scale in zip(self.pk, self.pk_generic, self.scales, strict=True)
        ]
        return self.backend.key_text_sql(columns)

    @property
    def scales(self) -> list[int | None]:
        return self.pk_scale if self.pk_scale is not None else [None] * len(self.pk)

    # -- the hold check (archival.hold_coverage) ----------------------------------
    def held_sql(self, at: dt.date, alias: str = "a") -> tuple[str, list]:
        """EXISTS: a hold in force on ``at`` covers the archive row ``alias``."""
        return hold_coverage.held_sql(self, at, alias)

    def unheld_sql(self, at: dt.date, alias: str = "a") -> tuple[str, list]:
        """No hold in force on ``at`` covers the archive row ``alias`` (what disposal may delete)."""
        return hold_coverage.unheld_sql(self, at, alias)

    def held_by_sql(self, hold_id: int, alias: str = "a") -> tuple[str, list]:
        """EXISTS: the given hold covers the row (the preview and the blocked report)."""
        return hold_coverage.held_by_sql(self, hold_id, alias)


def archive_table_for(config) -> ArchiveTable | None:
    """The archive table of ``config``, validated against the live archive catalog.

    None when the table has not been archived yet. Raises SchemaError when the
    archive table lacks a key column, reference_date, retention_until or the
    configured hold contract column.
    """
    backend = backend_for(ARCHIVE)
    namespace = namespace_for(config.source_db)
    if not backend.schema_exists(namespace) or not backend.table_exists(namespace, config.table_name):
        return None
    info = backend.describe(namespace, config.table_name)
    pk = config.pk_columns
    if not pk:
        raise SchemaError(f"{config}: no primary key columns configured")
    missing = [c for c in (*pk, *REQUIRED_COLUMNS) if info.column(c) is None]
    contract = config.contract_column_for_holds() or None
    if contract and info.column(contract) is None:
        missing.append(contract)
    if missing:
        raise SchemaError(f"archive table {namespace}.{config.table_name} lacks column(s) {', '.join(missing)}")
    return ArchiveTable(
        config=config,
        backend=backend,
        namespace=namespace,
        table=config.table_name,
        pk=pk,
        pk_generic=[info.column(c).generic for c in pk],
        contract_column=contract,
        pk_scale=[scale_of(info.column(c)) for c in pk],
    )


def take_archive_lock(holder: str):
    """Take the archive lock for the rest of the enclosing archive transaction.

    Must be called inside ``transaction.atomic(using="archive")``. PostgreSQL:
    a row lock (select_for_update) that hold placement and other disposal
    batches wait on; SQL Server: that row lock, then the hold applock
    (``Backend.lock_holds``) its disposal procedure takes. SQLite: the connection opens IMMEDIATE transactions, so
    the write lock is already held; the UPDATE below makes it a write anyway.
    """
    conn = transaction.get_connection(ARCHIVE)
    if not conn.in_atomic_block:
        raise RuntimeError("take_archive_lock() needs an open archive transaction")
    lock = ArchiveLock.objects.using(ARCHIVE).select_for_update().filter(name=LOCK_NAME).first()
    if lock is None:
        # Only after a flush (tests): the migration creates the row.
        lock, _ = ArchiveLock.objects.using(ARCHIVE).get_or_create(name=LOCK_NAME)
        lock = ArchiveLock.objects.using(ARCHIVE).select_for_update().get(pk=lock.pk)
    ArchiveLock.objects.using(ARCHIVE).filter(pk=lock.pk).update(holder=holder[:200], taken_at=timezone.now())
    # The engine's own hold lock where it has one (SQL Server's procedures
    # take an applock), always after the row above: one order everywhere.
    backend_for(ARCHIVE).lock_holds()
    return lock
