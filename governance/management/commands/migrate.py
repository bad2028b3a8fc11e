"""Django's ``migrate``, preparing the archive's own schema first (governance.archive_schema).

Run it as always (``migrate`` for the control database, ``migrate --database
archive`` for the archive). On the archive alias on PostgreSQL it first
creates the schema of the archive's own tables and moves those of an older
install out of ``public``; Django then reads the applied migrations there.
"""

from __future__ import annotations

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import connections

from governance import archive_schema


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + " On the archive database, prepares the schema of its own tables first."

    def handle(self, *args, **options):
        try:
            moved = archive_schema.prepare(connections[options["database"]])
        except archive_schema.ArchiveSchemaError as exc:
            raise CommandError(str(exc)) from None
        if moved and options["verbosity"] >= 1:
            self.stdout.write(f"Moved {len(moved)} table(s) of the archive into its schema: {', '.join(moved)}")
        return super().handle(*args, **options)
