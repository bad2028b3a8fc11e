"""The same-server path moves rows without fetching them into Python.

Every row a cursor hands to Python during a same-server run is counted (the
cursor methods are wrapped, the database is real). A run moving thousands of
rows may fetch only bounds and counts: a handful of values per batch.
"""

from __future__ import annotations

from datetime import date

import pytest
from django.db.backends import utils

from archival import engine
from archival.engine.spec import topology

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def fetched(monkeypatch):
    counter = {"rows": 0}
    for name in ("fetchone", "fetchmany", "fetchall"):
        original = getattr(utils.CursorWrapper, name, None)
        if original is None:
            continue

        def wrapped(self, *args, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            if isinstance(result, list):
                counter["rows"] += len(result)
            elif result is not None:
                counter["rows"] += 1
            return result

        monkeypatch.setattr(utils.CursorWrapper, name, wrapped)
    return counter


def test_a_same_server_run_fetches_no_rows_into_python(demo, fetched):
    assert topology("SourceDB1") == "same_server"
    run = engine.start_run(cutoff=date(2026, 11, 25), tables=["Position"])
    state = run.states.get()
    engine.advance_table(state.pk, until="MARKED")
    before = fetched["rows"]

    result = engine.advance_table(state.pk, until="ARCHIVED")

    moved = result.moved
    assert moved > 1000 and result.batches >= 1
    # Per batch: the bound key and the counts, plus the ledger/lease bookkeeping.
    assert fetched["rows"] - before <= 12 * (result.batches + 1), (fetched["rows"] - before, moved)
