"""Side-by-side benchmark: the engine against hand-written moves of the same rows.

    python bench/run.py --size small                 # both data sets, every engine, both topologies
    python bench/run.py --dataset single --size small --engines postgresql --topologies same
    python bench/run.py --size small --repeat 3      # engine/yardstick rounds, median ratio
    python bench/run.py --scaling                    # time vs rows and vs tables (PostgreSQL)

Data sets (bench/generate.py, fixed seed): ``single``, PERFORMANCE.md's
measurement (all rows in Position, composite key, joined to one contract per
50 rows, 40% eligible; its Contract is not archived) and ``tables120`` (the
demo's topology over 120 tables in 3 sources). ``--size`` is the total rows.

For each setup the data is generated once and restored before every method,
so each method moves the same rows from the same state:
  engine     archival.engine.run_cycle (mark, archive, verify), in a child process
  phases     the same cycle table by table with each phase timed (optional)
  ceiling    THE yardstick (PERFORMANCE.md's plain ceiling): hand-written keyset
             batches of 5,000, one transaction each, set-based, into plain archive
             tables (source columns, primary key on the source key, nothing else)
  ceiling-same-shape   the same move into the engine's archive table shape (archive
             columns, unique key, secondary indexes): engine / this is the engine's
             overhead alone, not its distance from the ceiling
  streaming  hand-written fetch / COPY or executemany / delete by key (stream
             topology), plain tables; streaming-same-shape: into the engine's shape
  pt-archiver --limit 1000 and 5000 --bulk-insert --bulk-delete --commit-each
             (MariaDB), into plain tables
With --repeat N the engine and its yardsticks take N rounds per setup (each
round starts with a different one) and the ratios shown are the medians of
the per-round ratios (this machine is noisy: methods run back to back see the
same load). Prints the ratio table, the plain-ceiling ratio first, writes
bench/results/<stamp>-<size>-<dataset>.json and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envs
from bench.generate import DATASETS, SIZES

RESULTS = Path(__file__).resolve().parent / "results"


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


REPEAT = 1


def measure(task: str, engine: str, topology: str, rows: int, tables: int, dataset: str = "tables120") -> dict:
    """Restore the loaded data, then run one method in a child process."""
    envs.restore(engine, rows, tables, dataset)
    t0 = time.perf_counter()
    out = envs.worker(task, engine, topology, str(rows), str(tables), dataset)
    result = last_json(out)
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def median_run(runs: list[dict]) -> dict:
    """The median run of several (by seconds), with every run's seconds beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    median = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        median["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    return median


