"""One backend module per database engine; ``backend_for`` picks by vendor."""

from __future__ import annotations

from django.db import connections

from archival.backends.base import (
    ArchiveIndex,
    Backend,
    Column,
    ForeignKey,
    GovernanceSchemaConflict,
    QueryTimeout,
    SchemaError,
    TableInfo,
    namespace_for,
)


def backend_for(alias: str) -> Backend:
    return _backend_class(connections[alias].vendor, alias)(alias)


def backend_on(connection) -> Backend:
    """The backend of a connection that is not one of ``DATABASES``' aliases (a replica named by a URL)."""
    backend = _backend_class(connection.vendor, connection.alias)(connection.alias)
    backend.connection = connection
    return backend


def _backend_class(vendor: str, alias: str) -> type[Backend]:
    # Each vendor's module loads its driver (psycopg, MySQLdb, mssql_python):
    # only the engines a deployment configures are imported, and installed.
    if vendor == "sqlite":
        from archival.backends.sqlite import SQLiteBackend

        return SQLiteBackend
    if vendor == "postgresql":
        from archival.backends.postgresql import PostgresBackend

        return PostgresBackend
    if vendor == "mysql":
        from archival.backends.mariadb import MariaDBBackend

        return MariaDBBackend
    if vendor == "microsoft":
        from archival.backends.mssql.backend import MSSQLBackend

        return MSSQLBackend
    raise SchemaError(f"database {alias} uses an unsupported engine ({vendor})")


__all__ = [
    "ArchiveIndex",
    "Backend",
    "Column",
    "ForeignKey",
    "GovernanceSchemaConflict",
    "QueryTimeout",
    "SchemaError",
    "TableInfo",
    "backend_for",
    "backend_on",
    "namespace_for",
]
