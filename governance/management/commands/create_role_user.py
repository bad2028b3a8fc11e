"""Create a user in one of the four roles (the first compliance officer, administrator, auditor or reader).

python manage.py create_role_user alice --role compliance          # asks for the password twice
python manage.py create_role_user bob --role reader --generate-password
"""

from __future__ import annotations

import getpass
import secrets

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from governance.roles import ARCHIVE_READER, ROLE_ALIASES, create_role_user, role_named


class Command(BaseCommand):
    help = (
        "Create a user in one role's group (run once per person after migrate; superusers are not needed to "
        "govern the archive). Compliance officers, administrators and auditors get admin access; archive "
        "readers only the search pages."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            required=True,
            help=f"One of {', '.join(ROLE_ALIASES)} (or the group's full name).",
        )
        parser.add_argument("--email", default="", help="The user's e-mail address (alerts, optional).")
        parser.add_argument(
            "--generate-password",
            action="store_true",
            help="Generate a random password and print it once, instead of asking for one.",
        )

    def handle(self, *args, username, role, email, generate_password, **options):
        try:
            role_obj = role_named(role)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        if generate_password:
            password = secrets.token_urlsafe(18)
        else:
            password = getpass.getpass(f"Password for {username}: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the passwords differ; nothing was created")
        try:
            create_role_user(username, role_obj.name, password, email)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if generate_password:
            self.stdout.write(f"Password (shown once): {password}")
        where = (
            "the admin (/admin/) and the search (/search/)"
            if role_obj.name != ARCHIVE_READER
            else "the search (/search/)"
        )
        self.stdout.write(self.style.SUCCESS(f"Created {username} as {role_obj.name}; they sign in at {where}."))
