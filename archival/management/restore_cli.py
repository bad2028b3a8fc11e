"""``manage.py archival restore ...``: request, preview, approve, reject, execute and inspect restores.

    archival restore request --table SourceDB1.dbo.Position --rows key-range --from 10 --to 200 --reason "..." --as USER
                             (--rows contract --contract X | --rows keys --keys-file F |
                              --rows dates --from YYYY-MM-DD --to YYYY-MM-DD | --rows run --run N)
    archival restore preview N
    archival restore approve N --as USER --comment "..."
    archival restore reject  N --as USER --comment "..."
    archival restore execute N [--as USER]
    archival restore status  [N]

A key of several columns is written with its components separated by commas
on the command line (``--from 3,17,2021-04-30``), by TABs in a keys file (one
key per line). Each action calls one engine function (archival.restore) and
prints the result; a refusal is a CommandError (exit 1) that says what to do.
``execute`` exits 0 only when the request COMPLETED.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone

from archival.engine.errors import TableError
from archival.engine.leases import owner_is_dead
from archival.engine.table_names import GRAMMAR, select_configs
from archival.restore.errors import RestoreRefused
from archival.restore.executor import execute
from archival.restore.requests import approve, create_request, preview, reject
from governance.actors import command_actor
from governance.models import RestoreRequest, RestoreTable

ROWS = {
    "key-range": "KEY_RANGE",
    "contract": "CONTRACT",
    "keys": "KEYS",
    "dates": "DATE_RANGE",
    "run": "RUN",
}


def add_restore_parser(sub) -> None:
    restore = sub.add_parser("restore", help="Bring archived rows back to their source (requested, approved, audited).")
    actions = restore.add_subparsers(dest="restore_action", required=True)
    p = actions.add_parser("request", help="Ask for a restore; prints its preview. Nothing moves until approved.")
    p.add_argument("--table", required=True, help=f"The table: {GRAMMAR}.")
    p.add_argument("--rows", required=True, choices=sorted(ROWS), help="Which rows come back.")
    p.add_argument("--from", dest="range_from", help="key-range: first key; dates: first reference date.")
    p.add_argument("--to", dest="range_to", help="key-range: last key; dates: last reference date (inclusive).")
    p.add_argument("--contract", help="contract: the contract id.")
    p.add_argument("--keys-file", help="keys: a file with one key per line, components TAB-separated.")
    p.add_argument("--run", type=int, help="run: the archival run whose rows come back.")
    p.add_argument("--reason", required=True, help="Why (kept with the request, the certificate and the audit trail).")
    p.add_argument("--as", dest="as_user", required=True, help="Username of the requester (needs request_restore).")
    p = actions.add_parser("preview", help="Recount what the request would do now; changes nothing else.")
    p.add_argument("request_id", type=int)
    for name, text in (("approve", "Approve a waiting request."), ("reject", "Reject a waiting request.")):
        p = actions.add_parser(name, help=text)
        p.add_argument("request_id", type=int)
        p.add_argument("--as", dest="as_user", required=True, help="Username of the approver (approve_restore).")
        p.add_argument("--comment", required=True, help="The decision's comment (audited).")
    p = actions.add_parser("execute", help="Execute (or resume) an approved request in this process.")
    p.add_argument("request_id", type=int)
    p.add_argument("--as", dest="as_user", help="Username executing it (needs request_restore); default: this process.")
    p = actions.add_parser("status", help="Show the latest requests, or one request with its tables.")
    p.add_argument("request_id", type=int, nargs="?")


def _user(username: str | None):
    if not username:
        return None
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"--as {username!r}: no active user of that name")
    return user


def _key(text: str | None, what: str) -> list[str]:
    if text is None or not text.strip():
        raise CommandError(f"{what} is required for --rows key-range")
    return [part.strip() for part in text.split(",")]


class RestoreCommands:
    """The ``restore`` action of the archival command (an adapter: parse, call, print)."""

    def __init__(self, command):
        self.command = command
        self.stdout = command.stdout
        self.style = command.style

    def handle(self, options) -> None:
        action = options["restore_action"]
        try:
            getattr(self, action.replace("-", "_"))(options)
        except (RestoreRefused, TableError) as exc:
            raise CommandError(str(exc)) from None

    # -- actions -----------------------------------------------------------------
    def request(self, options) -> None:
        user = _user(options["as_user"])
        configs = select_configs([options["table"]])
        if len(configs) != 1:
            raise CommandError(
                f"--table {options['table']!r} names {len(configs)} tables; name one (Source.schema.Name)"
            )
        kind = ROWS[options["rows"]]
        values: dict = {}
        if kind == "KEY_RANGE":
            values = {"key_low": _key(options["range_from"], "--from"), "key_high": _key(options["range_to"], "--to")}
        elif kind == "CONTRACT":
            values = {"contract_value": options["contract"] or ""}
        elif kind == "KEYS":
            if not options["keys_file"]:
                raise CommandError("--rows keys needs --keys-file")
            path = Path(options["keys_file"])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"{path}: cannot read it ({exc})") from None
            values = {"keys": [line.split("\t") for line in lines if line.strip()]}
        elif kind == "DATE_RANGE":
            values = {"date_from": options["range_from"], "date_to": options["range_to"]}
        elif kind == "RUN":
            values = {"archive_run_id": options["run"]}
        request = create_request(configs[0], kind, actor=user, reason=options["reason"], **values)
        self.stdout.write(str(preview(request)))
        self.stdout.write(
            self.style.SUCCESS(f"Restore {request.pk} requested; it waits for approval by a compliance officer.")
        )

    def preview(self, options) -> None:
        self.stdout.write(str(preview(self._request(options["request_id"]))))

    def approve(self, options) -> None:
        request = approve(
            self._request(options["request_id"]), actor=_user(options["as_user"]), comment=options["comment"]
        )
        self.stdout.write(self.style.SUCCESS(f"Restore {request.pk} approved by {request.decided_by}."))

    def reject(self, options) -> None:
        request = reject(
            self._request(options["request_id"]), actor=_user(options["as_user"]), comment=options["comment"]
        )
        self.stdout.write(self.style.SUCCESS(f"Restore {request.pk} rejected by {request.decided_by}."))

    def execute(self, options) -> None:
        actor = _user(options.get("as_user")) or command_actor("archival restore execute")
        result = execute(options["request_id"], actor=actor)
        for t in result.tables:
            line = (
                f"  {t.position}. {t.label}: {t.phase or '-'}, {t.restored} restored, {t.skipped_identical} identical"
            )
            line += f", {t.held} held, certificate {t.certificate_id or '-'}"
            self.stdout.write(line + (f"\n     error: {t.error}" if t.error else ""))
        if result.ok:
            self.stdout.write(self.style.SUCCESS(str(result)))
            return
        self.command.stderr.write(self.style.ERROR(str(result)))
        sys.exit(1)

    def status(self, options) -> None:
        if options.get("request_id") is None:
            requests = list(RestoreRequest.objects.order_by("-pk")[:20])
            for r in requests:
                self.stdout.write(
                    f"{r.pk:>6} {r.status:<16} {r.table_label:<45} {r.get_selection_display():<28} "
                    f"by {r.requested_by}{f'  error: {r.last_error[:80]}' if r.last_error else ''}"
                )
            self.stdout.write(f"{len(requests)} request(s) shown.")
            return
        r = self._request(options["request_id"])
        self.stdout.write(
            f"Restore {r.pk}: {r.status} - {r.table_label}, {r.get_selection_display()}; requested by "
            f"{r.requested_by}, decided by {r.decided_by or '-'}, executed by {r.executed_by or '-'}"
        )
        for t in RestoreTable.objects.filter(request=r).order_by("position"):
            self.stdout.write(
                f"  {t.position}. {t.table_label:<45} {t.phase:<10} planned {t.planned_count:>8} restored "
                f"{t.restored_count:>8} identical {t.skipped_identical:>6} batches {t.batches_done:>5}"
                f"{f'  error: {t.last_error}' if t.last_error else ''}"
            )
        if r.status == "EXECUTING":
            self.stdout.write(self._executor_line(r))
        if r.last_error:
            self.stdout.write(self.style.ERROR(f"last error: {r.last_error}"))

    def _executor_line(self, r) -> str:
        """Who is executing, and whether that process still is (a killed one holds its tables until executed again)."""
        if not r.lease_owner or (r.lease_expires_at and r.lease_expires_at < timezone.now()):
            return self.style.WARNING(
                f"no process holds this restore (lease of {r.lease_owner or 'nobody'} expired): its tables wait; "
                f"run `archival restore execute {r.pk}` to finish it"
            )
        if owner_is_dead(r.lease_owner):
            return self.style.WARNING(
                f"executed by {r.lease_owner}, a process that is gone: its tables wait; "
                f"run `archival restore execute {r.pk}` to finish it (it takes the lease over at once)"
            )
        return f"executing in {r.lease_owner} (lease until {r.lease_expires_at:%Y-%m-%d %H:%M:%S %Z})"

    def _request(self, request_id: int):
        request = RestoreRequest.objects.select_related("config").filter(pk=request_id).first()
        if request is None:
            raise CommandError(f"there is no restore request {request_id}")
        return request
