"""django-q2 task functions. Each calls one function and returns its result as a dict.

The schedules (see ``archival.schedules``) name these by dotted path, and
``REGISTRY`` below is the list of what may run at all; the
logic lives in ``archival.dispatch`` (fan-out, sweeper) and
``archival.engine`` (the tables themselves). Results go to q2's result table
for diagnosis only; the record of a run is the run, its recovery states, the
ledger and the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError

from archival import alerts, dispatch, stopping
from archival.disposal.workers import dispose_on_workers
from archival.engine.leases import process_worker_id
from archival.restore.errors import RestoreRefused
from archival.restore.executor import execute
from archival.schedules import RUN_SCHEDULE


def scheduled_run(occurrence: str | None = None) -> dict:
    """The weekly schedule: start a run on the workers (refused while paused).

    ``occurrence``: the instant this firing was scheduled for, which django-q2
    passes (the schedule's ``intended_date_kwarg``). It is the run's
    idempotency key: the same occurrence delivered again starts no second run.
    """
    key = f"{RUN_SCHEDULE} @ {occurrence}" if occurrence else None
    return dispatch.start_scheduled_run(actor="schedule", trigger="schedule", occurrence=key).as_dict()


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
    stopping.install_sigterm_handler()
    result = dispose_on_workers(plan=True, actor="schedule").as_dict()
    stopping.exit_if_stopping()
    return result


def dispose_slice(
    failed: list[int] | None = None, batches: list[int] | None = None, actor: str = "schedule", **kwargs
) -> dict:
    """Continue executing approved disposal batches, one at a time, in a time box.

    ``batches``: only these (an administrator's selection, executed in ``actor``'s name).
    """
    stopping.install_sigterm_handler()
    result = dispose_on_workers(failed=failed or (), batches=batches, actor=actor).as_dict()
    stopping.exit_if_stopping()
    return result


def execute_restore(request_id: int, actor: str) -> dict:
    """Execute (or resume) an approved restore request on a worker (archival.restore.workers enqueues it)."""
    stopping.install_sigterm_handler()
    try:
        # The worker's own id (its heartbeat's): if it dies, others see it and take the request over.
        result = execute(request_id, actor=actor, worker_id=process_worker_id()).as_dict()
    except RestoreRefused as exc:
        result = {"request_id": request_id, "refused": str(exc)}
    stopping.exit_if_stopping()
    return result


def refused_task(func: str = "", reason: str = "", **kwargs) -> dict:
    """What the workers run instead of a task that is not one of ours (see ``archival.task_guard``).

    The refusal is already audited and alerted when the task was enqueued;
    this only leaves the outcome in q2's task list, where the administrator
    who looks for the schedule's last run finds it.
    """
    return {"refused": func, "reason": reason}


# --- the registry ------------------------------------------------------------
# The only callables django-q2 may run. A task named by dotted path (a
# Schedule row, a resubmitted task, our own async_task calls) that is not in
# this registry, or whose arguments its check refuses, is replaced by
# ``refused_task`` before it is signed and enqueued (archival.task_guard).
# ``schedulable`` tasks are the ones the schedule admin offers.


def _no_arguments(args: tuple, kwargs: dict) -> None:
    if args or kwargs:
        raise ValidationError("This task takes no arguments: leave arguments and keyword arguments empty.")


def _occurrence_only(args: tuple, kwargs: dict) -> None:
    """No arguments but the occurrence django-q2 passes: an ISO date and time."""
    if args or set(kwargs) - {"occurrence"}:
        raise ValidationError("This task takes no arguments: leave arguments and keyword arguments empty.")
    if "occurrence" in kwargs:
        value = kwargs["occurrence"]
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValidationError(f"occurrence must be an ISO date and time, not {value!r}.") from None


def _whole_number(value, what: str, minimum: int = 1) -> None:
    # bool is an int subclass: True is not a run number.
    if type(value) is not int or value < minimum:
        raise ValidationError(f"{what} must be a whole number of at least {minimum}, not {value!r}.")


def _ids(*names: tuple[str, int]) -> Callable[[tuple, dict], None]:
    """Exactly these positional arguments, (name, minimum) each a whole number, and no keywords."""

    def check(args: tuple, kwargs: dict) -> None:
        if kwargs or len(args) != len(names):
            listed = ", ".join(name for name, _ in names)
            raise ValidationError(f"This task takes exactly {len(names)} argument(s): {listed}.")
        for (name, minimum), value in zip(names, args, strict=True):
            _whole_number(value, name, minimum)

    return check


def _disposal_slice_arguments(args: tuple, kwargs: dict) -> None:
    """Batch ids that failed in the chain, the selection it is restricted to, and who it acts for."""
    if args or set(kwargs) - {"failed", "batches", "actor"}:
        raise ValidationError(
            "This task takes only the keyword arguments failed and batches (lists of batch ids) and actor."
        )
    for name in ("failed", "batches"):
        ids = kwargs.get(name, [])
        if not isinstance(ids, list) or len(ids) > 10_000:
            raise ValidationError(f"{name} must be a list of at most 10,000 batch ids.")
        for batch_id in ids:
            _whole_number(batch_id, "a batch id")
    if "actor" in kwargs:
        _actor(kwargs["actor"])


def _restore_arguments(args: tuple, kwargs: dict) -> None:
    """A request id and the name of who asked for the execution (kept in the audit trail)."""
    if kwargs or len(args) != 2:
        raise ValidationError("This task takes exactly 2 arguments: request_id, actor.")
    _whole_number(args[0], "request_id")
    _actor(args[1])


def _actor(value) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 150:
        raise ValidationError("actor must be a user name of at most 150 characters.")


def _refusal(args: tuple, kwargs: dict) -> None:
    if args or set(kwargs) != {"func", "reason"} or not all(isinstance(v, str) for v in kwargs.values()):
        raise ValidationError("refused_task takes func and reason, as text.")


@dataclass(frozen=True)
class RegisteredTask:
    func: Callable
    description: str
    check_arguments: Callable[[tuple, dict], None]
    schedulable: bool = False
    # The keyword django-q2 fills with the firing's intended instant, if the task takes one.
    intended_date_kwarg: str | None = None

    @property
    def path(self) -> str:
        return f"{self.func.__module__}.{self.func.__name__}"


REGISTRY: dict[str, RegisteredTask] = {
    entry.path: entry
    for entry in (
        RegisteredTask(
            scheduled_run,
            "Start an archival run on the workers",
            _occurrence_only,
            schedulable=True,
            intended_date_kwarg="occurrence",
        ),
        RegisteredTask(sweep, "Sweeper: re-enqueue lost tables, alert, pump", _no_arguments, schedulable=True),
        RegisteredTask(
            hold_review_reminder, "Remind compliance officers of holds due for review", _no_arguments, schedulable=True
        ),
        RegisteredTask(
            scheduled_disposal, "Plan disposal, then execute approved batches", _no_arguments, schedulable=True
        ),
        # Enqueued by the engine itself, with the ids it just wrote; never scheduled.
        RegisteredTask(table_slice, "One slice of one table of a run", _ids(("dispatch_id", 1), ("ticket", 0))),
        RegisteredTask(finalize_run, "Close a run whose tables are done", _ids(("run_id", 1))),
        RegisteredTask(dispose_slice, "Continue executing approved disposal batches", _disposal_slice_arguments),
        RegisteredTask(execute_restore, "Execute an approved restore request", _restore_arguments),
        RegisteredTask(refused_task, "Stands in for a refused task", _refusal),
    )
}
