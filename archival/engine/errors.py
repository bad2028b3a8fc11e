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
