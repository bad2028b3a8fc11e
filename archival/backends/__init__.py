"""One backend module per database engine; ``backend_for`` picks by vendor."""

from __future__ import annotations

from django.db import connections

from archival.backends.base import (
    Backend,
    Column,
    ForeignKey,
    QueryTimeout,
    SchemaError,
    TableInfo,
    namespace_for,
)


def backend_for(alias: str) -> Backend:
    vendor = connections[alias].vendor
    if vendor == "sqlite":
        from archival.backends.sqlite import SQLiteBackend

        return SQLiteBackend(alias)
    if vendor == "postgresql":
        from archival.backends.postgresql import PostgresBackend

        return PostgresBackend(alias)
    if vendor == "mysql":
        from archival.backends.mariadb import MariaDBBackend

        return MariaDBBackend(alias)
    if vendor == "microsoft":
        from archival.backends.mssql.backend import MSSQLBackend

        return MSSQLBackend(alias)
    raise SchemaError(f"database {alias} uses an unsupported engine ({vendor})")


__all__ = [
    "Backend",
    "Column",
    "ForeignKey",
    "QueryTimeout",
    "SchemaError",
    "TableInfo",
    "backend_for",
    "namespace_for",
]
