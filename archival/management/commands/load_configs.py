"""Load table configs from a CSV or XLSX file, reporting every row error.

    python manage.py load_configs configs.csv [--dry-run] [--user NAME]

Run it to onboard or change tables in bulk (the admin's Import does the same
with a preview). Every row is checked first; if any fails, every failure is
printed with its line and column, nothing is loaded and the exit code is 1.
The columns and an example per archival logic: docs/configs.md.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.config_loading import load_configs


class Command(BaseCommand):
    help = (
        "Load table configs from a CSV or XLSX file (columns: docs/configs.md). Every row is validated against "
        "the live source schema first; any error is reported with its line and column and nothing is loaded."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV (UTF-8) or XLSX file, one config per row, with a header row.")
        parser.add_argument("--dry-run", action="store_true", help="Only validate and report; load nothing.")
        parser.add_argument(
            "--user",
            help="Username whose permissions apply (needed for rows that change a config's years in archive).",
        )

    def handle(self, *args, **options):
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        user = None
        if options.get("user"):
            user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
            if user is None:
                raise CommandError(f"--user {options['user']!r}: no active user of that name")
        try:
            result = load_configs(path, user=user, dry_run=options["dry_run"])
        except (ValueError, UnicodeDecodeError) as exc:  # not a readable CSV/XLSX
            raise CommandError(f"{path}: cannot read it as {path.suffix or 'CSV'} ({exc})") from None
        for error in result.errors:
            self.stderr.write(f"{path.name}: {error}")
        counts = f"{result.rows} row(s): {result.new} new, {result.updated} changed, {result.skipped} unchanged"
        if result.errors:
            raise CommandError(f"{len(result.errors)} error(s) in {counts}; nothing was loaded.")
        if options["dry_run"]:
            self.stdout.write(self.style.SUCCESS(f"{path.name}: {counts}; all valid (dry run, nothing loaded)."))
        else:
            self.stdout.write(self.style.SUCCESS(f"{path.name}: loaded {counts}."))
