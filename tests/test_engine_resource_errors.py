"""A run that cannot write its archive says which file and what to do, loses nothing, and resumes.

SQLite only: the errors are SQLite's result codes, reproduced for real, as
root (tests run as root, where a 0444 file is still writable):

- read-only file: ``chattr +i`` on the archive namespace file. Opening it
  read-write then fails (EPERM), SQLite falls back to read-only, exactly as
  for a 0444 file of another user, and every write is SQLITE_READONLY
  "attempt to write a readonly database". ``os.access`` reports it, as it
  reports a 0444 file to a non-root user.
- full disk: ``PRAGMA max_page_count`` caps the namespace file, and the next
  page it needs fails with SQLITE_FULL "database or disk is full", the code
  SQLite gives when write() returns ENOSPC on a full disk (checked on a
  256 KiB tmpfs: same code, same message).
- disk I/O error: an immutable, empty rollback journal beside the file. The
  journal's writes fail (EPERM) and SQLite answers SQLITE_IOERR_WRITE "disk
  I/O error", as for any failed write() other than ENOSPC.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections

from archival import engine
from archival.backends.sqlite import namespace_file
from governance.models import Phase, RecoveryState, TableConfig
from tests.engine_fixtures import snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)
SOURCE = "SourceDB2"  # Trade's source


@pytest.fixture
def sqlite_archive():
    if connections["archive"].vendor != "sqlite":
        pytest.skip("SQLite result codes")
    archive_name = connections["archive"].settings_dict["NAME"]
    connections["archive"].ensure_connection()  # attaches (creates) the namespace files
    return str(archive_name), namespace_file(archive_name, SOURCE)


def close_all() -> None:
    for alias in connections:
        connections[alias].close()


def immutable(path, on: bool) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr refused ({done.stderr.strip()}): not root, or the filesystem has no immutable flag")


def failed_state(run_id: int) -> RecoveryState:
    state = RecoveryState.objects.get(run_id=run_id)
    assert state.phase == Phase.FAILED, (state.phase, state.last_error)
    return state


def resume_loses_nothing(run_id: int, original) -> None:
    close_all()
    assert engine.resume_run(run_id).ok
    union_check(list(TableConfig.objects.filter(table_name="Trade")), original)


def test_a_read_only_archive_file_is_named_with_what_to_do(demo, sqlite_archive):
    archive_main, namespace = sqlite_archive
    original = snapshot(TableConfig.objects.filter(table_name="Trade"))
    close_all()
    immutable(namespace, True)
    try:
        result = engine.run_cycle(cutoff=CUTOFF, tables=["Trade"])
        error = failed_state(result.run_id).last_error
        out = StringIO()
        call_command("archival", "status", stdout=out, stderr=StringIO())
    finally:
        close_all()
        immutable(namespace, False)
    assert str(namespace) in error and "cannot be written" in error and "resume" in error, error
    assert "attempt to write a readonly database" in error
    assert archive_main not in error  # the writable archive file is not blamed
    assert str(namespace) in out.getvalue()  # status shows the whole message
    union_check(list(TableConfig.objects.filter(table_name="Trade")), original)
    resume_loses_nothing(result.run_id, original)


def test_a_full_archive_file_is_named_with_what_to_do(demo, sqlite_archive):
    archive_main, namespace = sqlite_archive
    original = snapshot(TableConfig.objects.filter(table_name="Trade"))
    close_all()
    connection = connections["archive"]
    connection.ensure_connection()
    with connection.cursor() as cur:
        # Earlier tests' dropped tables left free pages to reuse: none after VACUUM.
        cur.execute('VACUUM "archive_sourcedb2"')
        cur.execute('PRAGMA "archive_sourcedb2".page_count')
        pages = cur.fetchone()[0]
        cur.execute(f'PRAGMA "archive_sourcedb2".max_page_count = {pages + 8}')
    # The same connection runs the table (SQLite runs tables on the calling thread).
    result = engine.run_cycle(cutoff=CUTOFF, tables=["Trade"])
    error = failed_state(result.run_id).last_error
    assert str(namespace) in error and "disk is full or it reached its size limit" in error, error
    assert "database or disk is full" in error and "resume" in error
    assert archive_main not in error
    union_check(list(TableConfig.objects.filter(table_name="Trade")), original)
    resume_loses_nothing(result.run_id, original)  # a new connection: no limit


def test_a_disk_io_error_names_the_file_whose_journal_failed(demo, sqlite_archive):
    archive_main, namespace = sqlite_archive
    original = snapshot(TableConfig.objects.filter(table_name="Trade"))
    close_all()
    journal = namespace.with_name(namespace.name + "-journal")
    journal.write_bytes(b"")
    immutable(journal, True)
    try:
        result = engine.run_cycle(cutoff=CUTOFF, tables=["Trade"])
        error = failed_state(result.run_id).last_error
    finally:
        close_all()
        immutable(journal, False)
        journal.unlink()
    assert str(namespace) in error and "disk I/O error" in error and "journal" in error, error
    assert archive_main not in error
    union_check(list(TableConfig.objects.filter(table_name="Trade")), original)
    resume_loses_nothing(result.run_id, original)


def test_a_disposal_on_a_read_only_archive_file_names_it_and_destroys_nothing(sqlite_archive, django_user_model):
    import datetime as dt

    from archival.disposal import execute_disposal, plan_disposal
    from tests.disposal_fixtures import SOURCE as DISPOSAL_SOURCE
    from tests.disposal_fixtures import TODAY, archived_keys, create_tables, insert_rows, make_config, persona

    archive_main, _ = sqlite_archive
    namespace = namespace_file(archive_main, DISPOSAL_SOURCE)
    planner = persona("planner", "governance.plan_disposal", "governance.view_disposalbatch")
    create_tables()
    insert_rows([(1, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), "C1", TODAY) for i in range(6)])
    make_config("OPERATIONAL")  # approved by policy: no reviewer needed
    assert plan_disposal(actor=planner, today=TODAY + dt.timedelta(days=1)).batch_count == 1
    before = archived_keys()
    close_all()
    immutable(namespace, True)
    try:
        result = execute_disposal(actor=planner, today=TODAY + dt.timedelta(days=1))
    finally:
        close_all()
        immutable(namespace, False)
    (batch,) = result.batches
    assert str(namespace) in batch.error and "cannot be written" in batch.error, batch.error
    assert archive_main not in batch.error
    assert archived_keys() == before  # nothing destroyed
    retried = execute_disposal(actor=planner, today=TODAY + dt.timedelta(days=1))
    assert retried.deleted == 6 and not archived_keys()
