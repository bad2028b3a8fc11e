"""System checks for a broken set-up (run by every manage.py command)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_databases(app_configs, **kwargs):
    errors = []
    for alias in ("default", "archive", "archive_readonly"):
        if alias not in settings.DATABASES:
            errors.append(Error(f"DATABASES has no {alias!r} alias", id="governance.E001"))
    for alias in settings.SOURCE_DATABASES:
        if alias not in settings.DATABASES:
            errors.append(Error(f"source database {alias!r} has no DATABASES entry", id="governance.E002"))
    archive_engine = settings.DATABASES.get("archive", {}).get("ENGINE", "")
    readonly = settings.DATABASES.get("archive_readonly", {})
    if archive_engine == "django.db.backends.postgresql" and readonly.get("USER") == settings.DATABASES["archive"].get(
        "USER"
    ):
        errors.append(
            Warning(
                "archive_readonly connects as the same PostgreSQL user as archive, so it can write",
                hint="Set ARCHIVE_READONLY_DATABASE_URL to a role with SELECT only (see README).",
                id="governance.W001",
            )
        )
    return errors
