"""Create the demo source tables (our users' topology) and their table configs."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from archival.demo import DemoSize, build_demo


class Command(BaseCommand):
    help = "Build the demo source databases and configs (run once after migrate; re-running rebuilds the sources)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--positions",
            type=int,
            default=DemoSize.positions,
            help="Position rows in SourceDB1.",
        )
        parser.add_argument(
            "--generated-tables",
            type=int,
            default=DemoSize.generated_tables,
            help="Generated reference/operational tables.",
        )
        parser.add_argument(
            "--generated-rows",
            type=int,
            default=DemoSize.generated_rows,
            help="Rows per generated table.",
        )
        parser.add_argument("--small", action="store_true", help="A small data set for tests.")

    def handle(self, *args, **options):
        size = DemoSize(
            positions=options["positions"],
            generated_tables=options["generated_tables"],
            generated_rows=options["generated_rows"],
        )
        if options["small"]:
            size = DemoSize(
                positions=3000,
                contracts=200,
                trades=1500,
                prices=1500,
                generated_tables=6,
                generated_rows=60,
            )
        counts = build_demo(size)
        self.stdout.write(self.style.SUCCESS(f"Demo built: {len(counts)} source tables, {sum(counts.values())} rows."))
