"""Adaptive pacing: the batch loop yields to the source database's own workload.

One :class:`Pacer` per table slice, used by the one batch loop every path
runs (``archival.engine.phases.archive``: the CLI run, the workers' slices,
same-server, streamed and SQL Server procedure batches alike). Between two
batches it decides, from what the last batch cost:

- **latency**: a batch is *slow* when it took longer than ``slow_ms``, or
  longer than ``quick_ms`` with a time per row ``slowdown`` times the
  table's quickest batch of this slice (the source is busy: locks, I/O, CPU).
  A slow batch halves the next batch (not below the smallest batch) and
  puts a pause of ``sleep_coef`` times its duration before it (at most
  ``max_pause_ms``; pt-archiver's ``--sleep-coef``). Every quick batch
  doubles the size back towards the configured batch size and quarters the
  pause. A batch quicker than ``quick_ms`` is never slow, so on an idle
  server pacing costs two comparisons per batch and no pause at all.
- **locks**: a batch that timed out on another session's locks is retried
  with half the rows (down to one row) after a back-off (the caller's rule,
  archival.engine.phases); the pacer keeps the smaller size, which then
  grows back like any other.
- **replica lag**: every ``replica_check_s`` the watched replicas of the
  source database are read (archival.engine.replicas); while one is over its
  bound the loop waits, renewing the lease, for at most
  ``replica_max_wait_s``, then the table is left WAITING (``replica:<name>``).
- **run window**: a table config may allow batches only between two local
  times; outside them the table is left WAITING (``window:HH:MM-HH:MM``) and
  taken up when the window opens.

What it did goes to the recovery state's ``pacing`` (seconds spent per
reason, the current batch size and pause, what it is doing now), written with
the batch progress the loop writes anyway, so status and the dashboard show
it; changes of state go to the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock_time

from django.conf import settings
from django.utils import timezone

from archival.engine.errors import TableWaiting
from archival.engine.replicas import ReplicaProbe
from governance.models import ReplicaWatch, SchedulerSettings
from governance.models.scheduling import SETTINGS_PK

logger = logging.getLogger("archival.pacing")

# Why the engine spent time not moving rows, in the order status shows them.
REASONS = ("latency", "lock", "lag", "window")
REASON_WORDS = {
    "latency": "pacing (batches slowed down)",
    "lock": "lock timeouts",
    "lag": "replica lag",
    "window": "run window",
}


# A pause shorter than this is dropped: it would cost a wake-up for nothing.
MIN_PAUSE_S = 0.05


@dataclass(frozen=True)
class Limits:
    """The bounds pacing works in: the table config's own, else the scheduler settings'."""

    enabled: bool = True
    max_batch: int = 5000
    min_batch: int = 250
    slow_ms: int = 1000
    quick_ms: int = 250
    slowdown: float = 4.0
    sleep_coef: float = 1.0
    max_pause_ms: int = 5000
    replica_check_s: float = 2.0
    replica_max_wait_s: float = 300.0
    window: tuple[clock_time, clock_time] | None = None


# The scheduler settings and the watched replicas, read at most once per
# CACHE_SECONDS per process: a run of many small tables would otherwise read
# them for every table. Saving either (admin, code) forgets them at once in
# that process (archival.apps); other processes see a change within this time.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, object]] = {}


def cached(key: str, load: Callable[[], object]):
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = load()
    _cache[key] = (now, value)
    return value


def forget(*args, **kwargs) -> None:
    """Drop the cached settings and watches (a signal receiver; tests call it between tests)."""
    _cache.clear()


def _scheduler_settings():
    # Read only: the defaults when nobody saved settings yet (creating the
    # row here would be a write, and on SQL Server an IDENTITY_INSERT the
    # runtime login may not do).
    return SchedulerSettings.objects.filter(pk=SETTINGS_PK).first() or SchedulerSettings()


def limits_for(config, scheduler=None) -> Limits:
    """The limits for ``config`` (a TableConfig), from its fields and the scheduler settings."""
    if scheduler is None:
        scheduler = cached("scheduler", _scheduler_settings)
    max_batch = config.effective_batch_size
    return Limits(
        enabled=scheduler.pacing_enabled,
        max_batch=max_batch,
        min_batch=max(1, min(config.min_batch_size or scheduler.pace_min_batch_size, max_batch)),
        slow_ms=scheduler.pace_slow_batch_ms,
        quick_ms=scheduler.pace_quick_batch_ms,
        slowdown=scheduler.pace_slowdown_factor,
        sleep_coef=scheduler.pace_sleep_coefficient,
        max_pause_ms=scheduler.pace_max_pause_ms if config.max_pause_ms is None else config.max_pause_ms,
        replica_check_s=scheduler.replica_check_seconds,
        replica_max_wait_s=scheduler.replica_max_wait_seconds,
        window=window_of(config),
    )


# -- run window ------------------------------------------------------------------


def in_window(window: tuple[clock_time, clock_time] | None, at: datetime | None = None) -> bool:
    """Whether local time ``at`` (now by default) is inside ``window`` [start, end); it may span midnight."""
    if window is None:
        return True
    start, end = window
    local = timezone.localtime(at or timezone.now()).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def window_key(window: tuple[clock_time, clock_time]) -> str:
    return f"window:{window[0]:%H:%M}-{window[1]:%H:%M}"


def window_from_key(key: str) -> tuple[clock_time, clock_time] | None:
    """The window a ``waiting_for`` of ``window:HH:MM-HH:MM`` names (None for any other wait)."""
    if not key.startswith("window:"):
        return None
    start, _, end = key.split(":", 1)[1].partition("-")
    return clock_time.fromisoformat(start), clock_time.fromisoformat(end)


def next_opening(window: tuple[clock_time, clock_time], at: datetime | None = None) -> datetime:
    """The next local instant the window opens after ``at``."""
    local = timezone.localtime(at or timezone.now())
    opening = local.replace(hour=window[0].hour, minute=window[0].minute, second=0, microsecond=0)
    if opening <= local:
        opening = timezone.localtime(opening + timedelta(days=1)).replace(hour=window[0].hour, minute=window[0].minute)
    return opening


def outside_window(label: str, window: tuple[clock_time, clock_time], *, unsaved: dict | None = None) -> TableWaiting:
    """The wait of a table outside its run window, with the reason the operator reads."""
    opens = next_opening(window)
    return TableWaiting(
        window_key(window),
        f"run window: {label} archives only between {window[0]:%H:%M} and {window[1]:%H:%M} "
        f"(local time, {settings.TIME_ZONE}); it waits, and the scheduled run takes it up when the window opens "
        f"({opens:%Y-%m-%d %H:%M}); by hand, archival resume within the window",
        unsaved_progress=unsaved,
    )


def window_of(config) -> tuple[clock_time, clock_time] | None:
    """A table config's run window, or None (any time)."""
    if config.window_start is None or config.window_end is None:
        return None
    return config.window_start, config.window_end


