"""bench/worker.py's TimeSplit: statements and commits are counted per database, and put back afterwards."""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from bench.worker import TimeSplit
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_the_split_counts_each_databases_statements_and_commits():
    commit_before = BaseDatabaseWrapper._commit
    with TimeSplit() as split:
        for _ in range(2):
            with transaction.atomic():
                AuditEvent.objects.record("bench.split", actor="test")
        with connections["archive"].cursor() as cur:
            cur.execute("SELECT 1")
    result = split.result
    assert result["commit default"]["calls"] == 2
    assert result["execute default"]["calls"] >= 2
    assert result["execute archive"]["calls"] == 1
    assert "commit archive" not in result
    assert result["rest"]["seconds"] >= 0
    # Nothing stays patched or wrapped once the split is closed.
    assert BaseDatabaseWrapper._commit is commit_before
    assert all(not connections[alias].execute_wrappers for alias in connections)
