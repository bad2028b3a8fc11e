"""Overlap each table's start and end with another table's batches.

``run_cycle`` and ``resume_run`` take a run's tables one after another in
one process. Around its batches every table does work the row path does not
wait on: before them, claiming its lease, reading its schema, Mark's counts
and Mark's commit (where Mark creates no archive table); after them,
Verify's count, the ledger's digest and the completing control transaction. Where every database of the run lets
readers and writers work side by side (``Backend.reads_beside_writes``), a
helper thread with connections of its own starts the next table and ends
the last one while this thread moves batches.

What does not change: the batches run one table at a time, in dependency
order, on this thread; every table goes through the same phases, each
committed under its lease as before, so after a crash every table is in a
phase the resume knows (two or three tables of the run may be open at once
instead of one). A table the helper could not start (its lease held
elsewhere, an error) is started again on this thread, which reports what
happened as it would without the helper.

Marking a parent table while a child's batches move gives the counts Mark
would give after them: Mark's parent rule lets a parent row go when every
child row referencing it will move, and a child batch removes only such
rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.utils import timezone

from archival.backends import backend_for
from archival.engine import leases, pacing, phases
from archival.engine.archive_tables import created_by_first_batch
from archival.engine.errors import LeaseLost
from archival.engine.spec import TableSpec, build_spec
from governance.models import Phase, RecoveryState

logger = logging.getLogger("archival")


@dataclass(frozen=True)
class StartedTable:
    """A table the helper claimed (and marked, if it was PENDING and Mark makes no DDL) for this worker."""

    state: RecoveryState
    spec: TableSpec
    marked: bool


def _start(state_id: int, worker: str, claimable: list[str]) -> StartedTable | None:
    state = leases.tables.claim(state_id, worker, where={"phase": claimable})
    if state is None:
        return None
    try:
        spec = build_spec(state.config, state.run.cutoff)
        # Where Mark creates the archive table (streamed tables, MariaDB),
        # the run's thread marks: two tables' DDL at once in a namespace not
        # yet committed collide on CREATE SCHEMA.
        # Outside its run window a table is not marked ahead: the run's
        # thread finds it outside and leaves it waiting (archival.engine.pacing).
        window = pacing.window_of(state.config)
        marked = state.phase == Phase.PENDING and created_by_first_batch(spec) and pacing.in_window(window)
        if marked:
            phases.mark(spec, state, worker)
    except BaseException:
        # The run's thread claims it again and meets (and reports) the same error.
        leases.tables.release(state_id, worker)
        raise
    return StartedTable(state, spec, marked)


class Pipeline:
    """One helper thread: starts tables ahead and ends them behind, in the order asked."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archival-pipeline")
        self._started: dict[int, Future] = {}
        self._deferred: dict[int, Future] = {}

    def start(self, state_id: int, claimable: list[str]) -> None:
        """Claim ``state_id``'s table on the helper, read its schema, and mark it if it is PENDING."""
        if state_id not in self._started:
            self._started[state_id] = self._executor.submit(_start, state_id, self.worker, claimable)

    def take(self, state_id: int) -> StartedTable | None:
        """The table the helper started, its lease good for half a lease at least; else None."""
        future = self._started.pop(state_id, None)
        if future is None:
            return None
        try:
            started = future.result()
        except Exception as exc:
            logger.debug("starting recovery state %s ahead failed: %s", state_id, exc)
            return None
        if started is None:
            return None
        left = (started.state.lease_expires_at - timezone.now()).total_seconds()
        if left < settings.ARCHIVAL["LEASE_SECONDS"] / 2:
            # Waited long behind a big table: extend the lease, or learn it is lost.
            try:
                leases.tables.renew(started.state, self.worker)
            except LeaseLost:
                return None
        return started

    def defer(self, state_id: int, work: Callable[[], object]) -> None:
        """Run ``work`` (the end of ``state_id``'s table) on the helper, after what is queued there."""
        self._deferred[state_id] = self._executor.submit(work)

    def finishing(self, state_id: int) -> Future | None:
        """The deferred end of ``state_id``'s table, if it was deferred."""
        return self._deferred.get(state_id)

    def close(self) -> None:
        """Wait for the deferred work, let go of tables started and never taken, close the helper's connections."""
        try:
            for future in self._deferred.values():
                future.exception()  # waits; the work records its own errors
            for state_id, future in self._started.items():
                if not future.cancel() and future.exception() is None and future.result() is not None:
                    self._executor.submit(leases.tables.release, state_id, self.worker).result()
            self._executor.submit(connections.close_all).result()
        finally:
            self._executor.shutdown(wait=True)


def pipeline_for(states, worker: str) -> Pipeline | None:
    """A pipeline when the run's databases all allow it and the setting does; else None."""
    if not settings.ARCHIVAL["OVERLAP_TABLES"]:
        return None
    aliases = {"default", "archive", *(s.config.source_db for s in states)}
    try:
        if all(backend_for(alias).reads_beside_writes for alias in aliases):
            return Pipeline(worker)
    except Exception:
        # An unknown or unsupported source: its table fails with that error
        # on this thread, without a pipeline.
        pass
    return None
