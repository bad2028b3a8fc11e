"""Verify the audit and certificate hash chains; anchor their heads in the daily log."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from archival.restore.certificates import verify_restore_certificates
from governance.chain_verification import verify_chains


class Command(BaseCommand):
    help = (
        "Recompute the hash chains over the audit trail, the disposal certificates and the restore certificates. Run daily (the schedule "
        "does) and before an audit: it appends the head hashes to archival_YYYYMMDD.log for anchoring outside "
        "the database, and exits non-zero naming the first broken entry."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--no-log", action="store_true", help="Do not append the head hashes to the daily log.")

    def handle(self, *args, **options):
        report = verify_chains(write_log=not options["no_log"])
        # The restore certificates' own chain, digests and audit anchors (docs/restore.md).
        restore_problems = verify_restore_certificates()
        if options["json"]:
            self.stdout.write(json.dumps(report.__dict__, indent=2))
        else:
            for warning in report.warnings:
                self.stdout.write(self.style.WARNING(f"warning: {warning}"))
            for error in report.errors + restore_problems:
                self.stdout.write(self.style.ERROR(error))
        if not report.ok:
            raise CommandError(f"chain broken at {report.first_broken} ({len(report.errors)} problem(s))")
        if restore_problems:
            raise CommandError(f"restore certificates: {restore_problems[0]} ({len(restore_problems)} problem(s))")
        self.stdout.write(
            self.style.SUCCESS(
                f"chain OK: {report.audit_events} audit events (head {report.audit_head[:16] or '-'}), "
                f"{report.certificates} certificates (head {report.certificate_head[:16] or '-'})"
                + (f"; head written to {report.log_path}" if report.log_path else "")
            )
        )
