"""The four roles of DESIGN.md as Django groups with exact permission sets.

``ROLES`` is the single definition; ``docs/roles.md`` documents it for people
and the data migration ``0003_roles`` plus a ``post_migrate`` hook apply it,
so a group always holds exactly these permissions: a permission granted by
hand in the admin is taken away again by the next ``migrate``.

Nobody is granted a delete permission on anything: configs are deactivated,
holds released, runs abandoned, and audit events are permanent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

COMPLIANCE_OFFICER = "Compliance officer"
ARCHIVAL_ADMINISTRATOR = "Archival administrator"
AUDITOR = "Auditor"
ARCHIVE_READER = "Archive reader"

# Apps whose every model an auditor may read ("read everything").
AUDITED_APPS = ("governance", "archival", "django_q")

# Permissions that belong to models other helpers add (disposal review,
# certificates). A role lists them; until their model exists they are absent
# from the database and are skipped, and ``missing_permissions`` reports them.
OPTIONAL_APPS = ("governance", "archival")


@dataclass(frozen=True)
class Role:
    name: str
    summary: str
    # "app_label.codename"
    permissions: tuple[str, ...] = ()
    # The role also gets every view_* permission of these apps.
    view_all_of: tuple[str, ...] = ()
    # Granted when they exist (models added by later migrations).
    optional: tuple[str, ...] = field(default=())


ROLES: dict[str, Role] = {
    COMPLIANCE_OFFICER: Role(
        name=COMPLIANCE_OFFICER,
        summary="Places and releases holds (also from rows found in the archive search), approves or rejects "
        "disposals and restores, reads configs, runs and the audit trail.",
        permissions=(
            "governance.view_tableconfig",
            "governance.view_archivalrun",
            "governance.view_recoverystate",
            "governance.view_batchledger",
            "governance.view_auditevent",
            "governance.view_hold",
            "governance.add_hold",
            "governance.change_hold",
            "governance.release_hold",
            "governance.view_holdkey",
            "governance.add_holdkey",
            "django_q.view_schedule",
            # The archive search: find the rows a KEYS hold should cover.
            "governance.view_archive_search",
        ),
        optional=(
            "governance.view_disposalbatch",
            "governance.approve_disposal",
            "governance.view_disposalapproval",
            "governance.view_disposalcertificate",
            "governance.view_retentionchange",
            "governance.approve_retentionchange",
            "governance.view_schedulersettings",
            # Restore (docs/restore.md): approves or rejects what an administrator asked for.
            "governance.approve_restore",
            "governance.view_restorerequest",
            "governance.view_restoretable",
            "governance.view_restoreledger",
            "governance.view_restorecertificate",
        ),
    ),
    ARCHIVAL_ADMINISTRATOR: Role(
        name=ARCHIVAL_ADMINISTRATOR,
        summary="Edits table configs; starts, resumes and abandons runs; plans and executes disposals; requests and "
        "executes restores; edits the schedule.",
        permissions=(
            "governance.view_tableconfig",
            "governance.add_tableconfig",
            "governance.change_tableconfig",
            "governance.view_archivalrun",
            "governance.start_run",
            "governance.abandon_run",
            "governance.view_recoverystate",
            "governance.view_batchledger",
            "governance.view_auditevent",
            "governance.view_hold",
            "governance.view_holdkey",
            "django_q.view_schedule",
            "django_q.add_schedule",
            "django_q.change_schedule",
            "django_q.view_task",
            "django_q.view_success",
            "django_q.view_failure",
        ),
        optional=(
            "governance.view_disposalbatch",
            "governance.plan_disposal",
            "governance.view_disposalapproval",
            "governance.view_disposalcertificate",
            "governance.view_retentionchange",
            "governance.add_retentionchange",
            "governance.view_schedulersettings",
            "governance.change_schedulersettings",
            "governance.pause_scheduler",
            "governance.view_tabledispatch",
            "governance.view_rundispatch",
            # Restore (docs/restore.md): asks for archived rows back and executes
            # the request once a compliance officer approved it.
            "governance.request_restore",
            "governance.view_restorerequest",
            "governance.view_restoretable",
            "governance.view_restoreledger",
            "governance.view_restorecertificate",
            # Replicas whose lag pauses the batches (archival.engine.replicas).
            "governance.view_replicawatch",
            "governance.add_replicawatch",
            "governance.change_replicawatch",
        ),
    ),
    AUDITOR: Role(
        name=AUDITOR,
        summary="Reads everything (admin and archive search); exports the audit trail, certificates and search results.",
        permissions=(
            "governance.export_auditevent",
            "governance.view_archive_search",
            "governance.export_archive_search",
        ),
        view_all_of=AUDITED_APPS,
        optional=("governance.export_disposalcertificate", "governance.export_restorecertificate"),
    ),
    ARCHIVE_READER: Role(
        name=ARCHIVE_READER,
        summary="Only the read-only archive search pages; no admin access (not staff).",
        permissions=("governance.view_archive_search",),
    ),
}


def _split(perm: str) -> tuple[str, str]:
    app_label, codename = perm.split(".", 1)
    return app_label, codename


def permission_names(role: Role, available: set[str]) -> set[str]:
    """The exact "app.codename" set a role's group must hold.

    ``available`` is every permission present in the database; required
    permissions missing from it raise LookupError (a typo in ``ROLES`` must
    not silently shrink a role).
    """
    missing = [p for p in role.permissions if p not in available]
    if missing:
        raise LookupError(f"role {role.name!r} names unknown permissions {missing}")
    wanted = set(role.permissions)
    wanted.update(p for p in role.optional if p in available)
    for app_label in role.view_all_of:
        wanted.update(
            p
            for p in available
            if p.startswith(f"{app_label}.view_") and not p.startswith(f"{app_label}.view_historical")
        )
    return wanted


def missing_permissions() -> dict[str, list[str]]:
    """Optional permissions not (yet) in the database, per role (for docs and checks)."""
    available = {f"{a}.{c}" for a, c in Permission.objects.values_list("content_type__app_label", "codename")}
    return {name: [p for p in role.optional if p not in available] for name, role in ROLES.items()}


def sync_roles(apps=None, using: str = "default") -> dict[str, int]:
    """Create or update the four groups so each holds exactly its permissions.

    ``apps`` is the migration state registry inside a migration, the global
    registry otherwise. Idempotent; returns the permission count per group.
    """
    if apps is None:
        apps = global_apps

    # Permissions are normally created after migrate (post_migrate); a data
    # migration must create them itself before it can grant them.
    # (Migration-state app configs have no models_module, which makes
    # create_permissions skip them; lend one for the call and put it back.)
    for app_config in apps.get_app_configs():
        saved = getattr(app_config, "models_module", None)
        app_config.models_module = saved or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=using)
        finally:
            app_config.models_module = saved

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    by_name = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    counts = {}
    for name, role in ROLES.items():
        wanted = permission_names(role, set(by_name))
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set([by_name[p] for p in sorted(wanted)])
        counts[name] = len(wanted)
    return counts


def sync_roles_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    """post_migrate hook: later migrations add models (disposal, certificates)
    whose permissions the roles must pick up without a new data migration."""
    if using != "default":
        return
    sync_roles(global_apps, using=using)


# Short names people type on the command line (``create_role_user --role compliance``).
ROLE_ALIASES = {
    "compliance": COMPLIANCE_OFFICER,
    "administrator": ARCHIVAL_ADMINISTRATOR,
    "auditor": AUDITOR,
    "reader": ARCHIVE_READER,
}


def role_named(name: str) -> Role:
    """The role called ``name`` or one of its ``ROLE_ALIASES``; LookupError otherwise."""
    role = ROLES.get(ROLE_ALIASES.get(name.strip().lower(), name.strip()))
    if role is None:
        known = ", ".join([*ROLE_ALIASES, *ROLES])
        raise LookupError(f"no role {name!r}; one of: {known}")
    return role


def create_role_user(username: str, role_name: str, password: str, email: str = ""):
    """A new user in exactly one role's group. Staff (admin access) for every
    role but the archive reader, who only uses the search pages. Validates the
    password with the configured validators; never changes an existing user."""
    role = role_named(role_name)
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise ValidationError(f"a user named {username!r} already exists")
    user = user_model(username=username, email=email, is_staff=role.name != ARCHIVE_READER)
    user.full_clean(exclude=["password"])
    validate_password(password, user)
    sync_roles()
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=role.name))
    return user
