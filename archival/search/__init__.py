"""Read-only search over archived rows.

Everything here reads through the ``archive_readonly`` alias, a connection
that cannot write (SQLite opened with ``mode=ro``; a SELECT-only role on
PostgreSQL and SQL Server). Identifiers come only from active TableConfigs and
the live archive schema; every value a user types travels as a parameter.

Modules: ``catalog`` (which tables and columns may be searched), ``query``
(filters and keyset pages), ``limits`` (per-query time limits), ``forms``
(filter forms generated from live columns), ``service`` (the one function per
page that the views call, auditing included), ``export`` (streamed CSV),
``holds`` (holds covering a row), ``readonly`` (the PostgreSQL SELECT-only
role).
"""
