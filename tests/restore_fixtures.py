"""Personas and helpers for the restore tests.

Personas: ``requester`` (an archival administrator: may request and execute
restores), ``approver`` (a compliance officer: may approve them),
``restore_outsider`` (staff without either permission). Data: the small demo
topology archived once at ``CUTOFF`` (``archived_demo``), so every source
has rows in the archive to bring back.
"""

from __future__ import annotations

from datetime import date

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connections

from archival import engine
from archival.backends import backend_for, namespace_for
from governance.models import TableConfig
from tests.engine_fixtures import snapshot

CUTOFF = date(2026, 11, 25)


def _user(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return User.objects.get(pk=user.pk)  # fresh: permission cache


@pytest.fixture
def requester(transactional_db):
    return _user("ada_admin", "governance.request_restore")


@pytest.fixture
def approver(transactional_db):
    return _user("carl_compliance", "governance.approve_restore")


@pytest.fixture
def restore_outsider(transactional_db):
    return _user("otto_outsider")


def configs() -> list[TableConfig]:
    return list(TableConfig.objects.active())


def config(source_db: str, table: str) -> TableConfig:
    return TableConfig.objects.get(source_db=source_db, table_name=table)


@pytest.fixture
def archived_demo(demo):
    """The demo archived once; yields the snapshot of every source table before the run."""
    original = snapshot(configs())
    result = engine.run_cycle(cutoff=CUTOFF)
    assert result.ok, [t.error for t in result.tables if t.error]
    return original


def streamed(*aliases: str):
    """Move these sources by streaming (settings.ARCHIVAL is read per call)."""
    settings.ARCHIVAL = {**settings.ARCHIVAL, "STREAMING_SOURCES": list(aliases)}


def archive_rows(cfg: TableConfig, where: str = "", params=()) -> list[tuple]:
    arc = backend_for("archive")
    table = arc.qualified(namespace_for(cfg.source_db), cfg.table_name)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT * FROM {table} a {where}", list(params))
        return cur.fetchall()


def archive_count(cfg: TableConfig, where: str = "", params=()) -> int:
    arc = backend_for("archive")
    ns = namespace_for(cfg.source_db)
    if not arc.table_exists(ns, cfg.table_name):
        return 0
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {arc.qualified(ns, cfg.table_name)} a {where}", list(params))
        return cur.fetchone()[0]


def source_count(cfg: TableConfig) -> int:
    src = backend_for(cfg.source_db)
    with connections[cfg.source_db].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {src.qualified(cfg.schema_name, cfg.table_name)}")
        return cur.fetchone()[0]
