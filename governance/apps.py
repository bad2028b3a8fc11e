from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Archival governance"

    def ready(self) -> None:
        from governance import checks  # noqa: F401  (registers system checks)
