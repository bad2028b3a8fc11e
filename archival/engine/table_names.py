"""How an operator names tables: the one grammar for the CLI commands, runs, disposal and restore.

A name is ``Name`` (every configured table of that name), ``Source.Name``,
``Source.schema.Name`` (the config's label) or a config id. A name that
matches nothing is an error, never an empty selection: a typo must not turn
"dispose of table X" into "dispose of nothing" and report success, nor
"archive X" into a run of no table.
"""

from __future__ import annotations

from collections.abc import Sequence

from archival.engine.errors import TableError
from governance.models import TableConfig

GRAMMAR = "Name, Source.Name, Source.schema.Name or a config id"


class UnknownTable(TableError):
    """A table name that names no table config."""


def matches(config: TableConfig, name: str) -> bool:
    """True when ``name`` (see the module docstring) names ``config``."""
    parts = name.split(".")
    if len(parts) == 1:
        return config.table_name == name or (name.isdigit() and config.pk == int(name))
    if len(parts) == 2:
        return (config.source_db, config.table_name) == (parts[0], parts[1])
    if len(parts) == 3:
        return (config.source_db, config.schema_name, config.table_name) == (parts[0], parts[1], parts[2])
    return False


def select_configs(names: Sequence[str] | None = None, *, active_only: bool = True) -> list[TableConfig]:
    """The configs ``names`` name, in the order named (each once); all of them when ``names`` is empty.

    ``active_only``: only active configs can match (a run or a plan); False
    where an inactive config's table still matters (abandoning a run,
    executing batches planned before the config was switched off).
    Raises UnknownTable naming every name that matched nothing.
    """
    configs = list(TableConfig.objects.active() if active_only else TableConfig.objects.all())
    if not names:
        return configs
    chosen: list[TableConfig] = []
    unknown: list[str] = []
    for name in names:
        found = [c for c in configs if matches(c, name)]
        if not found:
            unknown.append(name)
        chosen += [c for c in found if c not in chosen]
    if unknown:
        kind = "active table config" if active_only else "table config"
        raise UnknownTable(f"no {kind} named {', '.join(unknown)} (name a table as {GRAMMAR})")
    return chosen
