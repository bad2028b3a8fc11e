"""Statement capture: the whole cycle with the SQL Server backend, checked as T-SQL and against the grants.

No SQL Server can run here. What runs instead (tests/mssql_standin.py):
every alias (control, archive, archive_readonly, the sources) is served by
mssql-django's real ``DatabaseWrapper``, configured exactly as
governance.settings configures it from the deployment's ``mssql://`` URLs
(one login per alias, aliases SourceDB1..3 on databases Sales, Trading,
Prices as in docs/sqlserver.md). So mssql-django's compilers write the ORM's
T-SQL, its cursor wrapper turns ``%s`` into ``?`` (the capture normalises to
``@P1`` before parsing), its ``SET NOCOUNT ON`` goes in front of its
inserts, and its transaction handling runs. Under it, in place of
pyodbc/mssql-python, a stand-in DB-API connection records each batch with
the login and database of its alias and answers it:

* session settings and row counts as SQL Server documents them (after
  ``SET NOCOUNT ON`` DML reports -1 until ``SET NOCOUNT OFF``);
* catalog reads (``sys.*``, ``INFORMATION_SCHEMA``) from the demo schema;
* the ``archival.usp_*`` procedures from a small state model, keyed by the
  Django alias the DBA provisioned with (50201 for a table not provisioned):
  it moves the eligible rows no foreign-key child still references between
  the SQLite test databases and writes the procedure's ledger row, disposes
  expired rows no table-wide hold covers, and answers OUTPUT parameters only
  through the caller's final SELECT;
* DDL by the runtime login: error 262 (no DDL right);
* a construct SQL Server lacks (RETURNING, LIMIT, ...): error 102; a
  ``TOP (@Pn)`` whose parameter does not convert to bigint: error 8114;
* everything else: translated by sqlglot to SQLite and run on the alias's
  SQLite test database, so the cycle sees consistent data.

The cycle: build the demo, provision every archive table but one (the DBA's
``usp_provision_table``), then plan, run (mark, archive, verify), resume,
abandon the run the unprovisioned table left unfinished, place a hold,
plan/approve/execute a disposal, search (list, filtered list, row, CSV
export) as the reader, release the hold, status. Personas: an archival
administrator (the planner), two compliance officers (alice, bob), a reader.

Checks over every recorded batch:

* it is T-SQL SQL Server 2019 runs: sqlfluff's T-SQL dialect parses it and
  it has none of the constructs SQL Server lacks
  (tests/mssql_capture_checks.py);
* the permission contract: the batch's (database, object, verb), derived
  from its sqlfluff parse tree (table references and statement type, EXEC ->
  EXECUTE), plus the object a catalog read names (metadata visibility), is
  covered for its login by the users, role memberships and GRANT/DENY of
  sql/03 and sql/08 (and sql/10's DENYs, where present) (tests/mssql_grants.py);
* holds change only in a transaction that called usp_lock_holds; archive
  rows are deleted only by usp_dispose_batch; a table not provisioned fails
  alone, with an error naming the provisioning call;
* the runtime logins send no DDL (provisioning owns it);
* every step of the cycle completes.

The cycle runs twice: with only the data-plane aliases on the stand-in
(the control database on SQLite), so what the archive, reader and source
logins send is seen even while the control plane fails on SQL Server; and
with every alias on it. Before the cycle, tables no other table references
get a few rows "archived by an earlier run", so disposal has work whatever
this run moves.

A step that fails is recorded and the cycle goes on; a failure early in a
step (the audit chain, say) hides what that step would have sent later, so
fixing one violation can reveal the next. ``MSSQL_CAPTURE_DUMP=<file>``
writes every recorded batch as JSON for review.

Not covered: the SQL inside the procedures (tests/test_mssql_sql.py parses
it), what SQL Server would really return (the stand-in's answers are
plausible, not proven), locking and concurrency. Nothing here ran on SQL
Server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import traceback
from collections import Counter
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connections
from django.urls import reverse

from archival.demo import DemoSize, build_demo
from governance.models import MeasuredOn, ReplicaWatch, TableConfig
from tests.mssql_capture_checks import violations_of
from tests.mssql_grants import SERVER, Need, load_grants, required_permissions
from tests.mssql_standin import DATABASES, SOURCE_DATABASES, Server, install, production_settings, uninstall

TINY = DemoSize(positions=60, contracts=10, trades=30, prices=40, generated_tables=0, generated_rows=0)
UNPROVISIONED = ("SourceDB3", "PriceHistory")


def _odbc_loads() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libodbc.so.2")
    except OSError:
        return False
    return True


# mssql-django imports pyodbc, which needs the system's ODBC library
# (apt-get install -y libodbc2 libltdl7); CI installs it, so CI never skips.
# The stand-in keeps the cycle's rows in the SQLite test databases: under
# make test-pg / test-mariadb there is nothing different to check (the
# statements are SQL Server's either way), so the module runs on SQLite only.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(not os.environ.get("CI") and not _odbc_loads(), reason="no libodbc.so.2 on this machine"),
    pytest.mark.skipif(
        any("sqlite" not in settings.DATABASES[a]["ENGINE"] for a in DATABASES),
        reason="the SQL Server stand-in keeps its data in the SQLite test databases",
    ),
]


def _user(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", "pw-" + name, is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return User.objects.get(pk=user.pk)


def _step(log: list, name: str, action) -> None:
    try:
        action()
    except (Exception, SystemExit) as exc:  # a failing step is reported; the cycle goes on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]} (at {where.filename}:{where.lineno})")


UNPROVISIONED_LABEL = f"{UNPROVISIONED[0]}.dbo.{UNPROVISIONED[1]}"
# What the engine said about the table the DBA has not provisioned, per command.
unprovisioned_errors: list[str] = []


def _command(*args) -> None:
    """``manage.py archival ...``; a non-zero exit becomes an error naming the failed tables.

    The table left unprovisioned must fail alone, with an error naming the
    provisioning call: that is recorded, not counted as a failed step.
    """
    from governance.models import RecoveryState

    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as exc:
        failures = [(state.table_label, state.last_error) for state in RecoveryState.objects.filter(phase="FAILED")]
        others = []
        for label, message in failures:
            if label == UNPROVISIONED_LABEL:
                unprovisioned_errors.append(message)
            else:
                others.append(f"{label}: {message[:400]}")
        if others or not failures:
            lines = others or [line for line in out.getvalue().splitlines() if "FAILED" in line or "rror" in line]
            raise AssertionError(" | ".join(lines)[:2000]) from exc


def _cycle(client, server: Server) -> list[str]:
    """The whole cycle through the stand-in; returns the steps that failed."""
    from archival.disposal import batches as disposal
    from archival.disposal.holds import place_hold, release_hold

    failed: list[str] = []
    planner = _user("planner", "governance.plan_disposal", "governance.view_disposalbatch")
    alice = _user("alice", "governance.approve_disposal", "governance.view_disposalbatch")
    bob = _user("bob", "governance.approve_disposal", "governance.view_disposalbatch")
    reader = _user("reader", "governance.view_archive_search", "governance.export_archive_search")
    cutoff = dt.date.today().isoformat()
    _step(failed, "plan", lambda: _command("archival", "plan", "--cutoff", cutoff))
    _step(failed, "run", lambda: _command("archival", "run", "--cutoff", cutoff))
    _step(failed, "resume", lambda: _command("archival", "resume"))

    def archived_and_verified():
        from governance.models import RecoveryState

        left = {
            state.table_label: state.phase
            for state in RecoveryState.objects.exclude(table_label=UNPROVISIONED_LABEL)
            if state.phase != "COMPLETED"
        }
        assert not left, f"not archived and verified: {left}"
        moved = RecoveryState.objects.exclude(table_label=UNPROVISIONED_LABEL).values_list("archived_count", flat=True)
        assert sum(n or 0 for n in moved), "no row was archived"

    _step(failed, "archive and verify", archived_and_verified)

    def abandon():
        from governance.models import ArchivalRun

        # The run the unprovisioned table left unfinished.
        run = ArchivalRun.objects.order_by("-pk").first()
        _command("archival", "abandon", "--run", str(run.pk), "--reason", "capture")

    _step(failed, "abandon", abandon)
    holds = []
    _step(
        failed,
        "place hold",
        lambda: holds.append(
            place_hold(
                scope="TABLE",
                actor=planner,
                reason="capture",
                source_db="SourceDB1",
                schema_name="dbo",
                table_name="Position",
            )
        ),
    )
    restores: list = []
    restorer = _user("restorer", "governance.request_restore")
    carol = _user("carol", "governance.approve_restore")

    def request_restores():
        from archival.restore.requests import create_request
        from governance.models import ArchivalRun

        run = ArchivalRun.objects.order_by("pk").first()
        trade = TableConfig.objects.get(source_db="SourceDB2", table_name="Trade")
        # The trades of the first run, and the contracts they reference (a
        # parent: REFERENCED through the foreign key, restored first).
        restores.append(
            create_request(trade, "RUN", actor=restorer, reason="capture: recalculation", archive_run_id=run.pk)
        )
        # Two archived positions (a composite key) under the table hold placed
        # above: restoring held rows is allowed and recorded.
        with connections["archive"].cursor() as cur:
            cur.execute(
                "SELECT TOP (2) [basketId], [positionId], [businessDate] FROM [archive_sourcedb1].[Position] "
                "ORDER BY [basketId], [positionId], [businessDate]"
            )
            first, second = cur.fetchall()
        position = TableConfig.objects.get(source_db="SourceDB1", table_name="Position")
        restores.append(
            create_request(
                position, "KEY_RANGE", actor=restorer, reason="capture: regulator", key_low=list(first),
                key_high=list(second),
            )
        )  # fmt: skip

    _step(failed, "restore request", request_restores)

    def approve_restores():
        from archival.restore.requests import approve

        assert restores, "no restore was requested"
        for request in restores:
            approve(request, actor=carol, comment="capture")

    _step(failed, "restore approve", approve_restores)

    def execute_restores():
        from archival.restore.executor import execute

        assert restores, "no restore was requested"
        for request in restores:
            result = execute(request.pk, actor=restorer)
            assert result.ok and result.restored, str(result)
            if request.config.table_name == "Position":
                # Held by the table hold placed above: restored, and recorded as held.
                assert sum(t.held for t in result.tables) == result.restored, str(result)

    _step(failed, "restore execute", execute_restores)
    far = dt.date.today() + dt.timedelta(days=365 * 60)

    def plan_disposal():
        result = disposal.plan_disposal(actor=planner, today=far)
        errors = [f"{t.table_label}: {t.error}" for t in result.tables if t.error]
        assert not errors and result.batch_count, errors or "nothing planned"

    _step(failed, "dispose plan", plan_disposal)

    def approve():
        from governance.models import DisposalBatch

        batches = list(DisposalBatch.objects.all())
        assert batches, "no disposal batch to approve"
        for batch in batches:
            for user in (alice, bob):
                disposal.decide_batch(batch.pk, user=user, decision="APPROVE", comment="capture")

    _step(failed, "dispose approve", approve)

    def execute_disposal():
        result = disposal.execute_disposal(actor=planner, today=far)
        assert result.ok and result.deleted, [
            f"batch {b.batch_id}: {b.error[:300]}" for b in result.errors
        ] or "nothing deleted"

    _step(failed, "dispose execute", execute_disposal)

    def search():
        client.force_login(reader)
        # Position: archived, and kept from disposal by the table hold.
        url = reverse("search:table", args=["SourceDB1", "dbo", "Position"])
        page = client.get(url)
        assert page.status_code == 200, (page.status_code, re.sub(r"<[^>]+>|\s+", " ", page.content.decode())[-400:])
        link = re.search(r'href="([^"]*row/\?[^"]+)"', page.content.decode())
        assert link, "the search page lists no archived row"
        row = client.get(link.group(1).replace("&amp;", "&"))
        assert row.status_code == 200, row.status_code
        # A filtered search (its parameters come before the page size).
        filtered = client.get(url, {"reference_date__from": "2000-01-01"})
        assert filtered.status_code == 200, (filtered.status_code, filtered.content.decode()[-300:])
        assert re.search(r'href="[^"]*row/\?', filtered.content.decode()), "the filtered search found no row"
        export = client.get(reverse("search:export", args=["SourceDB1", "dbo", "Position"]))
        assert export.status_code == 200, export.status_code
        b"".join(export.streaming_content) if export.streaming else export.content

    _step(failed, "search", search)
    _step(failed, "release hold", lambda: [release_hold(h.pk, actor=planner, reason="capture") for h in holds])
    _step(failed, "status", lambda: _command("archival", "status"))
    return failed


@dataclass
class Capture:
    server: Server
    failed: list[str]  # steps of the cycle that failed
    unprovisioned: list[str]  # what the engine said about the table not provisioned


# Two runs of the cycle. "data plane": the control database stays on SQLite,
# only the archive, read-only and source aliases go through the stand-in, so
# what they send is seen even while the control plane cannot run on SQL
# Server. "every alias": the control database goes through it too.
SCENARIOS = {
    "data plane": tuple(a for a in DATABASES if a != "default"),
    "every alias": tuple(DATABASES),
}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def captured(request, django_db_setup, django_db_blocker) -> Capture:
    """One cycle through the stand-in; the databases are emptied afterwards."""
    from django.test import Client

    aliases = SCENARIOS[request.param]
    unprovisioned_errors.clear()
    with django_db_blocker.unblock():
        build_demo(TINY, configs=True)
        # SQL Server's default schema; a batch size the procedures take (<= 4,000).
        TableConfig.objects.filter(schema_name="main").update(schema_name="dbo", batch_size=25)
        # An availability-group secondary of SourceDB1 whose lag the batches
        # watch, read on the primary (docs/pacing.md, docs/sqlserver.md).
        ReplicaWatch.objects.create(
            source_db="SourceDB1", name="SQL02", measured_on=MeasuredOn.PRIMARY, connection_kind="ALIAS"
        )
        configs = {(c.source_db, c.table_name): c for c in TableConfig.objects.all()}
        server = Server(shadows={alias: connections[alias] for alias in aliases}, configs=configs)
        server.provisioned = set(configs) - {UNPROVISIONED}
        _provision_shadow(server)
        replaced = install(server, production_settings(settings.DATA_DIR / "capture-settings"), aliases)
        try:
            failed = _cycle(Client(), server)
        finally:
            uninstall(replaced)
            _drop_demo_tables(configs)
            call_command("flush", interactive=False, database="default", verbosity=0)
            call_command("flush", interactive=False, database="archive", verbosity=0)
    dump = os.environ.get("MSSQL_CAPTURE_DUMP")
    if dump:  # for a reviewer: every batch with its login, database and parameters
        Path(dump).with_suffix(f".{request.param.replace(' ', '-')}.json").write_text(
            json.dumps([{**vars(s), "params": [str(p) for p in s.params]} for s in server.statements], indent=1)
        )
    return Capture(server, failed, list(unprovisioned_errors))


SEEDED_ROWS = 3


def _drop_demo_tables(configs) -> None:
    """Leave no demo or archive table behind for the modules that run next."""
    from tests.engine_fixtures import drop_archive_tables

    drop_archive_tables()
    for alias, table in configs:
        with connections[alias].cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')


def _provision_shadow(server: Server) -> None:
    """What usp_provision_table creates, in the SQLite archive the stand-in moves rows into.

    Tables no other table references also get a few rows archived by an
    earlier run, retention long past: disposal has work whatever this run
    manages to move.
    """
    from tests.mssql_standin import namespace_for

    arc = connections["archive"]
    with arc.cursor() as cur:
        referenced = set()
        for alias in {a for a, _ in server.provisioned}:
            for (child,) in cur.execute(
                f"SELECT name FROM \"src_{alias}\".sqlite_master WHERE type = 'table'"
            ).fetchall():
                rows = cur.execute(f'PRAGMA "src_{alias}".foreign_key_list("{child}")').fetchall()
                referenced |= {(alias, row[2]) for row in rows}
        for alias, table in sorted(server.provisioned):
            ns, src = namespace_for(alias), f'"src_{alias}"."{table}"'
            cur.execute(f'DROP TABLE IF EXISTS "{ns}"."{table}"')
            cur.execute(f'CREATE TABLE "{ns}"."{table}" AS SELECT * FROM {src} WHERE 0')
            for column, typ in (("archived_at", "TEXT"), ("archive_run_id", "INTEGER"), ("reference_date", "DATE"),
                                ("retention_until", "DATE")):  # fmt: skip
                cur.execute(f'ALTER TABLE "{ns}"."{table}" ADD COLUMN "{column}" {typ}')
            if (alias, table) in referenced:
                continue
            cur.execute(
                f"INSERT INTO \"{ns}\".\"{table}\" SELECT *, '2020-01-01 00:00:00', 0, '2019-12-31', '2021-01-01' "
                f"FROM {src} ORDER BY rowid LIMIT {SEEDED_ROWS}"
            )
            cur.execute(
                f"DELETE FROM {src} WHERE rowid IN (SELECT rowid FROM {src} ORDER BY rowid LIMIT {SEEDED_ROWS})"
            )


def test_the_cycle_runs_every_step(captured):
    assert captured.failed == [], "\n".join(captured.failed)
    aliases = Counter(s.alias for s in captured.server.statements)
    assert set(aliases) == set(captured.server.shadows), aliases


def test_a_table_not_provisioned_fails_alone_naming_the_provisioning_call(captured):
    assert captured.unprovisioned, "the unprovisioned table did not fail"
    for message in captured.unprovisioned:
        assert "archival_admin.usp_provision_table" in message and "@table_name = N'PriceHistory'" in message, message


def test_holds_change_only_under_the_hold_lock_disposal_takes(captured):
    # docs/sqlserver.md: placing or releasing a hold calls archival.usp_lock_holds in the
    # same transaction, so it waits for a running disposal batch.
    server = captured.server
    locked = {(s.alias, s.transaction) for s in server.statements if "archival.usp_lock_holds" in s.sql}
    changes = [
        s for s in server.statements if re.search(r"(?i)\b(INSERT\s+INTO|UPDATE)\s+\[governance_hold(key)?\]", s.sql)
    ]
    assert changes, "no hold was placed or released"
    unlocked = [s for s in changes if s.transaction is None or (s.alias, s.transaction) not in locked]
    assert not unlocked, "\n".join(s.sql[:160] for s in unlocked)


def test_disposal_deletes_archive_rows_only_through_usp_dispose_batch(captured):
    server = captured.server
    calls = [s for s in server.statements if "archival.usp_dispose_batch" in s.sql]
    direct = [s for s in server.statements if re.search(r"(?i)\bDELETE\b[^;]*\[archive_", s.sql)]
    assert calls and not direct, [s.sql[:160] for s in direct] or "usp_dispose_batch was never called"


def test_a_restore_moves_rows_only_through_usp_restore_batch_parents_first(captured):
    # docs/sqlserver.md: the runtime login writes no source table and deletes no
    # archive row; usp_restore_batch (signed) does both in one transaction.
    server = captured.server
    calls = [s for s in server.statements if "archival.usp_restore_batch" in s.sql]
    assert calls, "usp_restore_batch was never called"
    assert {s.login for s in calls} == {"archival_app"} and {s.alias for s in calls} == {"archive"}
    sources = "|".join(DATABASES[a] for a in ("SourceDB1", "SourceDB2", "SourceDB3"))
    writes = [
        s
        for s in server.statements
        if re.search(rf"(?i)\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\[({sources})\]", s.sql)
        or (
            s.alias.startswith("SourceDB")
            and re.search(r"(?i)^\s*(SET\s+NOCOUNT\s+\w+;\s*)?(INSERT|UPDATE|DELETE)\b", s.sql)
        )
        or re.search(r"(?i)\bDELETE\b[^;]*\[archive_", s.sql)
        or re.search(r"(?i)\bIDENTITY_INSERT\b", s.sql)
    ]
    assert not writes, [s.sql[:200] for s in writes]
    # The parent (Contract, referenced by the restored trades) comes back first,
    # selected by the trades' own selection nested in a REFERENCED one.
    tables = [dict(zip(re.findall(r"@(\w+)\s*=\s*\?", s.sql), s.params, strict=False)) for s in calls]
    trading = [t for t in tables if t["source_alias"] == "SourceDB2"]
    assert trading[0]["table_name"] == "Contract" and trading[-1]["table_name"] == "Trade"
    parent = json.loads(trading[0]["selection"])
    assert parent["kind"] == "REFERENCED" and parent["child_table"] == "Trade" and parent["child"]["kind"] == "RUN"
    # The restore preview compares with the source through the signed procedure
    # too: the runtime login has no SELECT on a source table.
    assert any("archival.usp_restore_compare" in s.sql for s in server.statements), (
        "the restore preview (archival/restore/requests.py count_table) reads the source tables itself; on SQL "
        "Server (backend.moves_through_procedures()) it must take conflict_count and identical_count from "
        "MSSQLBackend.restore_source_counts (archival.usp_restore_compare)"
    )


def test_every_captured_batch_is_tsql_sql_server_2019_runs(captured):
    server = captured.server
    bad = {}
    for s in server.statements:
        for problem in violations_of(s.tsql):
            bad.setdefault(problem.split(":")[0], {}).setdefault(" ".join(s.tsql.split())[:200], s.alias)
    assert not bad, "\n".join(
        f"{kind} ({len(found)} distinct):\n" + "\n".join(f"  [{alias}] {sql}" for sql, alias in list(found.items())[:4])
        for kind, found in bad.items()
    )


def test_the_runtime_logins_send_no_ddl(captured):
    server = captured.server
    ddl = [
        s for s in server.statements if re.match(r"(?is)\s*(?:SET\s+NOCOUNT\s+\w+;?\s*)?(CREATE|ALTER|DROP)\b", s.sql)
    ]
    assert not ddl, "\n".join(f"[{s.alias} as {s.login}] {s.sql[:200]}" for s in ddl)


def test_the_replica_lag_is_read_from_the_availability_group_on_the_source_with_view_server_state(captured):
    reads = [s for s in captured.server.statements if "dm_hadr_database_replica_states" in s.sql]
    assert reads, "no batch read the watched replica's lag"
    assert {(s.alias, s.database) for s in reads} == {("SourceDB1", SOURCE_DATABASES["SourceDB1"])}
    assert all(s.params == ("SQL02",) for s in reads)
    needs = required_permissions(reads[0].tsql, database=reads[0].database, params=reads[0].params)
    assert Need("master", SERVER, "VIEW SERVER STATE") in needs
    assert load_grants().allows(reads[0].login, Need("master", SERVER, "VIEW SERVER STATE"))


def test_every_captured_statement_is_covered_by_a_grant(captured):
    server = captured.server
    grants = load_grants()
    missing = Counter()
    for s in server.statements:
        for need in required_permissions(s.tsql, database=s.database, params=s.params):
            if not grants.allows(s.login, need):
                # Without a user in the database (916) nothing else there matters.
                label = "no user (916)" if need.verb == "CONNECT" else f"{need.verb} on {need.obj}"
                missing[f"{s.login} in {need.database}: {label} ({s.alias})"] += 1
                if need.verb == "CONNECT":
                    break
    assert not missing, "\n".join(f"{k} x{n}" for k, n in sorted(missing.items()))


# -- the stand-in and the grant reader themselves ------------------------------------
class _Shadow:
    """An in-memory SQLite database in place of an alias's test database."""

    def __init__(self):
        import sqlite3

        self.connection = sqlite3.connect(":memory:")
        self.connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        self.connection.executemany("INSERT INTO t (id, v) VALUES (?, 0)", [(1,), (2,), (3,)])

    def ensure_connection(self):
        pass


