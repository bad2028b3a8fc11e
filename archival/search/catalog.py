"""Which archived tables and columns may be searched.

A table is searchable when an active TableConfig names it and its archive
table exists in the archive database. Its columns are read from the live
archive schema through ``archive_readonly``; a name that is not in both is
refused with ``NotSearchable`` (a 404) before any data query runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError

from archival.backends import Backend, SchemaError, backend_for, namespace_for
from archival.rowkeys import scale_of
from governance.models import ArchivalLogic, TableConfig

READONLY_ALIAS = "archive_readonly"

# Columns the archival engine adds to every archive table.
META_COLUMNS = ("archived_at", "archive_run_id", "reference_date", "retention_until")

# What the archive's own columns mean to a reader.
META_LABELS = {
    "archived_at": "Archived at",
    "archive_run_id": "Archive run",
    "reference_date": "Reference date",
    "retention_until": "Kept until",
}

NUMBER_FAMILIES = {"int", "bigint", "decimal", "float"}
DATE_FAMILIES = {"date", "datetime"}


class NotSearchable(Exception):
    """The request names a table or column that is not configured (a 404)."""


class FilterKind:
    EXACT = "exact"  # key and contract columns, run id
    RANGE = "range"  # dates and numbers
    CONTAINS = "contains"  # text
    BOOLEAN = "boolean"
    NONE = "none"  # binary: shown, never filtered


@dataclass(frozen=True)
class SearchColumn:
    name: str
    generic: str
    nullable: bool
    is_key: bool = False
    scale: int | None = None  # a decimal column's scale (rowkeys.scale_of)
    is_contract: bool = False
    is_meta: bool = False

    @property
    def label(self) -> str:
        """The column as a reader names it: ``businessDate`` and
        ``business_date`` read "Business date"; the raw name stays on hover."""
        if self.name in META_LABELS:
            return META_LABELS[self.name]
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", self.name).replace("_", " ").split()
        if not words:
            return self.name
        text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
        return text[0].upper() + text[1:]

    @property
    def filter_kind(self) -> str:
        if self.generic == "binary":
            return FilterKind.NONE
        if self.is_key or self.is_contract or self.name == "archive_run_id":
            return FilterKind.EXACT
        if self.generic in DATE_FAMILIES or self.generic in NUMBER_FAMILIES:
            return FilterKind.RANGE
        if self.generic == "bool":
            return FilterKind.BOOLEAN
        return FilterKind.CONTAINS


@dataclass
class SearchTable:
    """One configured, archived table as the search pages see it."""

    config: TableConfig
    namespace: str
    columns: list[SearchColumn]
    key: list[str]
    contract_column: str | None
    backend: Backend = field(repr=False)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def qualified(self) -> str:
        return self.backend.qualified(self.namespace, self.config.table_name)

    def column(self, name: str) -> SearchColumn:
        for col in self.columns:
            if col.name == name:
                return col
        raise NotSearchable(f"{self.label} has no column {name!r}")

    @property
    def data_columns(self) -> list[SearchColumn]:
        return [c for c in self.columns if not c.is_meta]

    @property
    def meta_columns(self) -> list[SearchColumn]:
        return [c for c in self.columns if c.is_meta]


def searchable_configs(source_db: str | None = None) -> list[TableConfig]:
    """Active configs, optionally of one source database, in a stable order."""
    qs = TableConfig.objects.active().order_by("source_db", "schema_name", "table_name")
    if source_db:
        qs = qs.filter(source_db=source_db)
    return list(qs)


def archived_table_names(source_db: str) -> set[str]:
    """Names of the tables present in one source database's archive namespace.

    One catalog query per namespace, so the index page does not describe 100+
    tables one by one.
    """
    namespace = namespace_for(source_db)
    backend = backend_for(READONLY_ALIAS)
    try:
        if not backend.schema_exists(namespace):
            return set()
        return backend.table_names(namespace)
    except DatabaseError:
        return set()


def resolve_table(source_db: str, schema_name: str, table_name: str) -> SearchTable:
    """The searchable table named by a request, or NotSearchable.

    The config lookup runs first and touches only the control database: a
    table that no active config names never reaches the archive connection.
    """
    if source_db not in settings.SOURCE_DATABASES:
        raise NotSearchable(f"unknown source database {source_db!r}")
    config = (
        TableConfig.objects.active().filter(source_db=source_db, schema_name=schema_name, table_name=table_name).first()
    )
    if config is None:
        raise NotSearchable(f"no active config for {source_db}.{schema_name}.{table_name}")
    key = config.pk_columns
    if not key:
        raise NotSearchable(f"{config} has no primary key recorded")
    namespace = namespace_for(source_db)
    backend = backend_for(READONLY_ALIAS)
    try:
        info = backend.describe(namespace, config.table_name)
    except (SchemaError, DatabaseError):
        raise NotSearchable(f"{config} has not been archived yet") from None
    live = {c.name for c in info.columns}
    missing = [name for name in (*key, *META_COLUMNS) if name not in live]
    if missing:
        raise NotSearchable(f"archive table of {config} lacks {', '.join(missing)}")
    contract = None
    for candidate in (config.contract_column_for_holds(), _reference_column(config)):
        if candidate and candidate in live:
            contract = candidate
            break
    columns = [
        SearchColumn(
            name=c.name,
            generic=c.generic,
            nullable=c.nullable,
            is_key=c.name in key,
            is_contract=c.name == contract,
            is_meta=c.name in META_COLUMNS,
            scale=scale_of(c),
        )
        for c in info.columns
    ]
    return SearchTable(
        config=config, namespace=namespace, columns=columns, key=key, contract_column=contract, backend=backend
    )


def _reference_column(config: TableConfig) -> str:
    if config.archival_logic == ArchivalLogic.CONTRACT_MATURITY:
        return config.contract_reference_column
    return ""
