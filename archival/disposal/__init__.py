"""Retention disposal: plan, review, execute, prove (docs/disposal.md).

The engine API; every entry point (management command, admin action, q2
task) calls one of these and renders the result object it returns.
"""

from archival.disposal.batches import (
    DisposalExecutionResult,
    DisposalPlanResult,
    ReviewResult,
    decide_batch,
    execute_batch,
    execute_disposal,
    plan_disposal,
)
from archival.disposal.holds import place_hold, release_hold
from archival.disposal.retention import (
    ForecastResult,
    RetentionChangeResult,
    decide_retention_change,
    forecast_disposal,
    request_retention_change,
)
from archival.disposal.tables import DisposalError
from archival.rowkeys import digest_of_keys, key_text

__all__ = [
    "DisposalError",
    "DisposalExecutionResult",
    "DisposalPlanResult",
    "ForecastResult",
    "RetentionChangeResult",
    "ReviewResult",
    "decide_batch",
    "decide_retention_change",
    "digest_of_keys",
    "execute_batch",
    "execute_disposal",
    "forecast_disposal",
    "key_text",
    "place_hold",
    "plan_disposal",
    "release_hold",
    "request_retention_change",
]
