"""Disposal on SQL Server goes through archival.usp_dispose_batch, and hold changes take its hold lock.

No SQL Server runs here: the archive backend is an MSSQLBackend on a
recording cursor (tests/mssql_fixtures.py) answering as SQL Server would.
The runtime login has no DELETE on archive tables (sql/08): no DELETE may be
sent, only the procedure call, whose hold re-check and delete run in one
transaction under the ``archival:holds`` applock that ``usp_lock_holds`` takes.
sp_getapplock with @LockOwner = 'Transaction' holds it to the end of the
caller's transaction:
https://learn.microsoft.com/sql/relational-databases/system-stored-procedures/sp-getapplock-transact-sql
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from archival.disposal import tables
from archival.disposal.tables import ArchiveTable, DisposalError
from tests.mssql_fixtures import backend_answering

CUTOFF = dt.date(2026, 11, 25)


def position_table(backend) -> ArchiveTable:
    config = SimpleNamespace(
        source_db="SourceDB1", schema_name="dbo", table_name="Position", label="SourceDB1.dbo.Position"
    )
    return ArchiveTable(config, backend, "archive_sourcedb1", "Position", ["id"], ["int"], None)


def procedure_calls(cursor) -> list[list]:
    return [params for sql, params in cursor.sent if "EXEC archival.usp_dispose_batch" in sql]


def test_an_approved_range_is_disposed_by_the_procedure_and_no_delete_is_sent():
    backend, cursor = backend_answering(
        [(11,), (12,), (13,)],  # the expired keys of [11, 13]
        [(10,)],  # the expired key just before the range: where the procedure starts
        (2, 1, '["13"]'),  # usp_dispose_batch: 2 disposed, 1 held, last key 13
        [(12,)],  # the expired keys left in the range: the held one
    )

    disposed = backend.dispose_batch(
        position_table(backend), key_low=[11], key_high=[13], cutoff=CUTOFF, holds_at=CUTOFF
    )

    assert (disposed.keys, disposed.expired_before, disposed.expired_left) == ([(11,), (13,)], 3, 1)
    assert procedure_calls(cursor) == [["SourceDB1", "dbo", "Position", CUTOFF, 3, '["10"]', 5000]]
    assert not [sql for sql, _ in cursor.sent if sql.lstrip().upper().startswith("DELETE")]


def test_a_range_larger_than_a_procedure_batch_takes_several_calls_each_after_the_last():
    keys = [(n,) for n in range(1, 4501)]
    backend, cursor = backend_answering(keys, [], (4000, 0, '["4000"]'), (500, 0, '["4500"]'), [])

    disposed = backend.dispose_batch(
        position_table(backend), key_low=[1], key_high=[4500], cutoff=CUTOFF, holds_at=CUTOFF
    )

    assert (len(disposed.keys), disposed.expired_before, disposed.expired_left) == (4500, 4500, 0)
    first, second = procedure_calls(cursor)
    assert (first[4], first[5]) == (4000, None)
    assert (second[4], second[5]) == (500, '["4000"]')


def test_a_key_that_appeared_in_the_range_rolls_the_batch_back():
    backend, _ = backend_answering([(11,), (12,)], [], (2, 0, '["12"]'), [(12,)])
    with pytest.raises(DisposalError, match="reported 2 row"):
        backend.dispose_batch(position_table(backend), key_low=[11], key_high=[12], cutoff=CUTOFF, holds_at=CUTOFF)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_placing_a_hold_takes_the_procedures_hold_lock_after_the_archive_lock(monkeypatch):
    from archival.disposal import place_hold
    from governance.models import ArchiveLock, HoldScope

    backend, cursor = backend_answering()
    lock_row_taken = []
    real_backend_for = tables.backend_for

    def archive_on_sql_server(alias):
        lock_row_taken.append(ArchiveLock.objects.using("archive").filter(holder__startswith="hold:").exists())
        return backend

    monkeypatch.setattr(tables, "backend_for", archive_on_sql_server)
    place_hold(scope=HoldScope.ALL, actor="compliance", reason="Regulator inquiry 12")
    monkeypatch.setattr(tables, "backend_for", real_backend_for)

    assert cursor.sent == [("EXEC archival.usp_lock_holds @lock_timeout_ms = %s;", [5000])]
    assert lock_row_taken == [True]