def test_the_stand_in_hides_dml_counts_after_set_nocount_on_until_off():
    # https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql: the setting
    # stays for the session; through ODBC the DML's rowcount is then -1.
    cursor = Server(shadows={"archive": _Shadow()}).connect("archive").cursor()
    cursor.execute("UPDATE [t] SET [v] = ? WHERE [id] > ?", (1, 1))
    assert cursor.rowcount == 2
    cursor.execute("SET NOCOUNT ON; UPDATE [t] SET [v] = ? WHERE [id] > ?", (2, 0))
    assert cursor.rowcount == -1
    cursor.execute("UPDATE [t] SET [v] = ? WHERE [id] = ?", (3, 1))
    assert cursor.rowcount == -1
    cursor.execute("SET NOCOUNT OFF; UPDATE [t] SET [v] = ? WHERE [id] = ?", (4, 1))
    assert cursor.rowcount == 1


def test_the_stand_in_refuses_what_sql_server_lacks_with_error_102():
    import pyodbc

    server = Server(shadows={"archive": _Shadow()})
    cursor = server.connect("archive").cursor()
    with pytest.raises(pyodbc.ProgrammingError, match=r"\(102\)"):
        cursor.execute("DELETE FROM [t] WHERE [id] = ? RETURNING [id]", (1,))
    assert server.statements[-1].error.startswith("102")
    assert cursor.execute("SELECT [v] FROM [t] WHERE [id] = ?", (1,)).fetchall() == [(0,)]


