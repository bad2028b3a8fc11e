"""The plan (dry run): what a run would do, changing nothing."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError
from django.db import DatabaseError

from archival import rowkeys
from archival.engine.archive_tables import ensure_archive_table
from archival.engine.cutoff import resolve_cutoff
from archival.engine.errors import TableError
from archival.engine.phases import count_eligible, unreadable_examples
from archival.engine.results import PlanResult, TablePlan
from archival.engine.spec import build_spec
from archival.engine.table_names import select_configs
from governance.models import OPEN_PHASES, RecoveryState


def plan(tables: list[str] | None = None, cutoff: date | None = None) -> PlanResult:
    """Per table: eligible rows, rows without a reference date or with one that is not a date (and the first
    keys of those), blocking problems, the SQL that would run."""
    cutoff = resolve_cutoff(cutoff)
    result = PlanResult(cutoff=cutoff.isoformat())
    configs = select_configs(tables)
    open_runs = dict(
        RecoveryState.objects.filter(config__in=configs, phase__in=OPEN_PHASES).values_list("config_id", "run_id")
    )
    for config in configs:
        entry = TablePlan(label=str(config))
        result.tables.append(entry)
        if config.pk in open_runs:
            entry.problems.append(f"run {open_runs[config.pk]} has not finished this table (resume or abandon it)")
        try:
            config.clean()
        except ValidationError as exc:
            entry.problems += (
                [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
                if hasattr(exc, "message_dict")
                else exc.messages
            )
            continue
        try:
            spec = build_spec(config, cutoff)
            entry.mode, entry.threshold = spec.mode, spec.threshold.isoformat()
            entry.sql += ensure_archive_table(spec, dry_run=True)
            counts = count_eligible(spec)
            entry.eligible, entry.null_dates, entry.unreadable_dates = counts.eligible, counts.nulls, counts.unreadable
            if counts.unreadable:
                entry.unreadable_examples = unreadable_examples(spec)
            entry.sql.append(_batch_sql_preview(spec))
        except (TableError, DatabaseError) as exc:
            entry.problems.append(str(exc))
    return result


def _batch_sql_preview(spec) -> str:
    on = spec.archive if spec.mode == "same_server" else spec.source
    where, params = spec.selection(on, low=None)
    pk_s = spec.q(on, "s", spec.pk)
    sql = (
        f"SELECT {', '.join(pk_s)} FROM {spec.from_clause(on)} WHERE {where} ORDER BY {rowkeys.order_by(pk_s)} LIMIT %s"
    )
    return (
        f"-- {spec.mode} batch selection, params {[str(p) for p in [*params, spec.config.effective_batch_size]]}\n{sql}"
    )
