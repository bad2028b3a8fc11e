"""An archive table as disposal sees it, and the SQL fragments it needs.

Every identifier reaching SQL here was read from the live archive catalog
(``backend.describe``) and is quoted by the backend; values are parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from archival.backends import Backend, SchemaError, backend_for, namespace_for
from archival.disposal.keys import coerce, keyset_params, keyset_predicate
from governance.models import ArchiveLock, Hold, HoldKey, HoldScope

ARCHIVE = "archive"
LOCK_NAME = "archive"
REQUIRED_COLUMNS = ("reference_date", "retention_until")


class DisposalError(Exception):
    """A disposal step refused to go on (the message says why)."""


@dataclass
class ArchiveTable:
    config: object  # TableConfig
    backend: Backend
    namespace: str
    table: str
    pk: list[str]
    pk_generic: list[str]
    contract_column: str | None

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
        if low is not None:
            sql, _ = keyset_predicate(cols, ">=")
            parts.append(sql)
            params += keyset_params(self.coerce_key(low))
        if high is not None:
            sql, _ = keyset_predicate(cols, "<=")
            parts.append(sql)
            params += keyset_params(self.coerce_key(high))
        return (" AND ".join(parts) or "1=1"), params

    def after_sql(self, cursor_key, alias: str = "a") -> tuple[str, list]:
        if cursor_key is None:
            return "1=1", []
        sql, _ = keyset_predicate(self.pk_cols(alias), ">")
        return sql, keyset_params(self.coerce_key(cursor_key))

    # -- canonical key text in SQL (KEYS holds) --------------------------------
    def key_text_sql(self, alias: str = "a") -> tuple[str, list]:
        """SQL (and parameters) building the canonical key text (archival.disposal.keys) of row ``alias``."""
        columns = [(self.col(name, alias), generic) for name, generic in zip(self.pk, self.pk_generic, strict=True)]
        return self.backend.key_text_sql(columns)

    # -- the hold check ----------------------------------------------------------
    def hold_match_sql(self, alias: str = "a", hold_alias: str = "h") -> tuple[str, list]:
        """Condition on ``h`` (a hold row) and ``a`` (an archive row): the hold covers the row.

        Scopes: ALL; TABLE (source db + table, schema when given); CONTRACT (this
        table's contract column, ``TableConfig.contract_column_for_holds``,
        equals the value, same source db); DATE_RANGE
        on reference_date (an open end when a bound is empty); KEYS (a HoldKey of
        this table whose key_text equals the row's canonical key text).
        """
        q = self.backend.quote
        h = hold_alias
        cfg = self.config
        same_table = (
            f"{h}.{q('source_db')} = %s AND {h}.{q('table_name')} = %s "
            f"AND ({h}.{q('schema_name')} = %s OR {h}.{q('schema_name')} = %s)"
        )
        table_params = [cfg.source_db, cfg.table_name, cfg.schema_name, ""]
        parts = [f"{h}.{q('scope')} = %s"]
        params: list = [HoldScope.ALL]
        parts.append(f"({h}.{q('scope')} = %s AND {same_table})")
        params += [HoldScope.TABLE, *table_params]
        ref = self.col("reference_date", alias)
        parts.append(
            f"({h}.{q('scope')} = %s AND {ref} IS NOT NULL "
            f"AND ({h}.{q('date_from')} IS NULL OR {ref} >= {h}.{q('date_from')}) "
            f"AND ({h}.{q('date_to')} IS NULL OR {ref} <= {h}.{q('date_to')}))"
        )
        params.append(HoldScope.DATE_RANGE)
        if self.contract_column:
            contract_text = self.backend.text_cast_sql(self.col(self.contract_column, alias))
            parts.append(
                f"({h}.{q('scope')} = %s AND {h}.{q('source_db')} = %s AND {contract_text} = {h}.{q('contract_value')})"
            )
            params += [HoldScope.CONTRACT, cfg.source_db]
        key_sql, key_params = self.key_text_sql(alias)
        hk = q(HoldKey._meta.db_table)
        parts.append(
            f"({h}.{q('scope')} = %s AND {same_table} AND EXISTS (SELECT 1 FROM {hk} k "
            f"WHERE k.{q('hold_id')} = {h}.{q('id')} AND k.{q('key_text')} = {key_sql}))"
        )
        params += [HoldScope.KEYS, *table_params, *key_params]
        return "(" + " OR ".join(parts) + ")", params

    def held_sql(self, at: dt.date, alias: str = "a") -> tuple[str, list]:
        """EXISTS: an active hold (as of ``at``) covers the archive row ``alias``."""
        q = self.backend.quote
        match, params = self.hold_match_sql(alias, "h")
        sql = (
            f"EXISTS (SELECT 1 FROM {q(Hold._meta.db_table)} h WHERE h.{q('released_at')} IS NULL "
            f"AND (h.{q('hold_until')} IS NULL OR h.{q('hold_until')} >= %s) AND {match})"
        )
        return sql, [at, *params]

    def held_by_sql(self, hold_id: int, alias: str = "a") -> tuple[str, list]:
        """EXISTS: the given hold covers the row (for the blocked report)."""
        q = self.backend.quote
        match, params = self.hold_match_sql(alias, "h")
        return f"EXISTS (SELECT 1 FROM {q(Hold._meta.db_table)} h WHERE h.{q('id')} = %s AND {match})", [
            hold_id,
            *params,
        ]


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