def check_window(label: str, window: tuple[clock_time, clock_time] | None, *, unsaved: dict | None = None) -> None:
    """Raise TableWaiting when the table may not run now."""
    if window is not None and not in_window(window):
        raise outside_window(label, window, unsaved=unsaved)


# -- the pacer ------------------------------------------------------------------


def pause(seconds: float, should_stop: Callable[[], bool], sleep: Callable[[float], None] = time.sleep) -> bool:
    """Sleep ``seconds`` unless the slice must stop first; True when the full pause passed."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if should_stop():
            return False
        sleep(min(left, 0.5))
    return not should_stop()


class Pacer:
    """Batch size and pauses for one table's slice (see the module docstring).

    ``saved``: the recovery state's ``pacing`` from an earlier slice (its
    batch size is where this slice starts, so a table that was shrunk by
    lock timeouts or slow batches does not start again at full size).
    ``probe``: the watched replicas of the source database
    (archival.engine.replicas), or None.
    """

    def __init__(self, label: str, limits: Limits, saved: dict | None = None, probe=None):
        saved = saved or {}
        self.label = label
        self.limits = limits
        size = saved.get("batch_size") if limits.enabled else None
        self.size = min(limits.max_batch, max(1, int(size))) if size else limits.max_batch
        self.pause_s = 0.0
        spent = saved.get("seconds") or {}
        self.seconds = {r: float(spent.get(r, 0.0)) for r in REASONS}
        self.slow_batches = int(saved.get("slow_batches", 0))
        self.doing = ""  # what the engine is doing instead of moving rows: a REASONS key, or ""
        self.note = ""
        self.probe = probe
        self._best: float | None = None  # quickest seconds per row of this slice
        self._changed = False
        self._lag_checked_at = -math.inf

    # -- what the state and status show --------------------------------------
    def snapshot(self) -> dict:
        return {
            "batch_size": self.size,
            "max_batch_size": self.limits.max_batch,
            "pause_ms": round(self.pause_s * 1000),
            "doing": self.doing,
            "note": self.note[:500],
            "seconds": {r: round(s, 3) for r, s in self.seconds.items()},
            "slow_batches": self.slow_batches,
            "at": timezone.now().isoformat(timespec="seconds"),
        }

    def changes(self) -> dict:
        """``{"pacing": snapshot}`` when something changed since the last call, else {} (nothing to write)."""
        if not self._changed:
            return {}
        self._changed = False
        return {"pacing": self.snapshot()}

    def _set(self, doing: str, note: str) -> None:
        self.doing, self.note, self._changed = doing, note, True

    # -- between batches --------------------------------------------------------
    def before_batch(self, should_stop: Callable[[], bool], keepalive: Callable[[], None], unsaved: dict) -> bool:
        """Wait before the next batch as pacing says; False when the slice must stop instead.

        Raises TableWaiting (with ``unsaved`` as its progress) when the run
        window closed or a replica stayed over its bound too long.
        """
        if self.limits.window is not None and not in_window(self.limits.window):
            self._set("window", "outside the run window")
            raise outside_window(self.label, self.limits.window, unsaved={**unsaved, "pacing": self.snapshot()})
        if self.pause_s > 0:
            started = time.monotonic()
            if self.pause_s >= 1.0:
                keepalive()  # a long pause shows in status while it lasts
            full = pause(self.pause_s, should_stop)
            self.seconds["latency"] += time.monotonic() - started
            self._changed = True
            if not full:
                return False
        if self.probe:
            return self._wait_for_replicas(should_stop, keepalive, unsaved)
        return True

    def after_batch(self, rows: int, seconds: float) -> None:
        """Adapt to the batch just committed (``rows`` moved in ``seconds``)."""
        if not self.limits.enabled:
            # Off: the configured size again as soon as a batch got its locks.
            if self.size != self.limits.max_batch or self.doing:
                self.size = self.limits.max_batch
                self._set("", "")
            return
        ms = seconds * 1000
        per_row = seconds / max(rows, 1)
        slower = self._best is not None and per_row > self.limits.slowdown * self._best
        if ms > self.limits.slow_ms or (ms > self.limits.quick_ms and slower):
            self.slow_batches += 1
            was = self.size
            self.size = max(self.limits.min_batch, self.size // 2)
            self.pause_s = min(self.limits.max_pause_ms / 1000, max(self.pause_s * 2, seconds * self.limits.sleep_coef))
            why = f"{ms:.0f} ms per batch of {rows:,} rows" + (
                f", {per_row / self._best:.1f}× the quickest" if self._best else ""
            )
            if self.doing != "latency":
                logger.warning(
                    "%s: batches slowed down (%s): next batch %s rows after a %.2f s pause",
                    self.label,
                    why,
                    f"{self.size:,}",
                    self.pause_s,
                )
            self._set(
                "latency", f"batches slowed down ({why}); {was:,} → {self.size:,} rows, {self.pause_s:.2f} s pauses"
            )
            return
        if rows and (self._best is None or per_row < self._best):
            self._best = per_row
        if self.size < self.limits.max_batch or self.pause_s:
            self.size = min(self.limits.max_batch, self.size * 2)
            # The pause falls faster than it rose: one slow batch costs about
            # a third more than its own pause, then nothing.
            self.pause_s = self.pause_s / 4 if self.pause_s / 4 >= MIN_PAUSE_S else 0.0
            self._changed = True
            if self.size == self.limits.max_batch and not self.pause_s and self.doing in ("latency", "lock"):
                logger.info("%s: batches quick again, back to %s rows without pauses", self.label, f"{self.size:,}")
                self._set("", "")
        elif self.doing in ("latency", "lock"):
            self._set("", "")

    def after_lock_timeout(self, note: str) -> int:
        """A batch timed out on locks: the next one has half the rows (down to one). Returns the new size."""
        self.size = max(1, self.size // 2)
        self._set("lock", note)
        return self.size

    def add_lock_wait(self, seconds: float) -> None:
        self.seconds["lock"] += seconds
        self._changed = True

    # -- replicas ---------------------------------------------------------------
    def _wait_for_replicas(self, should_stop, keepalive, unsaved) -> bool:
        now = time.monotonic()
        if now - self._lag_checked_at < self.limits.replica_check_s:
            return True
        self._lag_checked_at = now
        over = [r for r in self.probe.readings() if r.over]
        if not over:
            if self.doing == "lag":
                self._set("", "")
            return True
        started = last = time.monotonic()
        note = "; ".join(r.describe() for r in over)
        logger.warning("%s: waiting for replica lag: %s", self.label, note)
        self._set("lag", f"waiting for replica lag: {note}")
        keepalive()
        while over:
            waited = time.monotonic() - started
            if waited >= self.limits.replica_max_wait_s:
                names = ",".join(r.name for r in over)
                raise TableWaiting(
                    f"replica:{names}"[:200],
                    f"replica lag: waited {waited:.0f} s for {note}; the table waits and is taken up again later "
                    "(the sweeper, or archival resume)",
                    unsaved_progress={**unsaved, "pacing": self.snapshot()},
                )
            step = min(self.limits.replica_check_s, self.limits.replica_max_wait_s - waited)
            full = pause(step, should_stop)
            self.seconds["lag"] += time.monotonic() - last
            last = time.monotonic()
            if not full:
                self._changed = True
                return False
            over = [r for r in self.probe.readings() if r.over]
            if over:
                note = "; ".join(r.describe() for r in over)
                self.note = f"waiting for replica lag: {note}"
            keepalive()
        self._lag_checked_at = time.monotonic()
        logger.info("%s: replicas caught up after %.1f s", self.label, time.monotonic() - started)
        self._set("", "")
        return True

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()


def probe_for(source_db: str) -> ReplicaProbe:
    """A probe over the active watches of ``source_db`` (empty, and free, when there are none)."""
    watches = cached("replicas", lambda: list(ReplicaWatch.objects.filter(is_active=True).order_by("name")))
    return ReplicaProbe(source_db, [w for w in watches if w.source_db == source_db])


def for_table(spec, state) -> Pacer:
    """The pacer of one table slice: its limits, the state's earlier pacing, its source's watched replicas."""
    limits = limits_for(spec.config)
    return Pacer(spec.label, limits, state.pacing, probe_for(spec.config.source_db))


def summary(pacing: dict | None) -> str:
    """One line for status and the dashboard: what the engine is doing now and the time spent per reason."""
    if not pacing:
        return ""
    spent = pacing.get("seconds") or {}
    parts = [f"{REASON_WORDS[r]} {spent[r]:.1f} s" for r in REASONS if spent.get(r, 0) >= 0.05]
    now = ""
    if pacing.get("doing"):
        now = pacing.get("note") or REASON_WORDS.get(pacing["doing"], pacing["doing"])
    elif pacing.get("batch_size") and pacing.get("max_batch_size") and pacing["batch_size"] < pacing["max_batch_size"]:
        now = f"batches of {pacing['batch_size']:,} of {pacing['max_batch_size']:,} rows"
    return "; ".join(p for p in (now, ("time not moving rows: " + ", ".join(parts)) if parts else "") if p)


def with_waited(pacing: dict | None, reason: str, seconds: float) -> dict:
    """``pacing`` with ``seconds`` more spent on ``reason`` (a WAITING table taken up again)."""
    pacing = dict(pacing or {})
    spent = dict(pacing.get("seconds") or {})
    spent[reason] = round(float(spent.get(reason, 0.0)) + max(0.0, seconds), 3)
    pacing["seconds"] = spent
    pacing["doing"], pacing["note"] = "", ""
    return pacing


__all__ = [
    "REASONS",
    "Limits",
    "Pacer",
    "check_window",
    "for_table",
    "in_window",
    "limits_for",
    "next_opening",
    "summary",
    "window_from_key",
    "window_key",
    "window_of",
    "with_waited",
]
