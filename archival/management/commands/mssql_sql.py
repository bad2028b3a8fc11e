"""Print the dynamic SQL the SQL Server procedures would build (dry run)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from archival.backends.mssql.templates import dry_run
from archival.engine.table_names import GRAMMAR, UnknownTable, select_configs


class Command(BaseCommand):
    help = (
        "Dry run for the SQL Server path: for each active table config (or the ones named), print the "
        "DBA's provisioning call and the dynamic SQL archival.usp_build_sql builds from sql/05_templates.sql "
        "(mark, archive batch, dispose batch, restore comparison and batch). Run it before provisioning and when reviewing a config. "
        "Changes nothing and needs no SQL Server."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--table", action="append", default=[], metavar="TABLE", help=f"Only this table ({GRAMMAR}); repeatable."
        )
        parser.add_argument(
            "--template",
            choices=["mark_table", "archive_batch", "dispose_batch", "restore_compare", "restore_batch"],
            help="Only this statement.",
        )

    def handle(self, *args, **options):
        try:
            configs = select_configs(options["table"])
        except UnknownTable as exc:
            raise CommandError(str(exc)) from None
        if not configs:
            raise CommandError("No active table configs: create them first (or build the demo).")
        try:
            for config in configs:
                config.full_clean()
            tables = dry_run(configs)
        except ValidationError as exc:
            raise CommandError(f"A config does not match its live schema: {exc}") from None
        for table in tables:
            self.stdout.write(f"-- ===== {table.label} =====")
            self.stdout.write(table.provision_call)
            for name, sql in table.statements.items():
                if options["template"] and name != options["template"]:
                    continue
                self.stdout.write(f"-- {name}")
                if name in {"restore_batch", "restore_compare"}:
                    self.stdout.write(
                        "-- (selection shown: a KEY_RANGE; archival.usp_restore_batch fills a request's own "
                        "selection from archival.usp_build_restore_selection)"
                    )
                self.stdout.write(sql.strip())
                self.stdout.write("GO")
        self.stdout.write(self.style.SUCCESS(f"-- Printed the SQL Server dynamic SQL for {len(tables)} table(s)."))
