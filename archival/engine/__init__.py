"""The archival engine: one set of functions every entry point calls.

plan (dry run) -> start_run -> advance_table per table (mark, archive,
verify, complete) -> finalize_run; run_cycle does all of it in one process;
resume_run and abandon_run handle unfinished runs.
"""

from archival.engine.planning import plan
from archival.engine.results import PlanResult, RunResult, TablePlan, TableResult
from archival.engine.runner import (
    abandon_run,
    advance_table,
    finalize_run,
    ordered_states,
    resume_run,
    run_cycle,
    start_run,
)

__all__ = [
    "PlanResult",
    "RunResult",
    "TablePlan",
    "TableResult",
    "abandon_run",
    "advance_table",
    "finalize_run",
    "ordered_states",
    "plan",
    "resume_run",
    "run_cycle",
    "start_run",
]
