"""Errors that stop one table (the others go on), and database errors told in plain words."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.db import connections

from archival.backends.sqlite import SQLITE_ENGINES, namespace_file


class TableError(Exception):
    """Stops this table with a clear message; nothing of the failing batch commits."""


class ArchiveConflict(TableError):
    """A row archived by an earlier run has the same key but different values."""


class ReconcileError(TableError):
    """A batch's counts do not agree; it was rolled back."""


class LeaseLost(Exception):
    """Another worker owns this table now; stop without committing more."""


class TableWaiting(Exception):
    """This table cannot go on now, through no fault of its own: it waits (``Phase.WAITING``).

    ``waiting_for`` says for what: ``database:<alias>`` (the server does not
    answer) or ``lock:<table>`` (another session kept the locks). Not a
    failure: no alert per table, and the table is taken up again later.
    """

    def __init__(self, waiting_for: str, message: str, *, unsaved_progress: dict | None = None):
        super().__init__(message)
        self.waiting_for = waiting_for
        self.unsaved_progress = unsaved_progress or {}


# -- database errors in plain words ---------------------------------------------
# SQLite primary result codes (the low byte of an extended code):
# https://www.sqlite.org/rescode.html
SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 13, 14


def _sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of ``exc`` or of the driver error Django wrapped."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        code = getattr(link, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF
        link = link.__cause__ or link.__context__
    return None


def _sqlite_files(aliases: list[str]) -> list[tuple[str, Path]]:
    """(what, file) for every SQLite file the aliases' connections write: databases and archive namespaces."""
    files: list[tuple[str, Path]] = []
    for alias in aliases:
        sd = connections[alias].settings_dict
        if sd["ENGINE"] not in SQLITE_ENGINES:
            continue
        name = str(sd["NAME"])
        if name.startswith(":memory:") or "mode=memory" in name:
            continue
        files.append((f"the {alias} database", Path(name.removeprefix("file:").split("?")[0])))
        if alias == "archive":
            for source in aliases:
                if source in settings.SOURCE_DATABASES:
                    files.append((f"{source}'s archive namespace", namespace_file(name, source)))
    return list(dict.fromkeys(files))


def _cannot_write(path: Path) -> bool:
    """Whether this process cannot write ``path`` or its journal (permissions, immutable flag, read-only mount)."""
    folder = path.parent
    try:
        read_only_mount = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_mount = False
    if read_only_mount or not os.access(folder, os.W_OK):
        return True
    # The file itself, or the journal SQLite writes beside it (rollback journal or WAL).
    companions = (path, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal"))
    return any(p.exists() and not os.access(p, os.W_OK) for p in companions)


def _full(path: Path, aliases: list[str]) -> bool:
    """Whether the disk of ``path`` is (nearly) full, or SQLite's size limit for it is reached."""
    try:
        if shutil.disk_usage(path.parent).free < FULL_DISK_BYTES:
            return True
    except OSError:
        pass
    # A size limit (PRAGMA max_page_count) belongs to a connection: ask each
    # open connection that has the file (the archive's attaches the others).
    for alias in aliases:
        raw = connections[alias].connection
        if raw is None:
            continue
        try:
            cur = raw.cursor()
            for _, schema, file in cur.execute("PRAGMA database_list").fetchall():
                if file and Path(file).resolve() == path.resolve():
                    quoted = '"' + schema.replace('"', '""') + '"'
                    pages = cur.execute(f"PRAGMA {quoted}.page_count").fetchone()[0]
                    limit = cur.execute(f"PRAGMA {quoted}.max_page_count").fetchone()[0]
                    page_size = cur.execute(f"PRAGMA {quoted}.page_size").fetchone()[0]
                    # The failed transaction rolled back: the file is as big as
                    # before it, and too close to its limit for another batch.
                    if (limit - pages) * page_size < FULL_DISK_BYTES:
                        return True
        except Exception:  # noqa: BLE001, S112 - a broken connection only means "cannot tell"
            continue
    return False


# Below this much free space a write of one batch may fail for want of room.
FULL_DISK_BYTES = 16 * 1024 * 1024


def describe_database_error(exc: BaseException, aliases: list[str]) -> str | None:
    """A sentence naming the file and what to do, for a database error that is about a resource.

    Recognises SQLite's "attempt to write a readonly database", "database or
    disk is full", "disk I/O error" and "unable to open database file", and
    names the database file of ``aliases`` (and, for the archive, the
    namespace file of each source alias listed) that is at fault: the one
    this process cannot write, or whose disk is full. When no single file
    can be told, it names every candidate. None for any other error.
    """
    code = _sqlite_code(exc)
    if code not in {SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN}:
        return None
    files = _sqlite_files(aliases)
    if not files:
        return None
    driver = str(exc).strip() or "database error"
    if code == SQLITE_READONLY:
        culprits = [(what, path) for what, path in files if _cannot_write(path)] or files
        return (
            f"{_names(culprits)} cannot be written (SQLite: {driver}). Give the user running the archival "
            "write access to the file and to its folder (SQLite writes a journal beside it), and check the "
            "disk is not mounted read-only; then resume the run (archival resume). Nothing of the failed "
            "batch was committed."
        )
    if code == SQLITE_FULL:
        culprits = [(what, path) for what, path in files if _full(path, aliases)] or files
        return (
            f"{_names(culprits)} cannot grow: its disk is full or it reached its size limit (SQLite: {driver}). "
            f"{_free(culprits)}Free space on that disk, or move the file to a larger one, then resume the run "
            "(archival resume). Nothing of the failed batch was committed."
        )
    if code == SQLITE_CANTOPEN:
        return (
            f"{_names(files)} could not be opened (SQLite: {driver}). Check that the file and its folder exist "
            "and that the user running the archival may read and write them, then resume the run (archival resume)."
        )
    culprits = [(what, path) for what, path in files if _cannot_write(path) or _full(path, aliases)] or files
    return (
        f"Reading or writing {_names(culprits)} (or its journal beside it) failed at the disk (SQLite: {driver}). "
        f"The disk may be full, read-only, removed or failing: {_free(culprits)}check the file's and its "
        "journal's permissions and the system log for I/O errors, then resume the run (archival resume). "
        "Nothing of the failed batch was committed."
    )


def _names(files: list[tuple[str, Path]]) -> str:
    named = [f"{path} ({what})" for what, path in files]
    if len(named) == 1:
        return f"The database file {named[0]}"
    return "One of the database files " + ", ".join(named)


def _free(files: list[tuple[str, Path]]) -> str:
    parts = []
    for folder in dict.fromkeys(path.parent for _, path in files):
        try:
            parts.append(f"{shutil.disk_usage(folder).free // (1024 * 1024):,} MB free in {folder}")
        except OSError:
            continue
    return ("Now " + "; ".join(parts) + ". ") if parts else ""
