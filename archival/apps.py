from django.apps import AppConfig


class ArchivalConfig(AppConfig):
    name = "archival"
    verbose_name = "Archival engine"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from archival.backends.sqlite import attach_namespaces, use_wal_for_control

        # SQLite same-server moves need the source files and the archive's
        # per-source namespace files attached to the archive connection.
        connection_created.connect(attach_namespaces, dispatch_uid="archival.attach_namespaces")
        connection_created.connect(use_wal_for_control, dispatch_uid="archival.use_wal_for_control")
        # Every task django-q2 enqueues (schedules firing, resubmits, our own)
        # is checked against the task registry before it is signed.
        from django_q.signals import pre_enqueue

        from archival.task_guard import refuse_foreign_tasks

        pre_enqueue.connect(refuse_foreign_tasks, dispatch_uid="archival.refuse_foreign_tasks")

        # django-q2 worker processes beat (archival.heartbeat), and a table
        # slice that failed or was killed by the q2 timeout is re-enqueued at
        # once instead of waiting for the sweeper.
        from django_q.signals import post_execute, post_spawn

        from archival.dispatch import requeue_failed_slice
        from archival.heartbeat import on_worker_spawn

        post_spawn.connect(on_worker_spawn, dispatch_uid="archival.heartbeat")
        post_execute.connect(requeue_failed_slice, dispatch_uid="archival.requeue_failed_slice")

        # Pacing keeps the scheduler settings and the watched replicas for a
        # few seconds per process (two reads per table would cost a run of
        # small tables ~2%); a change saved here is seen at once.
        from django.db.models.signals import post_delete, post_save

        from archival.engine.pacing import forget

        for model in ("SchedulerSettings", "ReplicaWatch"):
            sender = f"governance.{model}"
            post_save.connect(forget, sender=sender, dispatch_uid=f"archival.pacing.forget.save.{model}")
            post_delete.connect(forget, sender=sender, dispatch_uid=f"archival.pacing.forget.delete.{model}")
