"""Resolve a table config into quoted, verified SQL pieces.

Everything quoted here was first read back from the live catalog: a config
names tables and columns, the catalog confirms them, and only then do they
become identifiers in SQL. Values (thresholds, cursors, run ids) are always
parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from django.conf import settings

from archival import rowkeys
from archival.backends import Backend, SchemaError, TableInfo, backend_for, namespace_for
from archival.backends.base import Column
from archival.engine.dates import subtract_months
from archival.engine.dependencies import references_to
from archival.engine.errors import TableError
from governance.models import TableConfig
from governance.models.configs import ACTIVE_CONFIG
from governance.rowsql import column, fetch

if TYPE_CHECKING:
    from governance.models import TableConfig

META_COLUMNS = ("archived_at", "archive_run_id", "reference_date", "retention_until")


@dataclass(frozen=True)
class ChildRef:
    """A configured table whose rows reference this one (FK or contract join)."""

    config_id: int
    label: str
    table: str
    ref_column: str  # child's column pointing at us
    key_column: str  # our column it points at
    eligible_sql: str  # child's eligibility with alias "ch"; one %s for its threshold
    threshold: date
    contract_table: str = ""  # the child's contract table, for {c} in eligible_sql
    # Set when the child's eligibility is the maturity of the very row it
    # references here (its contract join points at our one-column key):
    # the maturity column, to test on our row instead of a second join.
    own_maturity_column: str = ""


def topology(source_alias: str) -> str:
    """'same_server' when one connection can move a batch atomically, else 'streaming'."""
    if source_alias in settings.ARCHIVAL["STREAMING_SOURCES"]:
        return "streaming"
    return "same_server" if backend_for(source_alias).same_server(backend_for("archive")) else "streaming"


@dataclass
class TableSpec:
    config: TableConfig
    info: TableInfo
    source: Backend  # backend on the source connection
    archive: Backend  # backend on the archive connection
    mode: str
    threshold: date
    children: list[ChildRef] = field(default_factory=list)
    contract_info: TableInfo | None = None
    # Set once this process has created or checked the archive table.
    archive_ready: bool = False
    # This process created the archive table without its secondary indexes
    # (archive_tables.build_pending_indexes builds them after the batches).
    indexes_pending: bool = False
    # The rows Mark counted eligible (None until Mark or a resumed state
    # says): whether a new archive table gets its indexes after its batches.
    eligible_rows: int | None = None

    # -- names ---------------------------------------------------------------
    @property
    def label(self) -> str:
        return str(self.config)

    @property
    def pk(self) -> list[str]:
        return self.info.primary_key

    @property
    def columns(self) -> list[str]:
        return self.info.column_names

    @property
    def namespace(self) -> str:
        return namespace_for(self.config.source_db)

    @property
    def count_backend(self) -> Backend:
        """Where Mark and Verify count the source's rows.

        A same-server table's batches move through the archive connection,
        which reaches the source by the names the move uses; counting there
        too warms one server session's catalog and page caches instead of
        two. A streamed table is counted where it lives.
        """
        return self.archive if self.mode == "same_server" else self.source

    def source_table(self, on: Backend) -> str:
        return self._source_name(on, self.config.table_name)

    def contract_table(self, on: Backend) -> str:
        return self._source_name(on, self.config.contract_table)

    def _source_name(self, on: Backend, table: str) -> str:
        if on.alias == self.source.alias:
            return on.qualified(self.config.schema_name, table)
        return on.source_table_sql(self.source, self.config.source_db, self.config.schema_name, table)

    def archive_table(self) -> str:
        return self.archive.qualified(self.namespace, self.config.table_name)

    def q(self, on: Backend, alias: str, names) -> list[str]:
        return rowkeys.qualify(alias, on.quote, names)

    # -- predicates (source alias "s", contract alias "c") ---------------------
    @property
    def is_contract(self) -> bool:
        return self.config.archival_logic == "CONTRACT_MATURITY"

    def from_clause(self, on: Backend, lock: bool = False, pin_source: bool = True) -> str:
        """FROM for selecting eligible rows (the contract joined where needed).

        Some planners (SQLite's, MariaDB's) may drive the join from the
        contract table's date index and sort every eligible row for every
        batch (quadratic); the backend's pinned join makes the source table
        the outer loop, so a batch is a key-range scan. A count
        (``pin_source=False``) leaves the order to the planner: driving from
        the date index is what makes it cheap. ``lock``: the backend's table
        hint for a locking read, where it locks through hints.
        """
        src = f"{self.source_table(on)} s{on.lock_hint() if lock else ''}"
        if not self.is_contract:
            return src
        return on.join_sql(src, f"{self.contract_table(on)} c", self._contract_join(on), pin_left=pin_source)[0]

    def _contract_join(self, on: Backend) -> str:
        return f"c.{on.quote(self.config.contract_key_column)} = s.{on.quote(self.config.contract_reference_column)}"

    def join_condition(self, on: Backend) -> str:
        """The contract join's condition where the engine puts it in WHERE (see ``Backend.join_sql``), or empty."""
        if not self.is_contract:
            return ""
        return on.join_sql(self.source_table(on), self.contract_table(on), self._contract_join(on), pin_left=True)[1]

    @property
    def reference_column(self) -> Column:
        """The catalog entry of the column whose date makes a row eligible."""
        if self.is_contract:
            assert self.contract_info is not None  # build_spec describes a contract table
            col = self.contract_info.column(self.config.contract_maturity_column)
        else:
            col = self.info.column(self.config.date_column)
        assert col is not None  # build_spec refused a config naming a column the table lacks
        return col

    def reference_raw(self, on: Backend) -> str:
        """The reference column as stored (NULL, a date, or on some engines anything)."""
        if self.is_contract:
            return f"c.{on.quote(self.config.contract_maturity_column)}"
        return f"s.{on.quote(self.config.date_column)}"

    def reference_expr(self, on: Backend) -> str:
        """The reference date of a row the statement selected as eligible."""
        return on.date_value_sql(self.reference_raw(on), self.reference_column)

    def date_before(self, on: Backend) -> str:
        """The row's reference date is a readable date before the one %s (the threshold)."""
        return on.date_before_sql(self.reference_raw(on), self.reference_column)

    def unreadable(self, on: Backend) -> str | None:
        """The row's reference value is there but is not a date (None: the column's type rules it out)."""
        return on.unreadable_date_sql(self.reference_raw(on), self.reference_column)

    def eligible(self, on: Backend) -> tuple[str, list]:
        return f"{self.join_condition(on)}{self.date_before(on)}", [self.threshold_param(on)]

    def threshold_param(self, on: Backend):
        return on.param(self.threshold)

    def parent_rule(self, on: Backend, at_mark: bool) -> tuple[str, list]:
        """Rows still referenced by a configured child table stay.

        During the move, any remaining child row blocks its parent. At mark
        time the children have not moved yet, so a parent counts as eligible
        when every child row referencing it will itself be archived.
        """
        parts, params = [], []
        for child in self.children:
            child_table = self._source_name(on, child.table)
            cond = f"ch.{on.quote(child.ref_column)} = s.{on.quote(child.key_column)}"
            threshold = on.param(child.threshold)
            if at_mark and child.own_maturity_column:
                # The child's contract row is this row: its child rows all move
                # when this row's maturity passes the child's threshold. Tested
                # on s, no second join of the contract table per child (the
                # planners build one hash of the whole contract table for each).
                maturity = self.info.column(child.own_maturity_column)
                assert maturity is not None  # find_children read it from this table's catalog
                mat = on.date_before_sql(f"s.{on.quote(child.own_maturity_column)}", maturity)
                parts.append(f"({mat} OR NOT EXISTS (SELECT 1 FROM {child_table} ch WHERE {cond}))")
                params.append(threshold)
                continue
            if at_mark:
                cond += f" AND NOT ({child.eligible_sql.replace('{c}', self._child_contract(on, child))})"
                params.append(threshold)
            parts.append(f"NOT EXISTS (SELECT 1 FROM {child_table} ch WHERE {cond})")
        return (" AND ".join(parts) if parts else "1 = 1"), params

    def _child_contract(self, on: Backend, child: ChildRef) -> str:
        return self._source_name(on, child.contract_table or self.config.table_name)

    def candidates(self, on: Backend, low=None) -> tuple[str, list]:
        """WHERE clause of a batch's candidates after ``low`` (no leading WHERE): a superset of the eligible rows.

        The rows that may be old enough to go (``Backend.date_maybe_before_sql``),
        whether or not a child row still holds them. The statements that move
        the batch select with ``selection``, so a candidate that is not
        eligible stays where it is.
        """
        maybe = on.date_maybe_before_sql(self.reference_raw(on), self.reference_column)
        rng_sql, rng_params = rowkeys.key_range(self.q(on, "s", self.pk), low, None)
        return f"{self.join_condition(on)}{maybe} AND {rng_sql}", [self.threshold_param(on), *rng_params]

    def selection(self, on: Backend, low=None, high=None, at_mark=False) -> tuple[str, list]:
        """WHERE clause of eligible rows in a key range (no leading WHERE)."""
        elig_sql, elig_params = self.eligible(on)
        rng_sql, rng_params = rowkeys.key_range(self.q(on, "s", self.pk), low, high)
        par_sql, par_params = self.parent_rule(on, at_mark)
        return f"{elig_sql} AND {rng_sql} AND {par_sql}", [
            *elig_params,
            *rng_params,
            *par_params,
        ]


