"""Overlap each table's reads and wrap-up with another table's batches.

``run_cycle`` and ``resume_run`` take a run's tables one after another in
one process. Around its batches every table does work the row path does not
wait on: before them, reading its schema and Mark's counts; after them,
Verify's count, the ledger's digest and the completing control transaction.
Where every database of the run lets readers and writers work side by side
(``Backend.reads_beside_writes``), a helper thread with connections of its
own does the next table's reading and the last table's wrap-up while this
thread moves batches.

What does not change: the batches run one table at a time, in dependency
order, on this thread; every table goes through the same phases, each
committed as before under the same lease, so after a crash every table is
in a phase the resume knows (two tables of the run may be open at once
instead of one). Mark's counts read ahead are used only when the table is
still PENDING when this thread claims it (no Mark of it committed, so no
batch of it moved) and its config is unchanged; anything else, or an error
on the helper, and the table reads again here, as without the pipeline.

Reading a parent table's counts while a child's batches move gives the
counts Mark would give after them: Mark's parent rule lets a parent row go
when every child row referencing it will move, and a child batch removes
only such rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date

from django.conf import settings
from django.db import connections

from archival.backends import backend_for
from archival.engine import phases
from archival.engine.spec import TableSpec, build_spec

logger = logging.getLogger("archival")


def config_values(config) -> tuple:
    """Every stored field of a table config: equal tuples mean the same config."""
    return tuple(getattr(config, f.attname) for f in config._meta.concrete_fields)


@dataclass(frozen=True)
class PreparedTable:
    config_values: tuple
    spec: TableSpec
    # count_eligible's answer, read when the table was PENDING; None otherwise.
    mark_counts: tuple | None


def _prepare(config, cutoff: date, with_counts: bool) -> PreparedTable:
    spec = build_spec(config, cutoff)
    counts = phases.count_eligible(spec) if with_counts else None
    return PreparedTable(config_values(config), spec, counts)


class Pipeline:
    """One helper thread: reads tables ahead and wraps them up behind, in the order asked."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archival-pipeline")
        self._prepared: dict[int, Future] = {}
        self._deferred: dict[int, Future] = {}

    def prepare(self, state) -> None:
        """Start reading ``state``'s table (its schema, and Mark's counts if it is PENDING)."""
        from governance.models import Phase

        if state.pk not in self._prepared:
            self._prepared[state.pk] = self._executor.submit(
                _prepare, state.config, state.run.cutoff, state.phase == Phase.PENDING
            )

    def take(self, state) -> PreparedTable | None:
        """What was read ahead for the claimed ``state``, if it still holds; else None."""
        from governance.models import Phase

        future = self._prepared.pop(state.pk, None)
        if future is None:
            return None
        try:
            prepared = future.result()
        except Exception as exc:
            # This thread reads the table again and reports what is wrong itself.
            logger.debug("reading %s ahead failed: %s", state.table_label, exc)
            return None
        if prepared.config_values != config_values(state.config):
            return None
        if state.phase != Phase.PENDING:
            prepared = replace(prepared, mark_counts=None)
        return prepared

    def defer(self, state_id: int, work: Callable[[], object]) -> None:
        """Run ``work`` (the end of ``state_id``'s table) on the helper, after what is queued there."""
        self._deferred[state_id] = self._executor.submit(work)

    def finishing(self, state_id: int) -> Future | None:
        """The deferred end of ``state_id``'s table, if it was deferred."""
        return self._deferred.get(state_id)

    def close(self) -> None:
        """Wait for the deferred work, then close the helper's connections."""
        try:
            for future in self._prepared.values():
                future.cancel()
            for future in self._deferred.values():
                future.exception()  # waits; the work records its own errors
            self._executor.submit(connections.close_all).result()
        finally:
            self._executor.shutdown(wait=True)


def pipeline_for(states) -> Pipeline | None:
    """A pipeline when the run's databases all allow it and the setting does; else None."""
    if not settings.ARCHIVAL.get("OVERLAP_TABLES", True):
        return None
    aliases = {"default", "archive", *(s.config.source_db for s in states)}
    try:
        if all(backend_for(alias).reads_beside_writes for alias in aliases):
            return Pipeline()
    except Exception:
        # An unknown or unsupported source: its table fails with that error
        # on this thread, without a pipeline.
        pass
    return None
