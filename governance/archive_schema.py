"""The schema of the archive's own tables on PostgreSQL, prepared before ``migrate``.

The archive alias connects with ``search_path`` set to
``settings.GOVERNANCE_SCHEMA`` alone (governance/settings.py), so the archive's
own tables (holds, hold keys, the ledger, certificates, the archive lock, the
restore tables and that alias's ``django_migrations``) are created and found
there, never in ``public`` beside the tables of sources sharing the database.

Two things cannot be a migration, because Django reads the applied migrations
from ``django_migrations`` before it runs any: creating the schema, and
bringing along the tables of an install that kept them in ``public``. Both
happen here, from the ``migrate`` command (governance/management/commands/
migrate.py), in one transaction, and do nothing once done:

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
from django.db import transaction

from governance.routers import ARCHIVE_ALIAS, is_archive_model

RECORDER_TABLE = "django_migrations"
TRIGGER_FUNCTION = "governance_refuse_delete"
OLD_SCHEMA = "public"


class ArchiveSchemaError(Exception):
    """The archive's tables cannot be brought into their schema without an operator."""


def archive_tables() -> list[str]:
    """The archive-side model tables, from the live model registry."""
    return sorted(
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if is_archive_model(model._meta.model_name)
    )


def prepare(connection) -> list[str]:
    """Create the governance schema on ``connection`` and move the archive's tables into it; returns those moved.

    Only the archive alias on PostgreSQL; elsewhere nothing to do (the archive
    is a database or file of its own there). Idempotent; one transaction.
    Raises ArchiveSchemaError when a table exists in both schemas.
    """
    if connection.alias != ARCHIVE_ALIAS or connection.vendor != "postgresql":
        return []
    schema = settings.GOVERNANCE_SCHEMA
    qn = connection.ops.quote_name
    with transaction.atomic(using=connection.alias), connection.cursor() as cur:
        # Created only when missing: a DBA may have created it for a role
        # without CREATE on the database.
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        if cur.fetchone() is None:
            cur.execute(f"CREATE SCHEMA {qn(schema)}")
        moved = _bring_history(cur, qn, schema)
        for table in archive_tables():
            if not _exists(cur, OLD_SCHEMA, table):
                continue
            if _exists(cur, schema, table):
                raise ArchiveSchemaError(
                    f"{table} exists in both {OLD_SCHEMA} and {schema}: keep the one holding the archive's rows "
                    f"and drop the other, then run migrate --database {ARCHIVE_ALIAS} again"
                )
            cur.execute(f"ALTER TABLE {qn(OLD_SCHEMA)}.{qn(table)} SET SCHEMA {qn(schema)}")
            moved.append(table)
        cur.execute(
            "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = %s::regnamespace",
            [TRIGGER_FUNCTION, OLD_SCHEMA],
        )
        if moved and cur.fetchone() and not _function_exists(cur, schema):
            cur.execute(f"ALTER FUNCTION {qn(OLD_SCHEMA)}.{qn(TRIGGER_FUNCTION)}() SET SCHEMA {qn(schema)}")
        # Whoever could read a moved table (the read-only role) must still
        # reach it: SELECT came along with the table, USAGE on its new schema
        # did not.
        cur.execute(
            "SELECT DISTINCT a.grantee::regrole::text FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "WHERE c.relnamespace = %s::regnamespace AND a.privilege_type = 'SELECT' AND a.grantee <> 0 "
            "AND a.grantee <> c.relowner",
            [schema],
        )
        for (role,) in cur.fetchall():
            cur.execute(f"GRANT USAGE ON SCHEMA {qn(schema)} TO {role}")
    return moved


def _exists(cur, schema: str, table: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = %s::regnamespace AND relkind IN ('r', 'p')",
        [table, schema],
    )
    return cur.fetchone() is not None


def _function_exists(cur, schema: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = %s::regnamespace", [TRIGGER_FUNCTION, schema]
    )
    return cur.fetchone() is not None


def _bring_history(cur, qn, schema: str) -> list[str]:
    """Move (or copy, when shared) this archive's django_migrations from public; returns it if it came."""
    if not _exists(cur, OLD_SCHEMA, RECORDER_TABLE) or _exists(cur, schema, RECORDER_TABLE):
        return []
    old, new = f"{qn(OLD_SCHEMA)}.{qn(RECORDER_TABLE)}", f"{qn(schema)}.{qn(RECORDER_TABLE)}"
    cur.execute(f"SELECT DISTINCT app FROM {old}")
    recorded = {app for (app,) in cur.fetchall()}
    if "governance" not in recorded:
        return []  # another application's history, never this archive's
    ours = [config.label for config in apps.get_app_configs()]
    if recorded <= set(ours):
        cur.execute(f"ALTER TABLE {old} SET SCHEMA {qn(schema)}")
        return [RECORDER_TABLE]
    # Another application records its migrations here too: copy the rows of
    # this project's apps and leave the table to it. LIKE ... INCLUDING ALL
    # gives the copy its own identity; the ids are kept and it restarts after them.
    cur.execute(f"CREATE TABLE {new} (LIKE {old} INCLUDING ALL)")
    cur.execute(f"INSERT INTO {new} OVERRIDING SYSTEM VALUE SELECT * FROM {old} WHERE app = ANY(%s)", [ours])
    cur.execute(
        f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE((SELECT max(id) FROM {new}), 0) + 1, false)",
        [new],
    )
    return [RECORDER_TABLE]