def test_the_grant_reader_follows_roles_schemas_and_denies_of_sql_03_and_08():
    from tests.mssql_grants import Need
    from tests.mssql_standin import APP_LOGIN, ARCHIVE_DB, CONTROL_DB, READER_LOGIN

    grants = load_grants()
    assert grants.allows(APP_LOGIN, Need(ARCHIVE_DB, "archival.usp_archive_batch", "EXECUTE"))
    assert grants.allows(APP_LOGIN, Need(CONTROL_DB, "dbo.governance_tableconfig", "UPDATE"))
    assert grants.allows(READER_LOGIN, Need(ARCHIVE_DB, "archive_sourcedb1.Position", "SELECT"))
    assert not grants.allows(READER_LOGIN, Need(ARCHIVE_DB, "archive_sourcedb1.Position", "DELETE"))
    assert not grants.allows(READER_LOGIN, Need(CONTROL_DB, "", "CONNECT"))
    assert not grants.allows(APP_LOGIN, Need(ARCHIVE_DB, "dbo.governance_hold", "DELETE"))
    assert not grants.allows(APP_LOGIN, Need(ARCHIVE_DB, "archive_sourcedb1.Position", "CREATE TABLE"))


def test_a_statement_needs_what_its_parse_tree_names():
    from tests.mssql_grants import Need

    needs = required_permissions(
        "SET NOCOUNT OFF; UPDATE [governance_hold] SET [released_at] = @P1 WHERE [governance_hold].[id] = @P2",
        database="A",
    )
    assert Need("A", "dbo.governance_hold", "UPDATE") in needs
    needs = required_permissions(
        "DELETE FROM [archive_x].[T] WHERE NOT EXISTS (SELECT 1 FROM [dbo].[governance_hold] h WHERE h.[id] = @P1)",
        database="A",
    )
    assert {Need("A", "archive_x.T", "DELETE"), Need("A", "dbo.governance_hold", "SELECT")} <= set(needs)
    needs = required_permissions("SELECT 1 FROM [Sales].[dbo].[Position] AS s", database="A")
    assert Need("Sales", "dbo.Position", "SELECT") in needs
    needs = required_permissions("DECLARE @o1 int; EXEC archival.usp_lock_holds; SELECT @o1;", database="A")
    assert Need("A", "archival.usp_lock_holds", "EXECUTE") in needs


