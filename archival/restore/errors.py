"""What a restore raises: a refusal (bad input or a wrong state; nothing saved) or a conflict."""

from __future__ import annotations

from archival.engine.errors import TableError


class RestoreRefused(Exception):
    """The request, its approval or its execution is refused; the message says what to do. Nothing changed."""


class RestoreConflict(TableError):
    """A selected archive row's key is in the source with other values: the table stops, nothing of the batch moved."""


class RestoreReconcileError(TableError):
    """A restore batch's counts disagree; it was rolled back."""
