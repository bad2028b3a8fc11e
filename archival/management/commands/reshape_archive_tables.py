"""Bring existing archive tables to the current shape (docs/archive-tables.md).

    python manage.py reshape_archive_tables [--dry-run] [TABLE ...]

TABLE as everywhere (archival.engine.table_names); none: every configured
table, inactive ones included (their archive tables are still read). Each
changed table is audited (``archive_table.reshaped``). Idempotent: a table
already in shape is reported and left alone. A table this tool did not create
is refused, and the others go on; the command then exits non-zero.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from archival.engine.errors import TableError
from archival.engine.reshape import plan_reshape, reshape
from archival.engine.table_names import GRAMMAR, select_configs
from governance.actors import command_actor


class Command(BaseCommand):
    help = (
        "Bring every archive table (or those named) to the current shape: the source key as the PRIMARY KEY "
        "where the engine changes it in place, an index on retention_until and on the contract column, the "
        "reference_date index dropped. Audited per table; a second run changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("tables", nargs="*", help=f"Tables to reshape ({GRAMMAR}); default: all.")
        parser.add_argument("--dry-run", action="store_true", help="Print the DDL that would run; change nothing.")

    def handle(self, *args, **options):
        actor = command_actor("reshape_archive_tables")
        dry_run = options["dry_run"]
        try:
            configs = select_configs(options["tables"], active_only=False)
        except TableError as exc:
            raise CommandError(str(exc)) from None
        refused = []
        for config in configs:
            try:
                plan = plan_reshape(config) if dry_run else reshape(config, actor=actor)
            except TableError as exc:
                refused.append(config.label)
                self.stdout.write(self.style.ERROR(f"{config.label}: {exc}"))
                continue
            if plan.missing:
                self.stdout.write(f"{config.label}: no archive table yet (it is created in the current shape)")
                continue
            for name in plan.others:
                self.stdout.write(f"{config.label}: index {name} was not made by this tool; left as it is")
            if plan.key_note:
                self.stdout.write(f"{config.label}: source key: {plan.key_note}")
            if not plan.changes:
                self.stdout.write(f"{config.label}: {plan.table} already in shape")
                continue
            if plan.needs_dba:
                self.stdout.write(
                    self.style.WARNING(
                        f"{config.label}: archive tables here are the DBA's (no DDL right); have the DBA run:"
                    )
                )
            elif dry_run:
                self.stdout.write(f"{config.label}: would run:")
            else:
                self.stdout.write(self.style.SUCCESS(f"{config.label}: reshaped {plan.table}:"))
            for sql in plan.statements:
                self.stdout.write(f"    {sql};")
        if refused:
            raise CommandError(f"{len(refused)} table(s) refused: {', '.join(refused)}")
