"""Give every KEYS hold the canonical key text (archival.rowkeys) of each key it stores.

A command, not a data migration: a key is read by its table's key column
types, which only the live archive catalog (or the source's) knows, and the
source databases need not be reachable where ``migrate`` runs. Run it after
``migrate --database archive`` on every deployment (docs/disposal.md);
``make demo`` does. Idempotent.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from archival.disposal.holds import HoldKeysUnreadable, canonicalize_hold_keys
from governance.actors import command_actor


class Command(BaseCommand):
    help = (
        "Add to each KEYS hold the canonical text disposal matches (booleans true/false, timestamps as isoformat, "
        "decimals at the column's scale, text escaped) of every key it stores in an earlier form, reading each key "
        "by its table's key column types. Audited per hold; changes nothing and exits non-zero if a key of an "
        "unreleased hold cannot be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")

    def handle(self, *args, **options):
        actor = command_actor("canonicalize_hold_keys")
        try:
            result = canonicalize_hold_keys(actor=actor, dry_run=options["dry_run"])
        except HoldKeysUnreadable as exc:
            for problem in exc.problems:
                self.stdout.write(self.style.ERROR(problem))
            raise CommandError(f"{len(exc.problems)} hold key(s) cannot be read; nothing was changed") from None
        for hold_id, pairs in result.added.items():
            for old, new in pairs:
                self.stdout.write(f"hold {hold_id}: {old!r} -> {new!r}")
        for problem in result.released_unread:
            self.stdout.write(self.style.WARNING(f"{problem} (released: left as it is)"))
        if options["verbosity"] < 1:
            return
        verb = "would add" if options["dry_run"] else "added"
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.holds_read} KEYS hold(s) read; {verb} the canonical text of {result.keys_added} key(s) "
                f"to {len(result.added)} hold(s)"
            )
        )
