"""Which database is down: an unreachable server is told apart from a failing statement.

A lost connection in the middle of a batch says only that *a* connection
broke. Trying to connect to each database the work used, afresh, says which
one is gone: that database's tables wait for it (``Phase.WAITING``) instead of
failing one after another, one alert names it with the tables affected, and
the sweeper brings them back once it answers again.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections

logger = logging.getLogger("archival.outage")

ARCHIVE = "archive"


def reachable(alias: str) -> bool:
    """Connect to ``alias`` afresh and run one statement; False when the server does not answer."""
    conn = connections[alias]
    try:
        if conn.in_atomic_block:
            # Only the caller's transaction can end it; its state says nothing
            # about the server. Ask on the connection as it is.
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        conn.close()
        conn.ensure_connection()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except DatabaseError as exc:
        logger.warning("database %s does not answer: %s", alias, exc)
        try:
            conn.close()
        except DatabaseError:
            pass
        return False


def unreachable(aliases: list[str]) -> str | None:
    """The first of ``aliases`` that does not answer (the archive first: every table needs it), or None."""
    ordered = sorted(dict.fromkeys(aliases), key=lambda a: a != ARCHIVE)
    for alias in ordered:
        if not reachable(alias):
            return alias
    return None


def waiting_key(alias: str) -> str:
    """``RecoveryState.waiting_for`` of a table waiting for database ``alias``."""
    return f"database:{alias}"


def tables_of(alias: str, configs_by_source: dict[str, list]) -> list:
    """The configs an outage of ``alias`` stops: all of them for the archive, else that source's."""
    if alias == ARCHIVE:
        return [c for configs in configs_by_source.values() for c in configs]
    return list(configs_by_source.get(alias, []))
