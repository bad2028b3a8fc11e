"""The schema of the archive's own tables on PostgreSQL, prepared before ``migrate``.

The archive alias connects with ``search_path`` set to
``settings.GOVERNANCE_SCHEMA`` alone (governance/settings.py), so the archive's
own tables (holds, hold keys, the ledger, certificates, the archive lock, the
restore tables and that alias's ``django_migrations``) are created and found
there, never in ``public`` beside the tables of sources sharing the database.

Two things cannot be a migration, because Django reads the applied migrations
from ``django_migrations`` before it runs any: creating the schema, and
bringing along the tables of an install that kept them in ``public``. Both
happen before it, from the ``migrate`` command (governance/management/
commands/migrate.py) through ``prepare``, in the PostgreSQL backend
(``PostgresBackend.prepare_governance_schema``), in one transaction, and do
nothing once done:

* ``CREATE SCHEMA`` when it is missing;
* each archive-side table still in ``public`` (and not yet in the schema)
  moves with ``ALTER TABLE ... SET SCHEMA``: rows, indexes, constraints,
  triggers, grants and owned sequences go with it;
* ``django_migrations`` moves the same way when every row in it is one of
  this project's apps; when another application records its migrations in it
  too (a Django project of the users' own in ``public``), the rows of this
  project's apps are copied and the table is left to it; one that records
  nothing of this project is not ours and stays untouched;
* the DELETE-refusing trigger function moves along (triggers refer to it by
  identity, so they keep working; archival/disposal/triggers.py);
* roles granted SELECT on a moved table (the search pages' read-only role)
  get USAGE on the schema, so they still reach it.

A table present in both schemas is refused: which copy holds the holds is for
an operator to decide, never a guess.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings

from archival.backends import GovernanceSchemaConflict, backend_for
from governance.routers import ARCHIVE_ALIAS, is_archive_model

ArchiveSchemaError = GovernanceSchemaConflict


def archive_tables() -> list[str]:
    """The archive-side model tables, from the live model registry."""
    return sorted(
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if is_archive_model(model._meta.model_name)
    )


def prepare(connection) -> list[str]:
    """Give the archive's own tables their schema on ``connection`` before ``migrate``; returns the tables moved.

    Only the archive alias, and only where its engine keeps them in a schema
    of their own (``Backend.prepare_governance_schema``). Idempotent; one
    transaction. Raises ArchiveSchemaError when a table exists in both schemas.
    """
    if connection.alias != ARCHIVE_ALIAS:
        return []
    own_apps = [config.label for config in apps.get_app_configs()]
    return backend_for(ARCHIVE_ALIAS).prepare_governance_schema(settings.GOVERNANCE_SCHEMA, archive_tables(), own_apps)
