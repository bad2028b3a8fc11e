"""Create the SELECT-only PostgreSQL role that archive_readonly connects as."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from archival.search.readonly import ReadonlyRoleError, create_readonly_role


class Command(BaseCommand):
    help = (
        "Create or update the PostgreSQL role behind the archive_readonly alias, with SELECT only on the "
        "archive schemas and the hold tables. Run after migrate and after the first archival run (new "
        "namespaces), as the archive owner; CI runs it before the tests. Idempotent."
    )

    def add_arguments(self, parser):
        readonly = settings.DATABASES.get("archive_readonly", {})
        parser.add_argument(
            "--role", default=readonly.get("USER") or "", help="Role name (default: archive_readonly's USER)."
        )
        parser.add_argument(
            "--password",
            default=readonly.get("PASSWORD") or None,
            help="Login password (default: archive_readonly's PASSWORD).",
        )
        parser.add_argument("--database", default="archive", help="Alias of the archive, connected as its owner.")

    def handle(self, *args, role, password, database, **options):
        if not role:
            raise CommandError("No role: pass --role or set a user in ARCHIVE_READONLY_DATABASE_URL.")
        try:
            result = create_readonly_role(role=role, password=password, using=database)
        except ReadonlyRoleError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(result.summary()))
