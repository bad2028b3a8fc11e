"""The SELECT-only PostgreSQL role behind the archive_readonly alias.

A read-only transaction default is not enough: any session can switch it off
(``SET default_transaction_read_only = off``). What cannot be switched off
from inside a session is a missing privilege, so the search pages connect as a
role that holds only CONNECT, USAGE on the archive schemas and SELECT on their
tables (and on the hold tables the detail page reads), plus default
privileges so tables the engine creates later are readable too.

TEMPORARY on the archive database is taken from PUBLIC (PostgreSQL grants
it to PUBLIC by default, so revoking it from the role alone changes nothing):
a SELECT-only role must not be able to create anything, temp tables included
(they take disk, catalog entries and can be used to stage data). The archive
database belongs to this product; the role that owns and runs it is granted
TEMPORARY explicitly, and any other role that needs it must be granted it by
name (docs/search.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.conf import settings

from archival.backends import backend_for, namespace_for
from archival.backends.base import NotOnThisEngine
from governance.models import Hold, HoldKey

ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ReadonlyRoleError(Exception):
    """The role cannot be set up as asked (bad name, wrong engine, is the owner)."""


@dataclass
class RoleResult:
    role: str
    created: bool
    schemas: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "created" if self.created else "updated"
        return (
            f"Role {self.role} {verb}: SELECT on {len(self.schemas)} archive schema(s) "
            f"({', '.join(self.schemas) or 'none yet'}) and {len(self.tables)} hold table(s)."
        )


def create_readonly_role(*, role: str, password: str | None = None, using: str = "archive") -> RoleResult:
    """Create or update ``role`` with SELECT only on the archive, as the owner on ``using``.

    Idempotent; runs in one transaction. Grants USAGE + SELECT on every archive
    namespace that exists (one per configured source database), default
    privileges so later archive tables are readable, and SELECT on the hold
    tables. Revokes TEMPORARY on the database from PUBLIC and the role (and
    grants it to the connecting role, which keeps what it had); on PostgreSQL
    15 PUBLIC has no CREATE on schema public already. Raises
    ``ReadonlyRoleError`` if the role can still create temp tables afterwards
    (e.g. through membership of another role).

    The password is quoted client-side (``psycopg.sql.Literal``): CREATE/ALTER
    ROLE is a utility statement, which takes no bind parameters, so with
    server-side binding ``PASSWORD %s`` fails.
    """
    if not ROLE_RE.match(role):
        raise ReadonlyRoleError(f"{role!r} is not a plain lower-case role name")
    backend = backend_for(using)
    owner = backend.connection.settings_dict.get("USER") or ""
    if role == owner:
        raise ReadonlyRoleError(f"{role} owns the archive: a read-only role must be a different role")
    namespaces = [ns for ns in map(namespace_for, settings.SOURCE_DATABASES) if backend.schema_exists(ns)]
    try:
        created, tables = backend.create_readonly_role(
            role, password, namespaces, [model._meta.db_table for model in (Hold, HoldKey)]
        )
    except (NotOnThisEngine, PermissionError) as exc:
        raise ReadonlyRoleError(f"{using}: {exc}") from None
    return RoleResult(role=role, created=created, schemas=namespaces, tables=tables)
