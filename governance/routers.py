"""Send archive-resident models to the archive database.

Holds, the batch ledger and disposal certificates live in the archive so that
a move or a disposal, its hold check and its ledger row commit in one
transaction (DESIGN.md, "Databases"). Everything else is the control database.
Source databases and the read-only alias never receive migrations.
"""

from __future__ import annotations

ARCHIVE_ALIAS = "archive"
READONLY_ALIAS = "archive_readonly"
CONTROL_ALIAS = "default"

# Lower-case model names, as Django passes them to allow_migrate.
ARCHIVE_MODELS = frozenset(
    {
        "hold",
        "holdkey",
        "batchledger",
        "disposalcertificate",
        "archivelock",
        "restorekey",
        "restoredkey",
        "restoreledger",
        "restorecertificate",
    }
)


def is_archive_model(model_name: str | None) -> bool:
    return (model_name or "").lower() in ARCHIVE_MODELS


class ArchiveRouter:
    def db_for_read(self, model, **hints):
        return ARCHIVE_ALIAS if is_archive_model(model._meta.model_name) else CONTROL_ALIAS

    def db_for_write(self, model, **hints):
        return ARCHIVE_ALIAS if is_archive_model(model._meta.model_name) else CONTROL_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        # Cross-database foreign keys cannot be enforced; archive models refer
        # to control rows by id only.
        return is_archive_model(obj1._meta.model_name) == is_archive_model(obj2._meta.model_name)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db == READONLY_ALIAS:
            return False
        if app_label not in {"governance", "archival"}:
            return db == CONTROL_ALIAS
        if model_name is None:
            # RunPython/RunSQL operations say which database they target.
            target = hints.get("target_db")
            return db == target if target else db == CONTROL_ALIAS
        if is_archive_model(model_name):
            return db == ARCHIVE_ALIAS
        return db == CONTROL_ALIAS
