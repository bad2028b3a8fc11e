from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Archival governance"

    def ready(self) -> None:
        # Imported once the app registry is ready: governance.roles reads the
        # auth app's models. Keep the four role groups exact after every migrate.
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
    # archival.disposal loads the models: this module is imported before them.
    from archival.disposal.triggers import ensure_triggers

    ensure_triggers(connections[using], role)