def test_the_reader_reads_the_archive_schemas_and_nothing_named_like_them():
    # LIKE's _ matches any one character: N'archive_%' would also grant a schema
    # named archiveX... (https://learn.microsoft.com/sql/t-sql/language-elements/like-transact-sql).
    from tests.mssql_grants import Need
    from tests.mssql_standin import ARCHIVE_DB, READER_LOGIN

    grants = load_grants()
    assert grants.allows(READER_LOGIN, Need(ARCHIVE_DB, "archive_sourcedb2.Trade", "SELECT"))
    assert not grants.allows(READER_LOGIN, Need(ARCHIVE_DB, "archiveXpayroll.Salary", "SELECT"))


def test_the_app_login_runs_a_restore_only_through_the_signed_procedure():
    """sql/03 and sql/08: EXECUTE on usp_restore_batch (schema archival); no write of its own in a source,
    no DELETE in the archive, no ALTER anywhere (the IDENTITY_INSERT right is the certificate user's)."""
    from tests.mssql_grants import Need
    from tests.mssql_standin import APP_LOGIN, ARCHIVE_DB, READER_LOGIN, SOURCE_DATABASES

    grants = load_grants()
    assert grants.allows(APP_LOGIN, Need(ARCHIVE_DB, "archival.usp_restore_batch", "EXECUTE"))
    assert not grants.allows(READER_LOGIN, Need(ARCHIVE_DB, "archival.usp_restore_batch", "EXECUTE"))
    for database in SOURCE_DATABASES.values():
        for verb in ("INSERT", "DELETE", "UPDATE", "ALTER", "SELECT"):
            assert not grants.allows(APP_LOGIN, Need(database, "dbo.Position", verb)), (database, verb)
    for obj in ("archive_sourcedb1.Position", "dbo.governance_restoreledger", "dbo.governance_restorekey"):
        assert not grants.allows(APP_LOGIN, Need(ARCHIVE_DB, obj, "DELETE")), obj
        assert not grants.allows(APP_LOGIN, Need(ARCHIVE_DB, obj, "ALTER")), obj
    assert not grants.allows(APP_LOGIN, Need(ARCHIVE_DB, "archive_sourcedb1.Position", "INSERT"))
    # The certificate user (a user without login) holds what the signed body
    # needs in the archive database: read the keys, write the ledger row.
    signer = {(verb, obj) for db, who, verb, obj in grants.granted if who == "archival_signer"}
    assert {
        ("SELECT", "OBJECT::dbo.governance_restorekey"),
        ("SELECT", "OBJECT::dbo.governance_restoreledger"),
        ("INSERT", "OBJECT::dbo.governance_restoreledger"),
    } <= signer
    assert not {verb for verb, obj in signer if obj == "OBJECT::dbo.governance_restorekey"} - {"SELECT"}