def build_spec(config, run_cutoff: date, all_configs: list | None = None) -> TableSpec:
    """Read the live schema and resolve ``config`` for a run with ``run_cutoff``."""
    source = backend_for(config.source_db)
    archive = backend_for("archive")
    # describe() raises SchemaError for a table that does not exist: one
    # catalog round trip fewer than asking first.
    try:
        info = source.describe(config.schema_name, config.table_name)
    except SchemaError:
        raise TableError(f"table {config} does not exist") from None
    if not info.primary_key:
        raise TableError(f"table {config} has no primary key; keyset batches need one")
    declared = config.pk_columns
    if declared and declared != info.primary_key:
        raise TableError(
            f"primary key of {config} is ({', '.join(info.primary_key)}), config says ({', '.join(declared)})"
        )
    names = set(info.column_names)
    contract_info = None
    if config.archival_logic == "CONTRACT_MATURITY":
        if config.contract_reference_column not in names:
            raise TableError(f"column {config.contract_reference_column!r} does not exist in {config}")
        try:
            contract_info = source.describe_columns(config.schema_name, config.contract_table)
        except SchemaError:
            raise TableError(f"contract table {config.contract_table!r} does not exist in {config.source_db}") from None
        cnames = set(contract_info.column_names)
        for col in (config.contract_key_column, config.contract_maturity_column):
            if col not in cnames:
                raise TableError(f"column {col!r} does not exist in contract table {config.contract_table}")
    elif config.date_column not in names:
        raise TableError(f"date column {config.date_column!r} does not exist in {config}")

    threshold = subtract_months(run_cutoff, config.effective_months)
    spec = TableSpec(
        config,
        info,
        source,
        archive,
        topology(config.source_db),
        threshold,
        contract_info=contract_info,
    )
    fk_refs = info.referenced_by
    if fk_refs is None:
        fk_refs = source.referencing(config.schema_name, config.table_name)
    if all_configs is not None:
        siblings = all_configs
    else:
        # Only the configs that can be children: a foreign key from their
        # table, or a contract join naming this one.
        # (A plain SELECT: built through the ORM's compiler this query costs
        # five times as much as running it, once per table.)
        fk_children = sorted({child for child, _, _ in fk_refs})
        contract_table = column(TableConfig, "contract_table")
        named = (
            f"{column(TableConfig, 'table_name')} IN ({', '.join(['%s'] * len(fk_children))}) OR "
            if fk_children
            else ""
        )
        siblings = fetch(
            TableConfig,
            where={**ACTIVE_CONFIG, "source_db": config.source_db, "schema_name": config.schema_name},
            raw_where=[(f"{named}{contract_table} = %s", [*fk_children, config.table_name])],
        )
    described = {config.table_name: info}

    def column_of(table: str, name: str) -> Column:
        # A child's reference column, read from the catalog once per table:
        # how its dates compare depends on the column's type.
        if table not in described:
            try:
                described[table] = source.describe_columns(config.schema_name, table)
            except SchemaError:
                raise TableError(f"table {table!r} does not exist in {config.source_db}") from None
        col = described[table].column(name)
        if col is None:
            raise TableError(f"column {name!r} does not exist in {table}")
        return col

    spec.children = find_children(config, siblings, source, run_cutoff, fk_refs, info.primary_key, column_of=column_of)
    refuse_unconfigured_children(config, fk_refs, spec.children)
    return spec


