"""Operator CLI for the archival engine.

    python manage.py archival plan    [--table T ...] [--cutoff YYYY-MM-DD] [--json]
    python manage.py archival run     [--table T ...] [--cutoff ...] [--dry-run] [--json]
    python manage.py archival resume  [--run N] [--json]
    python manage.py archival abandon --run N --reason "..." [--table T ...]
    python manage.py archival status  [--run N] [--runs N] [--json] [--check]

Run it weekly (the django-q2 schedule does), or by hand after a failure.
Exit code: 0 when every table succeeded, 1 when any failed.
"""

from __future__ import annotations

import json
import sys
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from archival import engine
from archival.engine.errors import TableError
from archival.progress import Progress
from governance.models import ArchivalRun, RecoveryState


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--cutoff {value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Plan, run, resume, abandon or inspect archival runs (weekly, or after a failure)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (
            ("plan", "Show what a run would move; changes nothing."),
            ("run", "Start a run now and process every table."),
            ("resume", "Continue an unfinished run with its original cutoff."),
            (
                "abandon",
                "Give up an unfinished run's tables (audited; nothing is lost).",
            ),
            ("status", "Show the latest runs and their tables."),
        ):
            p = sub.add_parser(name, help=text)
            p.add_argument(
                "--json",
                action="store_true",
                help="Print machine-readable JSON instead of a table.",
            )
            if name in {"plan", "run", "abandon"}:
                p.add_argument(
                    "--table",
                    action="append",
                    default=[],
                    help="Limit to a table (Name, Source.Name or Source.schema.Name); repeatable.",
                )
            if name in {"plan", "run"}:
                p.add_argument("--cutoff", type=_date, help="Run as of this date instead of today.")
            if name == "run":
                p.add_argument(
                    "--dry-run",
                    action="store_true",
                    help="Only plan: same as the plan action.",
                )
            if name in {"resume", "abandon", "status"}:
                p.add_argument(
                    "--run",
                    type=int,
                    help="Run id (resume: default the oldest unfinished run).",
                )
            if name == "abandon":
                p.add_argument(
                    "--reason",
                    required=True,
                    help="Why the run is abandoned (kept in the audit trail).",
                )
                p.add_argument(
                    "--actor",
                    default="cli",
                    help="Who decided (kept in the audit trail).",
                )
            if name == "status":
                p.add_argument(
                    "--check",
                    action="store_true",
                    help="Monitoring mode: exit 0 OK, 1 WARNING, 2 CRITICAL.",
                )
                p.add_argument("--runs", type=int, default=1, help="How many of the latest runs to show (default 1).")

    def handle(self, *args, **options):
        action = options["action"]
        try:
            if action == "plan" or (action == "run" and options["dry_run"]):
                return self.render_plan(
                    engine.plan(options["table"] or None, options.get("cutoff")),
                    options,
                )
            if action == "run":
                with Progress(self.stdout, quiet=options["json"]) as progress:
                    result = engine.run_cycle(
                        cutoff=options.get("cutoff"),
                        tables=options["table"] or None,
                        actor="cli",
                        on_table=progress.table_done,
                        on_batch=progress.advance,
                    )
                return self.render_run(result, options)
            if action == "resume":
                with Progress(self.stdout, quiet=options["json"]) as progress:
                    result = engine.resume_run(
                        options.get("run"),
                        actor="cli",
                        on_table=progress.table_done,
                        on_batch=progress.advance,
                    )
                return self.render_run(result, options)
            if action == "abandon":
                if not options.get("run"):
                    raise CommandError("abandon needs --run N")
                result = engine.abandon_run(
                    options["run"],
                    actor=options["actor"],
                    reason=options["reason"],
                    tables=options["table"] or None,
                )
                return self.render_run(result, options)
            if action == "status":
                return self.render_status(options)
        except (TableError, ArchivalRun.DoesNotExist) as exc:
            raise CommandError(str(exc)) from None

    # -- rendering ---------------------------------------------------------------
    def render_plan(self, result, options):
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            for t in result.tables:
                line = f"{t.label:<45} {t.mode:<12} threshold {t.threshold or '-':<10} eligible {t.eligible if t.eligible is not None else '-':>9} no date {t.null_dates if t.null_dates is not None else '-':>7}"
                self.stdout.write(line)
                for problem in t.problems:
                    self.stdout.write(self.style.ERROR(f"    problem: {problem}"))
        blocked = sum(1 for t in result.tables if t.problems)
        # With --json, stdout holds only the JSON document; the summary goes to stderr.
        out = self.stderr if options["json"] else self.stdout
        out.write(
            f"Plan (cutoff {result.cutoff}): {len(result.tables)} tables, {result.eligible} rows eligible, {blocked} with problems; nothing changed."
        )

    def render_run(self, result, options):
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            self.render_tables(result.tables)
        failed = len(result.failed)
        blocked = sum(1 for t in result.tables if t.phase == "BLOCKED")
        moved = result.moved
        summary = (
            f"Run {result.run_id} ({result.status}, cutoff {result.cutoff}): {len(result.tables)} tables, "
            f"{moved} rows moved, {failed} failed, {blocked} blocked by unfinished runs."
        )
        lost = result.lease_lost
        if lost:
            summary += f" {len(lost)} table(s) taken over by another worker mid-way: this process stopped on them."
        elif moved == 0 and not failed and not blocked and not result.waiting:
            summary += " Nothing new to archive."
        waiting = result.waiting
        if waiting:
            summary += f" {len(waiting)} table(s) waiting (a database down or a lock held): resume them with 'manage.py archival resume --run {result.run_id}'."
        out = self.stderr if options["json"] else self.stdout
        for t in lost:
            out.write(self.style.ERROR(f"{t.label}: lease lost to {t.lease_taken_by}; its progress is theirs now"))
        for t in waiting:
            out.write(self.style.WARNING(f"{t.label}: waiting for {t.waiting_for}: {t.error[:300]}"))
        if failed or blocked or lost or waiting:
            out.write(self.style.ERROR(summary))
            sys.exit(1)
        out.write(self.style.SUCCESS(summary))

    def render_tables(self, tables):
        self.stdout.write(f"{'table':<45} {'phase':<10} {'eligible':>9} {'archived':>9} {'moved now':>9}  error")
        for t in tables:
            self.stdout.write(
                f"{t.label:<45} {t.phase:<10} {t.eligible if t.eligible is not None else '-':>9} {t.archived_total:>9} {t.moved:>9}  {t.error[:80]}"
            )

    def render_status(self, options):
        if options.get("check"):
            from archival.monitoring import health_check

            check = health_check()
            for message in check.messages:
                self.stdout.write(message)
            self.stdout.write("components: " + ", ".join(f"{name} {state}" for name, state in check.components.items()))
            self.stdout.write(f"{check.label}: {len(check.messages)} finding(s)")
            sys.exit(check.code)
        runs = ArchivalRun.objects.all()
        if options.get("run"):
            runs = runs.filter(pk=options["run"])
        runs = list(runs[: options.get("runs") or 1])
        payload = []
        for run in runs:
            states = list(RecoveryState.objects.filter(run=run).order_by("id"))
            payload.append(
                {
                    "run_id": run.pk,
                    "status": run.status,
                    "cutoff": run.cutoff.isoformat(),
                    "started_at": run.started_at.isoformat(),
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "tables": [
                        {
                            "table": s.table_label,
                            "phase": s.phase,
                            "eligible": s.eligible_count,
                            "archived": s.archived_count,
                            "error": s.last_error,
                            "waiting_for": s.waiting_for,
                        }
                        for s in states
                    ],
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps(payload, indent=2))
            return
        for run in payload:
            self.stdout.write(
                self.style.MIGRATE_HEADING(
                    f"Run {run['run_id']}: {run['status']} (cutoff {run['cutoff']}, started {run['started_at']})"
                )
            )
            self.stdout.write(f"{'table':<45} {'phase':<10} {'eligible':>9} {'archived':>9}  error")
            for t in run["tables"]:
                elig = t["eligible"] if t["eligible"] is not None else "-"
                self.stdout.write(f"{t['table']:<45} {t['phase']:<10} {elig:>9} {t['archived']:>9}  {t['error'][:80]}")
        self.stdout.write(f"{len(payload)} run(s) shown.")
