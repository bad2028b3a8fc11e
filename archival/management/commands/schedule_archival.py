"""Create the archival schedules, or start a run on the workers now.

python manage.py schedule_archival              # create missing schedules (idempotent)
python manage.py schedule_archival --reset      # put the crons back to the configured defaults
python manage.py schedule_archival --run-now    # what the admin's "Run now" does
python manage.py schedule_archival --pause | --unpause
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django_q.models import Schedule

from archival import dispatch
from archival.engine.errors import TableError
from archival.engine.table_names import GRAMMAR
from archival.schedules import ensure_schedules
from governance.actors import command_actor


class Command(BaseCommand):
    help = (
        "Create the weekly archival schedule, the sweeper and the hold review reminder (run after deploying; "
        "the migration does it too), or start a run on the workers now with --run-now."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Reset existing schedules to the configured cron (ARCHIVAL_RUN_CRON, ...).",
        )
        parser.add_argument(
            "--run-now",
            action="store_true",
            help="Start a run now on the workers (same path as the schedule and the admin).",
        )
        parser.add_argument(
            "--table",
            action="append",
            default=[],
            help=f"With --run-now: only this table ({GRAMMAR}); repeatable.",
        )
        parser.add_argument("--actor", help="Who asks (kept in the audit trail); default: this OS user at this host.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--pause",
            action="store_true",
            help="Pause the scheduler: no run starts, no new slice is enqueued.",
        )
        group.add_argument("--unpause", action="store_true", help="Resume the scheduler.")

    def handle(self, *args, **options):
        options["actor"] = options["actor"] or command_actor("schedule_archival")
        outcome = ensure_schedules(Schedule, reset=options["reset"])
        for name, what in outcome.items():
            self.stdout.write(f"{name}: {what}")
        if options["pause"] or options["unpause"]:
            changed = dispatch.set_paused(options["pause"], actor=options["actor"])
            state = "paused" if options["pause"] else "running"
            self.stdout.write(f"scheduler {state}" + ("" if changed else " (unchanged)"))
        if options["run_now"]:
            try:
                result = dispatch.start_scheduled_run(
                    actor=options["actor"],
                    trigger="command",
                    tables=options["table"] or None,
                )
            except TableError as exc:
                raise CommandError(str(exc)) from None
            if result.refused:
                raise CommandError(f"run refused: {result.refused}")
            self.stdout.write(
                self.style.SUCCESS(
                    f"run {result.run_id} started on the workers: {result.tables} table(s) to do, "
                    f"{result.blocked} blocked, {result.enqueued} enqueued now"
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"{len(outcome)} schedule(s) in place"))
