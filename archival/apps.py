from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_save

from archival.backends.sqlite import attach_namespaces, register_purge_guard, use_wal_for_control


class ArchivalConfig(AppConfig):
    name = "archival"
    verbose_name = "Archival engine"

    def ready(self) -> None:
        # These modules (and django_q's signals) import models, which can
        # only be imported once the app registry is ready, that is here.
        from django_q.signals import post_execute, post_spawn, pre_enqueue

        from archival.dispatch import on_worker_spawn, requeue_failed_slice
        from archival.engine.pacing import forget
        from archival.task_guard import refuse_foreign_tasks

        # SQLite same-server moves need the source files and the archive's
        # per-source namespace files attached to the archive connection.
        connection_created.connect(attach_namespaces, dispatch_uid="archival.attach_namespaces")
        connection_created.connect(use_wal_for_control, dispatch_uid="archival.use_wal_for_control")
        # The SQLite DELETE triggers (archival.disposal.triggers) call
        # archival_purge_allowed(): every connection this process opens needs
        # it, and ready() runs before any connection is made.
        connection_created.connect(register_purge_guard, dispatch_uid="archival.disposal.purge_guard")
        # Every task django-q2 enqueues (schedules firing, resubmits, our own)
        # is checked against the task registry before it is signed.
        pre_enqueue.connect(refuse_foreign_tasks, dispatch_uid="archival.refuse_foreign_tasks")

        # django-q2 worker processes beat (archival.heartbeat), and a table
        # slice that failed or was killed by the q2 timeout is re-enqueued at
        # once instead of waiting for the sweeper.
        post_spawn.connect(on_worker_spawn, dispatch_uid="archival.heartbeat")
        post_execute.connect(requeue_failed_slice, dispatch_uid="archival.requeue_failed_slice")

        # Pacing keeps the scheduler settings and the watched replicas for a
        # few seconds per process (two reads per table would cost a run of
        # small tables ~2%); a change saved here is seen at once.
        for model in ("SchedulerSettings", "ReplicaWatch"):
            sender = f"governance.{model}"
            post_save.connect(forget, sender=sender, dispatch_uid=f"archival.pacing.forget.save.{model}")
            post_delete.connect(forget, sender=sender, dispatch_uid=f"archival.pacing.forget.delete.{model}")
