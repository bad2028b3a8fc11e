"""Which archive rows a restore takes back: the SQL predicate over archive table alias ``a``, per kind.

Every identifier here was read from the live archive catalog (the archive
table through ``archive_table_for``, a parent's and a child's columns through
``Backend.describe``) and is quoted by the archive backend; every value is a
parameter. The selection itself is JSON (``selection_of``) so that SQL
Server's procedure receives the same description the engine's SQL is built
from:

* ``KEY_RANGE``  ``{"key_low": [...], "key_high": [...]}``: primary keys in [low, high] (both inclusive);
* ``CONTRACT``   ``{"column": c, "value": v}``: the table's contract column (the one contract holds
  match, ``TableConfig.contract_column_for_holds``) equals ``v`` as text, like hold matching;
* ``KEYS``       ``{"request_id": n}``: the row's canonical key text is one of the request's RestoreKey rows;
* ``DATE_RANGE`` ``{"date_from": d1, "date_to": d2}``: ``reference_date`` in [d1, d2];
* ``RUN``        ``{"archive_run_id": n}``: rows archived by that run;
* ``REFERENCED`` ``{"key_column", "child_table", "ref_column", "child"}``: rows of a parent table whose
  ``key_column`` an archived row of the child (selected by the child's selection) references.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from archival.backends import Backend, SchemaError, backend_for
from archival.backends.base import InsertTarget
from archival.disposal.tables import ArchiveTable, archive_table_for
from archival.engine.spec import META_COLUMNS, topology
from archival.restore.errors import RestoreRefused
from governance.models import RestoreKey, TableConfig

KINDS = ("KEY_RANGE", "CONTRACT", "KEYS", "DATE_RANGE", "RUN", "REFERENCED")


@dataclass
class RestoreTarget:
    """One table of a restore as the move sees it: its archive table, its source table, the columns written back."""

    config: object  # TableConfig
    archive: ArchiveTable
    source: Backend
    mode: str  # "same_server" or "streaming" (archival.engine.spec.topology)
    insert: InsertTarget
    # Source columns written back, in the source's order: insertable there and present in the archive.
    columns: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def pk(self) -> list[str]:
        return self.archive.pk

    def source_table(self, on: Backend) -> str:
        """The source table's quoted name as the connection of ``on`` reaches it."""
        cfg = self.config
        if on.alias == self.source.alias:
            return on.qualified(cfg.schema_name, cfg.table_name)
        return on.source_table_sql(self.source, cfg.source_db, cfg.schema_name, cfg.table_name)

    def key_match(self, on: Backend, left: str, right: str) -> str:
        """Equality of the primary key of aliases ``left`` and ``right``."""
        return " AND ".join(f"{left}.{on.quote(c)} = {right}.{on.quote(c)}" for c in self.pk)

    def identical(self, on: Backend, left: str, right: str) -> str:
        """Every column written back is equal (NULL equal to NULL) between ``left`` and ``right``."""
        return " AND ".join(on.null_safe_equal(f"{left}.{on.quote(c)}", f"{right}.{on.quote(c)}") for c in self.columns)


def archive_columns(t: ArchiveTable) -> list[str]:
    return t.backend.describe(t.namespace, t.table).column_names


def resolve_target(config) -> RestoreTarget:
    """The archive and source tables of ``config``, checked against both live catalogs.

    Raises RestoreRefused when nothing of the table was archived, when the
    source table is gone or its key differs, or when an archived column no
    longer exists in the source (its values would be lost: add it back first).
    """
    try:
        t = archive_table_for(config)
    except SchemaError as exc:
        raise RestoreRefused(f"{config}: the archive table does not match its config ({exc})") from None
    if t is None:
        raise RestoreRefused(f"nothing of {config} has been archived: there is no archive table to restore from")
    source = backend_for(config.source_db)
    try:
        info = source.describe(config.schema_name, config.table_name)
        try:
            insert = source.insertable_columns(config.schema_name, config.table_name)
        except NotImplementedError:
            # An engine whose procedure writes the rows back builds its own
            # column list; the preview compares the described columns.
            insert = InsertTarget(columns=info.column_names)
    except SchemaError:
        raise RestoreRefused(f"source table {config} does not exist; create it before restoring into it") from None
    if info.primary_key != t.pk:
        raise RestoreRefused(
            f"{config}: the source's primary key is ({', '.join(info.primary_key)}), "
            f"the archive's ({', '.join(t.pk)}); rows cannot be matched"
        )
    archived = [c for c in archive_columns(t) if c not in META_COLUMNS]
    gone = [c for c in archived if info.column(c) is None]
    if gone:
        raise RestoreRefused(
            f"{config}: archived column(s) {', '.join(gone)} no longer exist in the source table; "
            "their values would be lost: add the columns back to the source first"
        )
    archived_set = set(archived)
    columns = [c for c in insert.columns if c in archived_set]
    missing_keys = [c for c in t.pk if c not in columns]
    if missing_keys:
        raise RestoreRefused(f"{config}: key column(s) {', '.join(missing_keys)} cannot be written in the source")
    return RestoreTarget(config, t, source, topology(config.source_db), insert, columns)


def sibling_config(config, table_name: str):
    """The active config of ``table_name`` in ``config``'s source database and schema (a REFERENCED child)."""
    found = (
        TableConfig.objects.active()
        .filter(source_db=config.source_db, schema_name=config.schema_name, table_name=table_name)
        .first()
    )
    if found is None:
        raise RestoreRefused(f"no active config for table {table_name!r} in {config.source_db}.{config.schema_name}")
    return found


