"""Execute a restore on the django-q2 workers (the admin's "execute" action uses this).

The request only validates and enqueues: the execution is long work and
leaves the request (STYLE 17). The task (``archival.tasks.execute_restore``,
in the task registry the schedule guard checks) calls the same engine
function as ``manage.py archival restore execute``; its progress is the
request's RestoreTable rows, and a lost task is resumed by executing again
(the lease of a dead worker is taken over).
"""

from __future__ import annotations

from django_q.tasks import async_task

from archival.restore.errors import RestoreRefused
from archival.restore.executor import EXECUTABLE
from archival.restore.requests import REQUEST_PERMISSION, require_permission
from governance.actors import actor_name
from governance.models import AuditEvent, RestoreRequest

RESTORE_TASK = "archival.tasks.execute_restore"


def execute_on_workers(request, *, actor) -> str:
    """Enqueue the execution of an approved request; returns the django-q2 task id.

    Raises RestoreRefused when ``actor`` lacks ``governance.request_restore``
    or the request is not approved (or failed, to resume it).
    """
    require_permission(actor, REQUEST_PERMISSION, "execute a restore")
    current = RestoreRequest.objects.filter(pk=request.pk).first()
    if current is None:
        raise RestoreRefused(f"there is no restore request {request.pk}")
    if current.status not in EXECUTABLE:
        raise RestoreRefused(
            f"restore {current.pk} is {current.get_status_display().lower()}; only an approved request is executed"
        )
    task_id = async_task(
        RESTORE_TASK,
        current.pk,
        actor_name(actor),
        q_options={"task_name": f"restore-{current.pk}", "group": f"restore-{current.pk}"},
    )
    AuditEvent.objects.record(
        "restore.enqueued",
        actor=actor,
        obj=current,
        table_label=current.table_label,
        details={"request_id": current.pk, "task_id": str(task_id or "")},
    )
    return str(task_id or "")
