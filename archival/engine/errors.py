"""Errors that stop one table (the others go on)."""

from __future__ import annotations


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
