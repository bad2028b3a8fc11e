"""System checks for a broken set-up.

Errors run with every manage.py command: nothing works without them. The
warnings about a deployment that works but is weaker than it should be run
with ``manage.py check --deploy`` (and are shown on the dashboard), not in
every command's output.
"""

from __future__ import annotations

import logging

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
    return errors


def readonly_can_write() -> Warning | None:
    archive = settings.DATABASES.get("archive", {})
    readonly = settings.DATABASES.get("archive_readonly", {})
    if archive.get("ENGINE") == "django.db.backends.postgresql" and readonly.get("USER") == archive.get("USER"):
        return Warning(
            "archive_readonly connects as the same PostgreSQL user as archive, so it can write",
            hint="Set ARCHIVE_READONLY_DATABASE_URL to a role with SELECT only (see README).",
            id="governance.W001",
        )
    return None


def alerts_go_nowhere() -> Warning | None:
    if not settings.ADMINS:
        return Warning(
            "ARCHIVAL_ADMIN_EMAILS is unset: alerts (failed tables, stalled runs, hold violations) reach no one",
            hint="Set ARCHIVAL_ADMIN_EMAILS to the addresses of the people on call.",
            id="governance.W002",
        )
    return None


def deployment_warnings() -> list[Warning]:
    """The deployment's weaknesses, for ``check --deploy``, the dashboard and start-up in production."""
    return [w for w in (readonly_can_write(), alerts_go_nowhere()) if w is not None]


@register(deploy=True)
def check_deployment(app_configs, **kwargs):
    return deployment_warnings()


def log_deployment_warnings() -> None:
    """At start-up in production, put each weakness in the log, where an operator reads it first."""
    logger = logging.getLogger("governance.deploy")
    for warning in deployment_warnings():
        logger.warning("%s: %s (%s)", warning.id, warning.msg, warning.hint)
