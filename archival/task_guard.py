"""Only the archival tasks run on the workers, whoever asked for them.

django-q2 runs a task by importing its ``func`` from a dotted path, and a
Schedule row holds that path as text: anyone who can write a schedule (the
admin, a shell, a raw INSERT) could otherwise make the workers call any
importable callable, ``os.system`` included. ``archival.tasks.REGISTRY`` is
the list of what may run, each task with a check of its arguments. Two fences
use it:

- the schedule admin offers only the registry's schedulable tasks and checks
  their arguments as django-q2 will read them (``check_schedule``);
- ``refuse_foreign_tasks``, on django-q2's ``pre_enqueue`` signal, which
  ``async_task`` sends for every task (a schedule that fires, the admin's
  resubmit action, our own code) before the task is signed and enqueued. A
  task that is not a registered one with valid arguments and no result hook
  is replaced by ``archival.tasks.refused_task``, so the foreign callable
  never reaches a worker, and the refusal is audited and alerted. This holds
  whoever created the schedule, a superuser included.

django-q2 reads a schedule's ``args``/``kwargs`` with ``ast.literal_eval``
(literals only, never code); ``parse_schedule_arguments`` reads them the same
way, but refuses what django-q2 would silently drop or choke on.
"""

from __future__ import annotations

import ast
import logging

from django.core.exceptions import ValidationError

from archival import alerts
from archival.tasks import REGISTRY
from governance.models import AuditEvent

logger = logging.getLogger("archival.task_guard")

REFUSED_TASK = "archival.tasks.refused_task"
# Keys of q2's task package that make it call more code (a result hook) or
# keep its result away from the task list; dropped from a refused task.
_DROPPED_FROM_REFUSED = ("hook", "chain", "cached", "iter_count", "iter_cached")


def _registry():
    return REGISTRY


def registered(func: str | None):
    """The registry entry of a dotted path, or None when it is not one of ours."""
    return _registry().get(func or "")


def schedulable_choices() -> list[tuple[str, str]]:
    """(dotted path, label) of the tasks the schedule admin offers."""
    return [(path, f"{entry.description} ({path})") for path, entry in _registry().items() if entry.schedulable]


def parse_schedule_arguments(args_text: str | None, kwargs_text: str | None) -> tuple[tuple, dict]:
    """A Schedule's ``args`` and ``kwargs`` as django-q2's scheduler will pass them.

    Literals only (``ast.literal_eval``); raises ValidationError where q2
    would fail the whole scheduler tick or silently pass nothing.
    """
    args: tuple = ()
    kwargs: dict = {}
    if args_text and args_text.strip():
        try:
            value = ast.literal_eval(args_text.strip())
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise ValidationError(
                "Arguments must be Python literals separated by commas, e.g. 1, 'x'.", code="arguments"
            ) from None
        args = value if type(value) is tuple else (value,)
    if kwargs_text and kwargs_text.strip():
        text = kwargs_text.strip()
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            value = _keywords(text)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValidationError("Keyword arguments must be a dict or name=literal pairs.", code="arguments")
        kwargs = value
    return args, kwargs


def _keywords(text: str) -> dict:
    """``x=1, y='a'`` (q2's second syntax), each value a literal."""
    invalid = ValidationError("Keyword arguments must be name=literal pairs, e.g. x=1, y='a'.", code="arguments")
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise invalid from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise invalid
    try:
        return {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise invalid from None


def check_schedule(func: str, args_text: str | None, kwargs_text: str | None) -> None:
    """Raise ValidationError unless ``func`` is a schedulable task and the arguments suit it."""
    entry = _registry().get(func)
    if entry is None or not entry.schedulable:
        raise ValidationError(
            "%(func)s cannot be scheduled: choose one of the archival tasks.", code="func", params={"func": func}
        )
    args, kwargs = parse_schedule_arguments(args_text, kwargs_text)
    if "q_options" in kwargs:
        raise ValidationError("q_options (hooks, clusters, timeouts) cannot be set on a schedule.", code="arguments")
    entry.check_arguments(args, kwargs)


def func_path(func) -> str:
    if isinstance(func, str):
        return func
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def problem_with(task: dict) -> str:
    """Why q2's task package ``task`` may not run ("" when it may)."""
    func = task.get("func")
    path = func_path(func)
    entry = _registry().get(path)
    # A callable must be the registered function itself, not one that borrowed its name.
    if entry is None or (not isinstance(func, str) and func is not entry.func):
        return f"{path} is not one of the archival tasks"
    if task.get("hook"):
        return f"a result hook ({func_path(task['hook'])}) is not allowed"
    try:
        entry.check_arguments(tuple(task.get("args") or ()), dict(task.get("kwargs") or {}))
    except ValidationError as exc:
        return f"{path}: " + " ".join(exc.messages)
    return ""


def refuse_foreign_tasks(sender, task: dict, **kwargs) -> None:
    """django-q2 ``pre_enqueue`` receiver: neutralise ``task`` in place if it may not run.

    Never raises: an exception here would fail the scheduler's whole tick
    (every schedule) and roll back the refusal's own audit event.
    """
    problem = problem_with(task)
    if not problem:
        return
    refused = {
        "func": func_path(task.get("func"))[:256],
        "args": repr(task.get("args"))[:1000],
        "kwargs": repr(task.get("kwargs"))[:1000],
        "hook": func_path(task["hook"])[:256] if task.get("hook") else "",
        "group": str(task.get("group") or "")[:200],
        "task_name": str(task.get("name") or "")[:200],
        "reason": problem[:1000],
    }
    # First make it harmless, then record it: a failing audit write must not
    # let the original through.
    for key in _DROPPED_FROM_REFUSED:
        task.pop(key, None)
    task.update(
        func=REFUSED_TASK,
        args=(),
        kwargs={"func": refused["func"], "reason": refused["reason"]},
        save=True,
        ack_failure=True,
    )
    logger.error("refused to enqueue %s (%s): %s", refused["func"], refused["group"], problem)
    try:
        record_refusal(refused)
    except Exception:  # noqa: BLE001 (the task is already neutralised; leave a trace in the log)
        logger.exception("the refusal of %s could not be audited", refused["func"])


def record_refusal(refused: dict) -> None:
    event = AuditEvent.objects.record("task.refused", actor="django-q2", outcome="REFUSED", details=refused)
    alerts.task_refused(event)