def selection_sql(t: ArchiveTable, selection: dict, alias: str = "a") -> tuple[str, list]:
    """The predicate (no leading WHERE) of the rows of archive table ``t`` (alias ``alias``) that ``selection`` takes.

    ``archived_by`` (an approved request's, see ``approval_bound``) leaves out
    rows archived after the approval: nobody approved them.
    """
    sql, params = _kind_sql(t, selection, alias)
    if selection.get("archived_by") is None:
        return sql, params
    try:
        bound = dt.datetime.fromisoformat(str(selection["archived_by"])).replace(tzinfo=dt.UTC)
    except ValueError:
        raise RestoreRefused("archived_by of a restore selection is an ISO 8601 timestamp") from None
    return f"{t.col('archived_at', alias)} <= %s AND ({sql})", [t.backend.param(bound), *params]


def approval_bound(request) -> dict:
    """``{"archived_by": <approval instant, UTC, ISO 8601>}`` once the request is approved, else ``{}``."""
    if request.decided_at is None or request.status == "REJECTED":
        return {}
    return {"archived_by": request.decided_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat()}


def _kind_sql(t: ArchiveTable, selection: dict, alias: str) -> tuple[str, list]:
    b = t.backend
    q = b.quote
    kind = selection.get("kind")
    if kind == "KEY_RANGE":
        low, high = selection.get("key_low"), selection.get("key_high")
        if low is None or high is None:
            raise RestoreRefused("a key range needs both its first and its last key")
        return t.range_sql(low, high, alias)
    if kind == "CONTRACT":
        column = selection.get("column") or t.contract_column
        if not t.contract_column or column != t.contract_column:
            raise RestoreRefused(f"{t.label} has no contract column; choose its rows another way")
        return f"{b.text_cast_sql(t.col(column, alias))} = %s", [str(selection["value"])]
    if kind == "KEYS":
        key_sql, key_params = t.key_text_sql(alias)
        rk = alias + "k"
        return (
            f"EXISTS (SELECT 1 FROM {q(RestoreKey._meta.db_table)} {rk} WHERE {rk}.{q('request_id')} = %s "
            f"AND {rk}.{q('key_text')} = {key_sql})",
            [int(selection["request_id"]), *key_params],
        )
    if kind == "DATE_RANGE":
        ref = t.col("reference_date", alias)
        date_from = dt.date.fromisoformat(str(selection["date_from"]))
        date_to = dt.date.fromisoformat(str(selection["date_to"]))
        return f"{ref} >= %s AND {ref} <= %s", [b.param(date_from), b.param(date_to)]
    if kind == "RUN":
        return f"{t.col('archive_run_id', alias)} = %s", [int(selection["archive_run_id"])]
    if kind == "REFERENCED":
        child_config = sibling_config(t.config, selection["child_table"])
        child = archive_table_for(child_config)
        if child is None:
            raise RestoreRefused(f"nothing of {child_config} has been archived")
        key_column, ref_column = selection["key_column"], selection["ref_column"]
        if key_column not in archive_columns(t):
            raise RestoreRefused(f"archive table of {t.label} has no column {key_column!r}")
        if ref_column not in archive_columns(child):
            raise RestoreRefused(f"archive table of {child.label} has no column {ref_column!r}")
        child_alias = alias + "r"
        child_sql, child_params = selection_sql(child, selection["child"], child_alias)
        return (
            f"{t.col(key_column, alias)} IN (SELECT {child.col(ref_column, child_alias)} "
            f"FROM {child.qualified} {child_alias} WHERE {child_sql})",
            child_params,
        )
    raise RestoreRefused(f"unknown selection {kind!r}; one of {', '.join(KINDS)}")


def request_selection(request) -> dict:
    """The JSON selection of a request's own table (the kind, its values, and the approval's bound)."""
    kind = request.selection
    if kind == "KEY_RANGE":
        own = {"key_low": request.key_low, "key_high": request.key_high}
    elif kind == "CONTRACT":
        own = {"column": request.config.contract_column_for_holds(), "value": request.contract_value}
    elif kind == "KEYS":
        own = {"request_id": request.pk}
    elif kind == "DATE_RANGE":
        own = {
            "date_from": request.date_from.isoformat() if request.date_from else None,
            "date_to": request.date_to.isoformat() if request.date_to else None,
        }
    elif kind == "RUN":
        own = {"archive_run_id": request.archive_run_id}
    else:
        raise RestoreRefused(f"unknown selection {kind!r}")
    return {"kind": kind, **own, **approval_bound(request)}


def selection_of(table) -> dict:
    """The JSON selection of one RestoreTable: the request's own, or REFERENCED by the table it serves."""
    if table.referenced_by_id is None:
        return request_selection(table.request)
    child = table.referenced_by
    return {
        "kind": "REFERENCED",
        "key_column": table.key_column,
        "child_table": child.config.table_name,
        "ref_column": table.ref_column,
        "child": selection_of(child),
        **approval_bound(table.request),
    }


def describe_selection(selection: dict) -> str:
    """The selection in words (status lines, certificates)."""
    kind = selection.get("kind")
    if kind == "KEY_RANGE":
        return f"keys {selection['key_low']} to {selection['key_high']}"
    if kind == "CONTRACT":
        return f"contract {selection['value']!r} ({selection['column']})"
    if kind == "KEYS":
        return f"the keys listed in request {selection['request_id']}"
    if kind == "DATE_RANGE":
        return f"reference dates {selection['date_from']} to {selection['date_to']}"
    if kind == "RUN":
        return f"the rows of archive run {selection['archive_run_id']}"
    if kind == "REFERENCED":
        return (
            f"rows whose {selection['key_column']} the {selection['child_table']}.{selection['ref_column']} "
            f"of {describe_selection(selection['child'])} references"
        )
    return str(kind)
