"""Rewrite every stored KEYS hold key into the canonical key text (archival.rowkeys).

A command, not a data migration: a key is read by its table's key column
types, which only the live archive catalog (or the source's) knows, and the
source databases need not be reachable where ``migrate`` runs. Run it after
``migrate --database archive`` on every deployment (docs/disposal.md);
``make demo`` does. Idempotent.
"""

from __future__ import annotations

import getpass
import socket

from django.core.management.base import BaseCommand, CommandError

from archival.disposal.holds import HoldKeysUnreadable, canonicalize_hold_keys


class Command(BaseCommand):
    help = (
        "Rewrite the key texts of KEYS holds into the canonical form disposal matches (booleans true/false, "
        "timestamps as isoformat, decimals at the column's scale, text escaped), reading each key by its table's "
        "key column types. Audited per hold; changes nothing and exits non-zero if a key cannot be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")

    def handle(self, *args, **options):
        actor = f"{getpass.getuser()}@{socket.gethostname()} (canonicalize_hold_keys command)"
        try:
            result = canonicalize_hold_keys(actor=actor, dry_run=options["dry_run"])
        except HoldKeysUnreadable as exc:
            for problem in exc.problems:
                self.stdout.write(self.style.ERROR(problem))
            raise CommandError(f"{len(exc.problems)} hold key(s) cannot be read; nothing was changed") from None
        for hold_id, pairs in result.rewritten.items():
            for old, new in pairs:
                self.stdout.write(f"hold {hold_id}: {old!r} -> {new!r}")
        for hold_id, texts in result.duplicates.items():
            for old in texts:
                self.stdout.write(
                    self.style.WARNING(f"hold {hold_id}: {old!r} left as it is (its canonical text is held)")
                )
        for problem in result.released_unread:
            self.stdout.write(self.style.WARNING(f"{problem} (released: left as it is)"))
        verb = "would rewrite" if options["dry_run"] else "rewrote"
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.holds_read} KEYS hold(s) read; {verb} {result.keys_rewritten} key(s) "
                f"of {len(result.rewritten)} hold(s)"
            )
        )
