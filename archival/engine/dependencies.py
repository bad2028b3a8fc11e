"""Which configured tables reference which: the one rule for the parent rule, the CLI run and the workers.

A configured table is a child of another configured table of the same
source database and schema when its rows point at that table's rows: by a
single-column foreign key of the live schema, or by its contract join
(``CONTRACT_MATURITY``: the contract table, the referencing column, the
contract's key). A parent row moves only when no child row references it
(``TableSpec.parent_rule``), so on archival children go first: foreign keys
and contract joins alike, then ``execution_priority``, then the name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from archival.backends import backend_for
from archival.backends.base import ForeignKey
from archival.engine.txn import bound_sessions

if TYPE_CHECKING:
    from governance.models import TableConfig

logger = logging.getLogger("archival")

T = TypeVar("T")

# (child table, child column, parent column) of one single-column foreign key
# naming the parent's table, as Backend.referencing gives it.
ForeignKeyRef = tuple[str, str, str]


@dataclass(frozen=True)
class Reference:
    """One way a configured child table points at its parent's rows."""

    child: TableConfig
    parent: TableConfig
    column: str  # the child's column
    parent_column: str  # the parent's column it holds the value of
    contract_join: bool  # the child's contract join (else a foreign key)


def _same_schema(a: TableConfig, b: TableConfig) -> bool:
    return a.pk != b.pk and a.source_db == b.source_db and a.schema_name == b.schema_name


def _references(
    child: TableConfig, parent: TableConfig, foreign_keys: Iterable[tuple[str, str]]
) -> dict[str, Reference]:
    """``child``'s references to ``parent`` by column: its foreign keys (column, parent column), then its contract join.

    A foreign key and the contract join on one column are one reference, the
    contract join's (the parent rule then knows the child's contract row).
    """
    found = {column: Reference(child, parent, column, parent_column, False) for column, parent_column in foreign_keys}
    if child.archival_logic == "CONTRACT_MATURITY" and child.contract_table == parent.table_name:
        column = child.contract_reference_column
        found[column] = Reference(child, parent, column, child.contract_key_column, True)
    return found


def references_to(
    parent: TableConfig, configs: Iterable[TableConfig], foreign_keys: Sequence[ForeignKeyRef]
) -> list[Reference]:
    """The references of the configured tables among ``configs`` to ``parent``'s table, one per (child, column).

    ``foreign_keys``: the single-column foreign keys naming ``parent``'s
    table (``Backend.referencing``). Only configs of the parent's source
    database and schema count; a table referencing itself is not its own child.
    """
    by_child: dict[str, list[tuple[str, str]]] = {}
    for table, column, parent_column in foreign_keys:
        by_child.setdefault(table, []).append((column, parent_column))
    found: list[Reference] = []
    for child in configs:
        if _same_schema(child, parent):
            found += _references(child, parent, by_child.get(child.table_name, [])).values()
    return found


def references_from(
    child: TableConfig, configs: Iterable[TableConfig], foreign_keys: Sequence[ForeignKey]
) -> list[Reference]:
    """``child``'s references to the configured tables among ``configs``, one per (parent, column).

    ``foreign_keys``: the single-column foreign keys of ``child``'s table
    (``TableInfo.foreign_keys``). The same rule as :func:`references_to`,
    seen from the child.
    """
    found: list[Reference] = []
    for parent in configs:
        if _same_schema(child, parent):
            keys = [(fk.column, fk.ref_column) for fk in foreign_keys if fk.ref_table == parent.table_name]
            found += _references(child, parent, keys).values()
    return found


def foreign_keys_of(configs: Sequence[TableConfig]) -> Callable[[TableConfig], list[ForeignKeyRef]]:
    """A lookup: config -> the single-column foreign keys naming its table, from the live catalog.

    Read once per source schema for all of ``configs`` (a run orders all its
    tables at its start: one catalog read per schema instead of one per
    table, about 2 ms each on PostgreSQL). Bounded (the session's lock and
    statement timeouts): a table another session keeps locked must not hold
    up the start of a run. A catalog read in its own statement, not in a
    transaction of ours: ordering the tables must hold no lock a batch then
    waits for.
    """
    by_schema: dict[tuple[str, str], list[str]] = {}
    for config in configs:
        by_schema.setdefault((config.source_db, config.schema_name), []).append(config.table_name)
    read: dict[tuple[str, str], dict[str, list[ForeignKeyRef]]] = {}

    def lookup(config: TableConfig) -> list[ForeignKeyRef]:
        where = (config.source_db, config.schema_name)
        if where not in read:
            bound_sessions([config.source_db])
            tables = list(dict.fromkeys(by_schema.get(where, [config.table_name])))
            read[where] = backend_for(config.source_db).referencing_tables(config.schema_name, tables)
        return list(read[where].get(config.table_name, []))

    return lookup


def children(
    configs: Sequence[TableConfig],
    *,
    foreign_keys: Callable[[TableConfig], Sequence[ForeignKeyRef]] | None = None,
) -> dict[int, list[int]]:
    """Config id -> ids of the configs among ``configs`` that reference it (foreign key or contract join).

    ``foreign_keys``: a config's foreign keys in (``foreign_keys_of`` by
    default). A table whose catalog cannot be read has only its contract-join
    children here; the engine fails it (or leaves it waiting for its
    database) with a clear error on its own turn. A database that failed
    once is not asked again for its other tables: a server that does not
    answer would otherwise cost one connection timeout per table.
    """
    if foreign_keys is None:
        foreign_keys = foreign_keys_of(configs)
    kids: dict[int, list[int]] = {}
    unreadable: set[str] = set()
    for parent in configs:
        refs: Sequence[ForeignKeyRef] = []
        if parent.source_db not in unreadable:
            try:
                refs = foreign_keys(parent)
            except Exception as exc:  # noqa: BLE001 (the engine reports a broken table on its turn)
                logger.warning("cannot read the foreign keys into %s: %s", parent, exc)
                unreadable.add(parent.source_db)
        kids[parent.pk] = sorted({ref.child.pk for ref in references_to(parent, configs, refs)})
    return kids


def dependency_order(
    items: Sequence[T], kids: Mapping[int, Iterable[int]], config: Callable[[T], TableConfig]
) -> list[T]:
    """``items`` with children before the tables they reference, then execution_priority, source, name.

    ``kids`` maps a config id to its children's config ids (``children``);
    ``config(item)`` is the item's TableConfig. A cycle of references
    (A -> B -> A) is cut where it closes.
    """
    below: dict[int, set[int]] = {config(item).pk: set(kids.get(config(item).pk, ())) for item in items}

    def height(pk: int, path: frozenset[int]) -> int:
        path = path | {pk}
        return 1 + max((height(k, path) for k in below[pk] if k in below and k not in path), default=-1)

    def key(item: T) -> tuple:
        c = config(item)
        return (height(c.pk, frozenset()), c.execution_priority, c.source_db, c.table_name)

    return sorted(items, key=key)
