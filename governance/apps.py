from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Archival governance"

    def ready(self) -> None:
        # Keep the four role groups exact after every migrate (governance.roles).
        from django.db.models.signals import post_migrate

        from governance import checks  # noqa: F401  (registers system checks)
        from governance.roles import sync_roles_after_migrate

        post_migrate.connect(sync_roles_after_migrate, sender=self, dispatch_uid="governance.sync_roles")
        # SQLite rebuilds a table to alter it and drops its triggers; restore
        # the DELETE-refusing ones after every migrate (idempotent).
        post_migrate.connect(ensure_triggers_after_migrate, sender=self, dispatch_uid="governance.ensure_triggers")


# Database alias -> trigger role of archival.disposal.triggers: holds live in
# the archive, the audit trail in the control database.
TRIGGER_ROLES = {"archive": "archive", "default": "default"}


def ensure_triggers_after_migrate(sender, using="default", **kwargs) -> None:
    role = TRIGGER_ROLES.get(using)
    if role is None:
        return
    from django.db import connections

    from archival.disposal.triggers import ensure_triggers

    ensure_triggers(connections[using], role)
