"""Operator CLI for the archival engine.

    python manage.py archival plan    [--table T ...] [--cutoff YYYY-MM-DD] [--json]
    python manage.py archival run     [--table T ...] [--cutoff ...] [--dry-run] [--json]
    python manage.py archival resume  [--run N] [--json]
    python manage.py archival abandon --run N --reason "..." [--table T ...]
    python manage.py archival status  [--run N] [--runs N] [--json] [--check]
    python manage.py archival restore request --table T --rows KIND ... --reason "..." --as USER
    python manage.py archival restore preview|approve|reject|execute|status ...   (docs/restore.md)

The archived counts of ``status`` are the batch ledger's (the record of what
committed), so they are right after a kill too.

Run it weekly (the django-q2 schedule does), or by hand after a failure.
Exit code: 0 when every table succeeded, 1 when any failed.
"""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from archival import engine
from archival.engine.cutoff import CutoffError, resolve_cutoff
from archival.engine.errors import TableError
from archival.engine.status import run_status
from archival.engine.table_names import GRAMMAR
from archival.management.restore_cli import RestoreCommands, add_restore_parser
from archival.monitoring import health_check
from archival.progress import Progress
from governance.actors import command_actor
from governance.models import ArchivalRun


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
                    help=f"Limit to a table ({GRAMMAR}); repeatable.",
                )
            if name in {"plan", "run"}:
                p.add_argument(
                    "--cutoff",
                    help="Run as of this date (YYYY-MM-DD, today or earlier) instead of today.",
                )
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
                    help="Who decided (kept in the audit trail); default: this OS user at this host.",
                )
            if name == "status":
                p.add_argument(
                    "--check",
                    action="store_true",
                    help="Monitoring mode: exit 0 OK, 1 WARNING, 2 CRITICAL.",
                )
                p.add_argument("--runs", type=int, default=1, help="How many of the latest runs to show (default 1).")
        add_restore_parser(sub)

    def handle(self, *args, **options):
        action = options["action"]
        if action == "restore":
            return RestoreCommands(self).handle(options)
        if options.get("cutoff") is not None:
            try:
                options["cutoff"] = resolve_cutoff(options["cutoff"])
            except CutoffError as exc:
                # A usage error, like argparse's own: exit 2.
                raise CommandError(str(exc), returncode=2) from None
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
                        actor=command_actor("archival run"),
                        on_table=progress.table_done,
                        on_batch=progress.advance,
                    )
                return self.render_run(result, options)
            if action == "resume":
                with Progress(self.stdout, quiet=options["json"]) as progress:
                    result = engine.resume_run(
                        options.get("run"),
                        actor=command_actor("archival resume"),
                        on_table=progress.table_done,
                        on_batch=progress.advance,
                    )
                return self.render_run(result, options)
            if action == "abandon":
                if not options.get("run"):
                    raise CommandError("abandon needs --run N")
                result = engine.abandon_run(
                    options["run"],
                    actor=options["actor"] or command_actor("archival abandon"),
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
                if t.unreadable_dates:
                    shown = "; ".join(", ".join(str(v) for v in key) for key in t.unreadable_examples)
                    more = ", ..." if t.unreadable_dates > len(t.unreadable_examples) else ""
                    self.stdout.write(
                        self.style.WARNING(
                            f"    unreadable dates: {t.unreadable_dates} rows (never eligible), keys {shown}{more}"
                        )
                    )
                for problem in t.problems:
                    self.stdout.write(self.style.ERROR(f"    problem: {problem}"))
        blocked = sum(1 for t in result.tables if t.problems)
        # With --json, stdout holds only the JSON document; the summary goes to stderr.
        out = self.stderr if options["json"] else self.stdout
        out.write(
            f"Plan (cutoff {result.cutoff}): {len(result.tables)} tables, {result.eligible} rows eligible, {blocked} with problems, "
            f"{sum(t.unreadable_dates or 0 for t in result.tables)} rows with unreadable dates; nothing changed."
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
            f"{moved} rows moved, {failed} failed, {blocked} blocked by unfinished runs or restores."
        )
        lost = result.lease_lost
        if lost:
            summary += f" {len(lost)} table(s) taken over by another worker mid-way: this process stopped on them."
        elif moved == 0 and not failed and not blocked and not result.waiting:
            summary += " Nothing new to archive."
        if result.unreadable_dates:
            tables = ", ".join(t.label for t in result.tables if t.unreadable_dates)
            summary += (
                f" {result.unreadable_dates} rows have a date that is not a date and stay in the source ({tables});"
                " `archival plan` lists their keys."
            )
        waiting = result.waiting
        if waiting:
            summary += (
                f" {len(waiting)} table(s) waiting (a database down, a lock held, a replica behind or outside "
                f"their run window): resume them with 'manage.py archival resume --run {result.run_id}'"
                + (
                    " (tables waiting for their run window: within the window, or let the scheduled run take them up)."
                    if any(t.waiting_for.startswith("window:") for t in waiting)
                    else "."
                )
            )
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
        self.render_errors((t.label, t.phase, t.error) for t in tables)

    def render_errors(self, rows):
        """The whole message of each failed table (the table column cuts it): it names what to fix."""
        for label, phase, error in rows:
            if phase == "FAILED" and len(error) > 80:
                self.stdout.write(self.style.ERROR(f"{label}: {error}"))

    def render_status(self, options):
        if options.get("check"):
            check = health_check()
            for message in check.messages:
                self.stdout.write(message)
            self.stdout.write("components: " + ", ".join(f"{name} {state}" for name, state in check.components.items()))
            self.stdout.write(f"{check.label}: {len(check.messages)} finding(s)")
            sys.exit(check.code)
        payload = [report.as_dict() for report in run_status(options.get("run"), runs=options.get("runs") or 1)]
        if options["json"]:
            self.stdout.write(json.dumps(payload, indent=2))
            return
        for run in payload:
            self.stdout.write(
                self.style.MIGRATE_HEADING(
                    f"Run {run['run_id']}: {run['status']} (cutoff {run['cutoff']}, started {run['started_at']})"
                )
            )
            if not run["ledger_read"]:
                self.stdout.write(
                    self.style.WARNING("The batch ledger could not be read: archived counts are the recovery states'.")
                )
            self.stdout.write(f"{'table':<45} {'phase':<10} {'eligible':>9} {'archived':>9} {'batches':>7}  error")
            for t in run["tables"]:
                elig = t["eligible"] if t["eligible"] is not None else "-"
                note = f" (+{t['copied_pending_delete']} copied, delete pending)" if t["copied_pending_delete"] else ""
                if t["unreadable_dates"]:
                    note += f" ({t['unreadable_dates']} unreadable dates left in the source)"
                self.stdout.write(
                    f"{t['table']:<45} {t['phase']:<10} {elig:>9} {t['archived']:>9} {t['batches']:>7}  "
                    f"{t['error'][:80]}{note}"
                )
            self.render_errors((t["table"], t["phase"], t["error"]) for t in run["tables"])
            # How the engine yielded to the sources' workload, and why (archival.engine.pacing).
            for t in run["tables"]:
                if t["pacing"]:
                    self.stdout.write(f"  {t['table']}: {t['pacing']}")
        self.stdout.write(f"{len(payload)} run(s) shown.")
