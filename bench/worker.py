"""One benchmark step in its own process (so settings come from its environment).

    worker.py build ROWS TABLES [DATASET]         migrate, generate data, create configs
    worker.py engine ROWS TABLES [DATASET]        archival.engine.run_cycle, timed
    worker.py phases ROWS TABLES [DATASET]        the same cycle table by table, timed per phase
    worker.py ceiling ROWS TABLES [DATASET]       hand-written set-based move, plain archive tables (the ceiling)
    worker.py ceiling_same ROWS TABLES [DATASET]  the same into the engine's archive table shape
    worker.py stream ROWS TABLES [DATASET]        hand-written streaming copy, plain archive tables
    worker.py stream_same ROWS TABLES [DATASET]   the same into the engine's archive table shape
    worker.py checksum ROWS TABLES [DATASET]      per-table count and hash of source + archive rows

DATASET: ``tables120`` (the default) or ``single`` (bench/generate.py).

BENCH_TIME_SPLIT=1 adds ``time_split`` to the engine's and the ceiling's
JSON: seconds inside statements and inside commits per database, and the
rest (Python, the driver), so the two sides compare bucket by bucket.

Each prints one JSON object on its last line. Peak memory is this process's
ru_maxrss, so the engine's figure is the engine's alone.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    import django

    django.setup()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cutoff():
    from datetime import date

    from bench.generate import CUTOFF

    return date.fromisoformat(CUTOFF)


def task_build(specs) -> dict:
    from django.core.management import call_command

    from bench.generate import create_configs, eligible_rows, load

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("migrate", database="archive", verbosity=0)
    migrate = time.perf_counter() - t0
    load(specs, log=lambda m: print(m, file=sys.stderr))
    create_configs(specs)
    return {"migrate_seconds": migrate, "seconds": time.perf_counter() - t0, "rows": sum(s.rows for s in specs),
            "eligible": eligible_rows(specs), "tables": len(specs)}  # fmt: skip


def _states_summary(run_id: int) -> dict:
    from governance.models import RecoveryState

    states = list(RecoveryState.objects.filter(run_id=run_id))
    phases: dict[str, int] = {}
    for s in states:
        phases[s.phase] = phases.get(s.phase, 0) + 1
    errors = [f"{s.table_label}: {s.last_error}" for s in states if s.last_error][:5]
    return {
        "rows": sum(s.archived_count for s in states),
        "marked": sum(s.eligible_count or 0 for s in states),
        "batches": sum(s.batches_done for s in states),
        "phases": phases,
        "errors": errors,
    }


class TimeSplit:
    """Wall time inside ``execute`` and inside COMMIT, per database alias; the rest is Python and the driver.

    ``on_statement(alias, sql, seconds)``, if given, sees every statement as it ends.
    It wraps the connections of the thread that enters it: the run's helper
    thread (archival.engine.pipeline) is not split, so measure with
    ARCHIVAL_OVERLAP_TABLES=false to see where each step's time goes.
    """

    def __init__(self, on_statement=None):
        from collections import defaultdict

        self.on_statement = on_statement
        self.seconds: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)

    def _add(self, key, t0: float) -> float:
        elapsed = time.perf_counter() - t0
        self.seconds[key] += elapsed
        self.calls[key] += 1
        return elapsed

    def __enter__(self):
        from contextlib import ExitStack

        from django.db import connections
        from django.db.backends.base.base import BaseDatabaseWrapper

        def timer(alias):
            def wrapper(execute, sql, params, many, context):
                t0 = time.perf_counter()
                try:
                    return execute(sql, params, many, context)
                finally:
                    elapsed = self._add(("execute", alias), t0)
                    if self.on_statement:
                        self.on_statement(alias, sql, elapsed)

            return wrapper

        self._stack = ExitStack()
        for alias in connections:
            self._stack.enter_context(connections[alias].execute_wrapper(timer(alias)))
        commit = self._commit = BaseDatabaseWrapper._commit

        def timed_commit(wrapper):
            t0 = time.perf_counter()
            try:
                return commit(wrapper)
            finally:
                self._add(("commit", wrapper.alias), t0)

        BaseDatabaseWrapper._commit = timed_commit
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        from django.db.backends.base.base import BaseDatabaseWrapper

        total = time.perf_counter() - self._t0
        BaseDatabaseWrapper._commit = self._commit
        self._stack.close()
        self.result = {
            f"{kind} {alias}": {"seconds": round(secs, 3), "calls": self.calls[(kind, alias)]}
            for (kind, alias), secs in sorted(self.seconds.items())
        }
        self.result["rest"] = {"seconds": round(total - sum(self.seconds.values()), 3)}
        return False


def _maybe_split():
    from contextlib import nullcontext

    return TimeSplit() if os.environ.get("BENCH_TIME_SPLIT") == "1" else nullcontext()


def task_engine(specs) -> dict:
    from archival.engine import run_cycle

    with _maybe_split() as split:
        t0 = time.perf_counter()
        result = run_cycle(cutoff=cutoff(), actor=None, trigger="bench")
        seconds = time.perf_counter() - t0
    run_id = getattr(result, "run_id", None) or getattr(getattr(result, "run", None), "id", None)
    out = {"seconds": seconds, "peak_mb": peak_mb(), "run_id": run_id, "status": str(getattr(result, "status", ""))}
    out.update(_states_summary(run_id))
    if split is not None:
        out["time_split"] = split.result
    return out


def task_phases(specs) -> dict:
    """The cycle table by table (dependency order), each phase timed on its own."""
    from archival.engine import advance_table, finalize_run, ordered_states, start_run

    t0 = time.perf_counter()
    run = start_run(cutoff=cutoff(), actor=None, trigger="bench")
    times = {"start": time.perf_counter() - t0, "mark": 0.0, "archive": 0.0, "verify": 0.0, "complete": 0.0}
    for state in ordered_states(run):
        for phase, until in (
            ("mark", "MARKED"),
            ("archive", "ARCHIVED"),
            ("verify", "VERIFIED"),
            ("complete", "COMPLETED"),
        ):
            t = time.perf_counter()
            advance_table(state.id, worker="bench", until=until)
            times[phase] += time.perf_counter() - t
    t = time.perf_counter()
    finalize_run(run.id)
    times["finalize"] = time.perf_counter() - t
    out = {"seconds": time.perf_counter() - t0, "phase_seconds": times, "peak_mb": peak_mb(), "run_id": run.id}
    out.update(_states_summary(run.id))
    return out


def task_ceiling(specs, shape: str = "plain") -> dict:
    from bench.ceiling import run_ceiling

    with _maybe_split() as split:
        out = {**run_ceiling(specs, shape=shape), "peak_mb": peak_mb()}
    if split is not None:
        out["time_split"] = split.result
    return out


def task_ceiling_same(specs) -> dict:
    return task_ceiling(specs, shape="same")


def task_stream(specs, shape: str = "plain") -> dict:
    from bench.ceiling import run_streaming

    return {**run_streaming(specs, shape=shape), "peak_mb": peak_mb()}


def task_stream_same(specs) -> dict:
    return task_stream(specs, shape="same")


def task_ptprep(specs) -> dict:
    from bench.ceiling import prepare_pt_archiver

    return prepare_pt_archiver(specs)


def task_checksum(specs) -> dict:
    from bench.checksum import table_checksums

    return {"tables": table_checksums(specs)}


def task_profile(specs) -> dict:
    """run_cycle under cProfile; the top of the profile goes to stderr and a .prof file."""
    import cProfile
    import pstats

    from archival.engine import run_cycle

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_cycle(cutoff=cutoff(), actor=None, trigger="bench")
    prof.disable()
    seconds = time.perf_counter() - t0
    path = Path(os.environ.get("BENCH_PROFILE_OUT", "/tmp/h_bench/engine.prof"))
    prof.dump_stats(path)
    stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative")
    stats.print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    return {"seconds": seconds, "profile": str(path)}


def task_statements(specs) -> dict:
    """run_cycle with every SQL statement timed, grouped by its first words and database (stderr: the top)."""
    import re
    from collections import defaultdict
    from contextlib import ExitStack

    from archival.engine import run_cycle

    spent: dict = defaultdict(lambda: [0, 0.0])
    with ExitStack() as stack:
        # BENCH_SQL_LOG=file: every statement's time, database and text (opened once, not per statement).
        path = os.environ.get("BENCH_SQL_LOG")
        log = stack.enter_context(open(path, "a")) if path else None

        def record(alias, sql, elapsed):
            if log:
                log.write(f"{elapsed:.5f} {alias} {' '.join(sql.split())[:150]}\n")
            entry = spent[(alias, re.sub(r'"[^"]*"', "?", sql)[:60])]
            entry[0] += 1
            entry[1] += elapsed

        t0 = time.perf_counter()
        with TimeSplit(on_statement=record) as split:
            run_cycle(cutoff=cutoff(), actor=None, trigger="bench")
        seconds = time.perf_counter() - t0
    for (alias, words), (n, secs) in sorted(spent.items(), key=lambda kv: -kv[1][1])[:45]:
        print(f"{secs:8.3f} s {n:6d}  {alias:10s} {words}", file=sys.stderr)
    by_alias = {alias: round(secs, 3) for (kind, alias), secs in split.seconds.items() if kind == "execute"}
    return {"seconds": seconds, "in_sql": sum(by_alias.values()), "statements": sum(v[0] for v in spent.values()),
            "by_alias": by_alias, "time_split": split.result}  # fmt: skip


def main(argv: list[str]) -> int:
    task, rows, tables = argv[0], int(argv[1]), int(argv[2])
    dataset = argv[3] if len(argv) > 3 else "tables120"
    setup()
    from bench.generate import specs_for

    specs = specs_for(dataset, rows, tables)
    result = globals()[f"task_{task}"](specs)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
