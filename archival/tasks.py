"""django-q2 task functions. Each calls one function and returns its result as a dict.

The schedules (see ``archival.schedules``) name these by dotted path; the
logic lives in ``archival.dispatch`` (fan-out, sweeper) and
``archival.engine`` (the tables themselves). Results go to q2's result table
for diagnosis only; the record of a run is the run, its recovery states, the
ledger and the audit trail.
"""

from __future__ import annotations

from archival import alerts, dispatch, stopping


def scheduled_run(**kwargs) -> dict:
    """The weekly schedule: start a run on the workers (refused while paused)."""
    return dispatch.start_scheduled_run(actor="schedule", trigger="schedule").as_dict()


def table_slice(dispatch_id: int, ticket: int) -> dict:
    """One time-boxed slice of one table; it re-enqueues its own continuation."""
    # Workers get SIGTERM with the whole process group under systemd or an
    # init in a container: finish the batch in hand rather than die mid-way.
    stopping.install_sigterm_handler()
    result = dispatch.run_slice(dispatch_id, ticket).as_dict()
    stopping.exit_if_stopping()
    return result


def finalize_run(run_id: int) -> dict:
    """Close a run whose tables are all done (or stopped) and write its summary."""
    return dispatch.finalize(run_id).as_dict()


def sweep(**kwargs) -> dict:
    """Every minute: re-enqueue lost tables, alert, and pump waiting tables."""
    return dispatch.sweep().as_dict()


def hold_review_reminder(**kwargs) -> dict:
    """Weekly: remind compliance officers of holds past their review-by date."""
    return alerts.remind_hold_reviews()


def scheduled_disposal(**kwargs) -> dict:
    """Weekly: plan disposal of expired rows, then execute approved batches (time-boxed, re-enqueued)."""
    from archival.disposal.workers import dispose_on_workers

    stopping.install_sigterm_handler()
    result = dispose_on_workers(plan=True, actor="schedule").as_dict()
    stopping.exit_if_stopping()
    return result


def dispose_slice(failed: list[int] | None = None, **kwargs) -> dict:
    """Continue executing approved disposal batches, one at a time, in a time box."""
    from archival.disposal.workers import dispose_on_workers

    stopping.install_sigterm_handler()
    result = dispose_on_workers(failed=failed or (), actor="schedule").as_dict()
    stopping.exit_if_stopping()
    return result