def pt_archiver(rows: int, tables: int, limit: int, dataset: str = "tables120") -> dict:
    """pt-archiver per table, children first, into plain archive tables created beforehand."""
    if not shutil.which("pt-archiver"):
        return {"skipped": "pt-archiver not installed (bench/install_pt_archiver.sh)"}
    envs.restore("mariadb", rows, tables, dataset)
    prep = last_json(envs.worker("ptprep", "mariadb", "same", str(rows), str(tables), dataset))
    t0 = time.perf_counter()
    for t in prep["tables"]:
        dsn = "h=127.0.0.1,P=3306,u=root,L=1"
        cmd = [
            "pt-archiver",
            "--source", f"{dsn},D={t['source_db']},t={t['table']}",
            "--dest", f"{dsn},D={t['archive_db']},t={t['table']}",
            "--where", t["where"],
            "--limit", str(limit), "--bulk-insert", "--bulk-delete", "--commit-each",
            "--no-check-charset", "--no-check-columns", "--no-version-check", "--quiet",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pt-archiver failed on {t['table']}: {proc.stderr[-2000:]}")
    # Creating the archive tables is part of the job (the engine and the ceiling count theirs).
    seconds = time.perf_counter() - t0 + prep["ddl_seconds"]
    check = last_json(envs.worker("checksum", "mariadb", "same", str(rows), str(tables), dataset))
    moved = sum(v["archive"] for v in check["tables"].values())
    return {"seconds": seconds, "rows": moved, "ddl_seconds": prep["ddl_seconds"]}


def yardsticks(topology: str, same_shape: bool) -> list[tuple[str, str]]:
    """(method name, worker task) of a setup's yardsticks, the plain one (the reference) first."""
    plain = ("ceiling", "ceiling") if topology == "same" else ("streaming", "stream")
    out = [plain]
    if same_shape:
        out.append((f"{plain[0]}-same-shape", f"{plain[1]}_same"))
    return out


def run_setup(
    engine: str,
    topology: str,
    rows: int,
    tables: int,
    phases: bool,
    log,
    dataset: str = "tables120",
    same_shape: bool = True,
) -> dict:
    """The engine and its yardsticks, in REPEAT rounds on freshly restored data.

    The engine's ratio to the plain yardstick (the ceiling) comes first, then
    its ratio to the same-shape one (the engine's overhead). With REPEAT > 1
    each is the median of the per-round ratios: a round runs back to back,
    so a noisy minute on the machine hits every method in it.
    """
    yards = yardsticks(topology, same_shape)
    methods = [("engine", "engine"), *yards]
    runs: dict[str, list[dict]] = {name: [] for name, _ in methods}
    for i in range(REPEAT):
        turn = f" ({i + 1}/{REPEAT})" if REPEAT > 1 else ""
        # Each round starts with a different method: when the machine speeds
        # up or slows down over the minutes of a run, no method is always the
        # one that ran later.
        k = i % len(methods)
        for name, task in methods[k:] + methods[:k]:
            log(f"== {dataset} / {engine} / {topology}: {name}{turn}")
            runs[name].append(measure(task, engine, topology, rows, tables, dataset))
    out: dict = {"engine": median_run(runs["engine"])}
    for (name, _), prefix in zip(yards, ("", "same_shape_"), strict=False):
        ratios = sorted(rate(e) / rate(y) for e, y in zip(runs["engine"], runs[name], strict=True) if rate(y))
        if not ratios:
            continue
        out["engine"][f"{prefix}ratio_median"] = round(statistics.median(ratios), 3)
        if REPEAT > 1:
            out["engine"][f"{prefix}paired_ratios"] = [round(r, 3) for r in ratios]
    if phases:
        log(f"== {dataset} / {engine} / {topology}: engine, phase by phase")
        out["phases"] = measure("phases", engine, topology, rows, tables, dataset)
    for name, _ in yards:
        out[name] = median_run(runs[name])
    if engine == "mariadb":
        for limit in (1000, 5000):
            log(f"== {dataset} / mariadb: pt-archiver --limit {limit}")
            out[f"pt-archiver-{limit}"] = pt_archiver(rows, tables, limit, dataset)
    return out


def rate(m: dict) -> float:
    return m["rows"] / m["seconds"] if m.get("seconds") else 0.0


def table(results: dict) -> list[str]:
    """One line per method (x plain: rows/s against the plain yardstick), then the engine's ratios."""
    lines = [f"{'setup':24} {'method':22} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'x plain':>7} {'peak MB':>8}"]
    for setup, methods in results.items():
        ref_name = "ceiling" if "ceiling" in methods else "streaming"
        ref = rate(methods[ref_name]) if ref_name in methods else 0
        for name, m in methods.items():
            if "skipped" in m:
                lines.append(f"{setup:24} {name:22} skipped: {m['skipped']}")
                continue
            r = rate(m)
            ratio = f"{m['ratio_median']:.2f}" if "ratio_median" in m else (f"{r / ref:.2f}" if ref else "-")
            peak = f"{m['peak_mb']:.0f}" if "peak_mb" in m else "-"
            lines.append(f"{setup:24} {name:22} {m['rows']:>10,} {m['seconds']:>9.2f} {r:>10,.0f} {ratio:>7} {peak:>8}")
        engine = methods.get("engine", {})
        for prefix, label in (
            ("", f"engine / plain {ref_name} (the yardstick)"),
            ("same_shape_", f"engine / same-shape {ref_name} (engine overhead only, not the ceiling)"),
        ):
            if f"{prefix}ratio_median" not in engine:
                continue
            pairs = engine.get(f"{prefix}paired_ratios")
            rounds = f", round by round {', '.join(f'{r:.2f}' for r in pairs)}" if pairs else ""
            lines.append(f"{'':24} {label}: {engine[f'{prefix}ratio_median']:.2f}{rounds}")
        if "phases" in methods and "phase_seconds" in methods["phases"]:
            ps = methods["phases"]["phase_seconds"]
            lines.append(f"{'':24} phase seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in ps.items()))
    return lines


def split_table(results: dict) -> list[str]:
    """Each setup's median runs, bucket by bucket: seconds (calls) inside statements, commits, and the rest."""
    lines = []
    for setup, methods in results.items():
        splits = {m: r["time_split"] for m, r in methods.items() if isinstance(r, dict) and "time_split" in r}
        if not splits:
            continue
        lines.append(f"{setup}: time split (seconds, calls)")
        buckets = sorted({b for split in splits.values() for b in split}, key=lambda b: (b == "rest", b))
        lines.append(f"  {'bucket':28s}" + "".join(f"{m:>20s}" for m in splits))
        for bucket in buckets:
            cells = []
            for split in splits.values():
                cell = split.get(bucket)
                calls = f" ({cell['calls']})" if cell and "calls" in cell else ""
                cells.append(f"{cell['seconds']:.3f}{calls}" if cell else "-")
            lines.append(f"  {bucket:28s}" + "".join(f"{c:>20s}" for c in cells))
    return lines


def chart(results: dict, path: Path, title: str) -> bool:
    """A PNG bar chart of rows/s; False when matplotlib is missing (requirements-bench.txt)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colors = [], [], []
    palette = {
        "engine": "#1f77b4",
        "phases": "#aec7e8",
        "ceiling": "#2ca02c",
        "ceiling-same-shape": "#bcbd22",
        "streaming": "#98df8a",
        "streaming-same-shape": "#dbdb8d",
    }
    for setup, methods in results.items():
        for name, m in methods.items():
            if "skipped" in m:
                continue
            labels.append(f"{setup}\n{name}")
            values.append(rate(m))
            colors.append(palette.get(name, "#ff7f0e"))
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 5))
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("rows per second")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict:
    import os

    mem = ""
    try:
        mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split(":")[1].strip()
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def scaling(args, log) -> dict:
    """Time vs rows (tables fixed at 120) and vs tables (rows fixed), engine and ceiling."""
    engine = args.scaling_engine
    out = {"rows": [], "tables": []}
    for rows in args.scaling_rows:
        log(f"== scaling rows: {rows:,}")
        envs.build(engine, rows, 120)
        point = {"total_rows": rows, "engine": measure("engine", engine, "same", rows, 120),
                 "ceiling": measure("ceiling", engine, "same", rows, 120)}  # fmt: skip
        out["rows"].append(point)
        log(f"   engine {point['engine']['seconds']:.1f}s, ceiling {point['ceiling']['seconds']:.1f}s")
    fixed = args.scaling_rows[0]
    for tables in args.scaling_tables:
        log(f"== scaling tables: {tables}")
        envs.build(engine, fixed, tables)
        point = {"tables": tables, "engine": measure("engine", engine, "same", fixed, tables),
                 "ceiling": measure("ceiling", engine, "same", fixed, tables)}  # fmt: skip
        out["tables"].append(point)
        log(f"   engine {point['engine']['seconds']:.1f}s, ceiling {point['ceiling']['seconds']:.1f}s")
    return out


def scaling_charts(data: dict, stem: Path, engine: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, xlabel in (("rows", "total rows"), ("tables", "tables")):
        pts = data[key]
        if not pts:
            continue
        xs = [p["total_rows" if key == "rows" else "tables"] for p in pts]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, color in (("engine", "#1f77b4"), ("ceiling", "#2ca02c")):
            ax.plot(xs, [p[method]["seconds"] for p in pts], marker="o", label=method, color=color)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds for the cycle")
        ax.set_title(f"{engine}: time vs {xlabel}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}-{key}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument(
        "--dataset",
        nargs="+",
        choices=DATASETS,
        default=list(DATASETS),
        help="single: PERFORMANCE.md's one-table Position set; tables120: 120 tables in 3 sources (default: both)",
    )
    p.add_argument("--tables", type=int, default=120, help="tables of the tables120 set (5..120)")
    p.add_argument("--engines", nargs="+", default=["sqlite", "postgresql", "mariadb"], choices=envs.ENGINES)
    p.add_argument("--topologies", nargs="+", default=["same", "stream"], choices=["same", "stream"])
    p.add_argument("--no-phases", action="store_true", help="skip the phase-by-phase engine run")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the engine and its yardsticks per setup; the median per-round ratios are reported",
    )
    p.add_argument(
        "--no-same-shape",
        action="store_true",
        help="skip the same-shape yardstick (the engine's archive table shape); the plain ceiling is always run",
    )
    p.add_argument(
        "--time-split",
        action="store_true",
        help="also time statements, commits and the rest per database, engine beside yardstick (a little slower)",
    )
    p.add_argument("--scaling", action="store_true", help="scaling curves instead of the side-by-side run")
    p.add_argument("--scaling-engine", default="postgresql", choices=envs.ENGINES)
    p.add_argument("--scaling-rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 6_000_000, 12_000_000])
    p.add_argument("--scaling-tables", type=int, nargs="+", default=[10, 30, 60, 120])
    args = p.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    if args.time_split:
        # Read by bench/worker.py in the child processes.
        os.environ["BENCH_TIME_SPLIT"] = "1"

    def log(msg: str) -> None:
        print(msg, flush=True)

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.scaling:
        data = scaling(args, log)
        stem = RESULTS / f"{stamp}-scaling-{args.scaling_engine}"
        data["charts"] = scaling_charts(data, stem, args.scaling_engine)
        data["machine"] = machine()
        stem.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
        log(f"wrote {stem}.json and {', '.join(data['charts'])}")
        return 0

    failures = []
    engines = []
    # An engine that cannot be reached is reported now and at the end, not
    # after minutes of measuring the others; the rest are still measured.
    for engine in args.engines:
        try:
            envs.check_reachable(engine)
            engines.append(engine)
        except envs.EngineUnavailable as exc:
            failures.append(f"{engine}: {exc}")
            log(f"== {engine}: SKIPPED: {exc}")
    for dataset in args.dataset:
        failures += run_dataset(dataset, args, engines, stamp, log)
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0


YARDSTICKS = {
    "ceiling": "the plain ceiling (PERFORMANCE.md): keyset batches of 5,000, one statement per batch, "
    "into tables with the source's columns and primary key only; every ratio is against it",
    "ceiling-same-shape": "the same move into the engine's archive table shape (archive columns, unique key, "
    "secondary indexes): engine / this is the engine's overhead alone, not its distance from the ceiling",
    "streaming": "hand-written fetch / COPY or executemany / delete by key, plain tables (stream topology)",
    "streaming-same-shape": "the same into the engine's archive table shape",
    "pt-archiver": "MariaDB, into plain tables",
}


def run_dataset(dataset: str, args, engines: list[str], stamp: str, log) -> list[str]:
    """Every setup of one data set: print its table, write its JSON and chart; return the failures."""
    from bench.generate import specs_for

    rows = SIZES[args.size]
    specs = specs_for(dataset, rows, args.tables)
    tables = sum(1 for s in specs if s.archived)
    results: dict = {}
    failures = []
    for engine in engines:
        log(f"== {dataset} / {engine}: generating {rows:,} rows ({tables} tables archived)")
        t0 = time.perf_counter()
        try:
            envs.build(engine, rows, args.tables, dataset)
        except Exception as exc:  # the other engines are still measured
            failures.append(f"{dataset}/{engine}: generating the data: {exc}")
            log(f"   FAILED: {exc}")
            continue
        log(f"   built in {time.perf_counter() - t0:.1f}s")
        for topology in args.topologies:
            if engine == "mariadb" and topology == "stream":
                continue
            try:
                results[f"{engine}/{topology}"] = run_setup(
                    engine, topology, rows, args.tables, not args.no_phases, log, dataset, not args.no_same_shape
                )
            except Exception as exc:  # keep measuring the other setups; report at the end
                failures.append(f"{dataset}/{engine}/{topology}: {exc}")
                log(f"   FAILED: {exc}")
    lines = [f"data set {dataset}: {rows:,} rows, {tables} tables archived", *table(results)]
    if args.time_split:
        lines += split_table(results)
    print("\n".join(lines))
    doc = {"date": stamp, "dataset": dataset, "size": args.size, "rows": rows, "tables": tables,
           "yardsticks": YARDSTICKS, "machine": machine(), "results": results, "failures": failures}  # fmt: skip
    path = RESULTS / f"{stamp}-{args.size}-{dataset}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    if results:
        # A run that measured nothing does not replace the latest figures.
        (RESULTS / f"latest-{args.size}-{dataset}.json").write_text(json.dumps(doc, indent=2, default=str))
        title = f"archival bench, {dataset}, {args.size} ({rows:,} rows, {tables} tables)"
        if chart(results, path.with_suffix(".png"), title):
            log(f"wrote {path} and {path.with_suffix('.png')}")
        else:
            log(f"wrote {path} (no chart: matplotlib is not installed, pip install -r requirements-bench.txt)")
    else:
        log(f"wrote {path} (nothing was measured)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