def refuse_unconfigured_children(config, fk_refs: list[tuple[str, str, str]], children: list[ChildRef]) -> None:
    """Raise TableError naming every table whose foreign key points at ``config``'s table and no active config covers.

    Such a table's rows never move, so the parent rows they reference can
    never leave (the source's foreign key refuses the delete, or the rows
    would be left pointing at nothing). The table is not moved at all rather
    than in part: an unconfigured child is most often one forgotten, and
    configuring it (children move first) is the fix. A foreign key of the
    table to itself is not a child table.
    """
    covered = {child.table for child in children}
    missing = sorted(
        {(table, column) for table, column, _ in fk_refs if table != config.table_name and table not in covered}
    )
    if missing:
        names = ", ".join(f"{table} (column {column})" for table, column in missing)
        raise TableError(
            f"{config} is referenced by tables without an active archival config: {names}; "
            f"configure them (they move first) or nothing of {config.table_name} can move"
        )


def find_children(
    config,
    siblings,
    source: Backend,
    run_cutoff: date,
    fk_refs: list[tuple[str, str, str]],
    primary_key: list[str] | None = None,
    *,
    column_of: Callable[[str, str], Column],
) -> list[ChildRef]:
    """The parent rule's terms for the configured tables that reference ``config``'s table (archival.engine.dependencies).

    ``column_of(table, column)`` gives a child's reference column from the
    catalog (its type decides how its dates compare; see
    Backend.date_before_sql).
    """
    q = source.quote
    found: list[ChildRef] = []
    for ref in references_to(config, siblings, fk_refs):
        other = ref.child
        threshold = subtract_months(run_cutoff, other.effective_months)
        if other.archival_logic == "CONTRACT_MATURITY":
            # Child eligibility is its contract's maturity; {c} is that contract table.
            maturity = source.date_before_sql(
                f"c2.{q(other.contract_maturity_column)}",
                column_of(other.contract_table, other.contract_maturity_column),
            )
            elig = (
                f"EXISTS (SELECT 1 FROM {{c}} c2 WHERE c2.{q(other.contract_key_column)} = ch.{q(other.contract_reference_column)}"
                f" AND {maturity})"
            )
        else:
            # Never NULL: it stands under NOT in the parent's rule.
            elig = source.date_before_sql(f"ch.{q(other.date_column)}", column_of(other.table_name, other.date_column))
        # Through its contract join on our unique one-column key, a child
        # row's contract is exactly the row it references.
        own = ref.contract_join and primary_key == [ref.parent_column]
        found.append(
            ChildRef(
                other.pk,
                str(other),
                other.table_name,
                ref.column,
                ref.parent_column,
                elig,
                threshold,
                other.contract_table,
                other.contract_maturity_column if own else "",
            )
        )
    return found
