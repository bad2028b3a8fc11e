from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Archival governance"

    def ready(self) -> None:
        from governance import checks  # noqa: F401  (registers system checks)

        # Keep the four role groups exact after every migrate (governance.roles).
        from django.db.models.signals import post_migrate

        from governance.roles import sync_roles_after_migrate

        post_migrate.connect(sync_roles_after_migrate, sender=self, dispatch_uid="governance.sync_roles")
