"""Plan or execute retention disposal (the same engine calls as the admin actions)."""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from archival.disposal import execute_disposal, forecast_disposal, plan_disposal
from archival.engine.errors import TableError
from archival.engine.table_names import GRAMMAR
from governance.actors import command_actor


def _default(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class Command(BaseCommand):
    help = (
        "Retention disposal. --plan queues expired, unheld archive rows for review (after each archival run); "
        "--execute destroys approved batches and issues certificates (after review; also resumes a killed "
        "execution); --forecast shows what becomes disposable over the next 12 weeks. --dry-run changes nothing."
    )

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--plan", action="store_true", help="Queue disposal batches for review.")
        mode.add_argument("--execute", action="store_true", help="Execute approved batches (resumes unfinished ones).")
        mode.add_argument("--forecast", action="store_true", help="Rows becoming disposable per table and week.")
        parser.add_argument("--dry-run", action="store_true", help="Report what would happen; change nothing.")
        parser.add_argument(
            "--table",
            action="append",
            dest="tables",
            metavar="LABEL",
            help=f"Limit to a table ({GRAMMAR}); repeatable.",
        )
        parser.add_argument(
            "--batch",
            action="append",
            dest="batch_ids",
            type=int,
            metavar="ID",
            help="Execute only this batch; repeatable.",
        )
        parser.add_argument("--max-batches", type=int, help="Stop after this many batches.")
        parser.add_argument("--json", action="store_true", help="Print the result object as JSON.")

    def handle(self, *args, **options):
        try:
            self._handle(options)
        except TableError as exc:
            raise CommandError(str(exc)) from None

    def _handle(self, options):
        actor = command_actor("dispose")
        if options["plan"]:
            result = plan_disposal(tables=options["tables"], actor=actor, dry_run=options["dry_run"])
            self._emit(result, options)
            for t in result.tables:
                extra = t.error or t.skipped or ", ".join(f"hold {b.hold_id} blocks {b.rows}" for b in t.blocking_holds)
                self.stdout.write(
                    f"{t.table_label}: {t.disposable_rows} disposable in {len(t.batches)} batch(es), {t.held_rows} held"
                    + (f" ({extra})" if extra else "")
                )
            summary = f"{'would queue' if result.dry_run else 'queued'} {result.batch_count} batch(es), {result.disposable_rows} rows; {result.held_rows} held"
        elif options["execute"]:
            result = execute_disposal(
                tables=options["tables"],
                batch_ids=options["batch_ids"],
                actor=actor,
                dry_run=options["dry_run"],
                max_batches=options["max_batches"],
            )
            self._emit(result, options)
            for b in result.batches:
                status = (
                    b.error
                    or b.skipped
                    or f"deleted {b.deleted}, held {b.held}, certificate {b.certificate_id} digest {b.digest[:16]}"
                )
                self.stdout.write(f"batch {b.batch_id} {b.table_label}: {status}" + (" (resumed)" if b.resumed else ""))
            summary = f"{'would destroy' if result.dry_run else 'destroyed'} {result.deleted} rows in {len(result.batches)} batch(es); {result.held} held"
        else:
            result = forecast_disposal(tables=options["tables"])
            self._emit(result, options)
            for t in result.tables:
                weeks = " ".join(str(w.rows) for w in t.weeks)
                self.stdout.write(
                    f"{t.table_label}: overdue {t.overdue} | weeks {weeks}" + (f" ({t.error})" if t.error else "")
                )
            summary = f"{sum(t.total for t in result.tables)} rows disposable within 12 weeks"
        if not getattr(result, "ok", True):
            raise CommandError(f"disposal finished with errors: {summary}")
        self.stdout.write(self.style.SUCCESS(summary))

    def _emit(self, result, options):
        if options["json"]:
            self.stdout.write(json.dumps(asdict(result), default=_default, indent=2))
