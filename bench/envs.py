"""Where each benchmark database lives, and how to put it back to its loaded state.

A setup is (engine, topology): engine ``sqlite``, ``postgresql`` or
``mariadb``; topology ``same`` (one server-side transaction per batch) or
``stream`` (every source in ARCHIVAL_STREAMING_SOURCES, as for an archive on
another server). Everything is private to the bench: files under
``$BENCH_ROOT`` (default /tmp/h_bench), PostgreSQL databases ``bench_*``,
MariaDB databases ``bench_*``.

Data is generated once into a template (a folder of SQLite files, PostgreSQL
template databases) and copied before every measurement, so every method
moves exactly the same rows from the same starting state. MariaDB has no
template databases: its sources are regenerated (server-side, seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("BENCH_PYTHON") or str(REPO / ".venv" / "bin" / "python")
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/h_bench"))
PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
MARIADB = os.environ.get("BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306")
# Database names start with this (the chaos test uses its own, so it can run beside a benchmark).
P = os.environ.get("BENCH_DB_PREFIX", "bench")
SOURCES = ("SourceDB1", "SourceDB2", "SourceDB3")
ENGINES = ("sqlite", "postgresql", "mariadb")


def environment(engine: str, topology: str = "same", template: bool = False) -> dict[str, str]:
    """Process environment for the Django settings of one setup."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL") and k != "DATABASE_URL"}
    env.pop("ARCHIVAL_STREAMING_SOURCES", None)
    suffix = "_tpl" if template else ""
    data_dir = ROOT / f"{engine}{suffix}"
    env.update(
        DJANGO_SETTINGS_MODULE="governance.settings",
        ARCHIVAL_DATA_DIR=str(data_dir),
        ARCHIVAL_LOG_LEVEL="WARNING",
        AXES_ENABLED="false",
        PYTHONPATH=str(REPO),
    )
    if engine == "postgresql":
        data = f"{PG}/{P}_data{suffix}"
        env.update(
            DATABASE_URL=f"{PG}/{P}_control{suffix}",
            ARCHIVE_DATABASE_URL=data,
            ARCHIVE_READONLY_DATABASE_URL=data,
            **{f"{s.upper()}_DATABASE_URL": data for s in SOURCES},
        )
    elif engine == "mariadb":
        # Control, archive and sources are databases on one MariaDB server.
        env.update(
            DATABASE_URL=f"{MARIADB}/{P}_control",
            ARCHIVE_DATABASE_URL=f"{MARIADB}/{P}_archive",
            ARCHIVE_READONLY_DATABASE_URL=f"{MARIADB}/{P}_archive",
            ARCHIVAL_NAMESPACE_PREFIX=f"{P}_archive_",
            **{f"{s.upper()}_DATABASE_URL": f"{MARIADB}/{P}_{s.lower()}" for s in SOURCES},
        )
    elif engine != "sqlite":
        raise ValueError(f"unknown engine {engine}")
    if topology == "stream":
        env["ARCHIVAL_STREAMING_SOURCES"] = ",".join(SOURCES)
    elif topology != "same":
        raise ValueError(f"unknown topology {topology}")
    return env


class EngineUnavailable(RuntimeError):
    """An engine this run was asked to measure cannot be reached from here (says what to install or start)."""


def check_reachable(engine: str) -> None:
    """Fail in a second, before any data is generated, when ``engine``'s driver or server is missing."""
    if engine == "sqlite":
        return
    if engine == "postgresql":
        try:
            _pg("SELECT 1")
        except Exception as exc:
            raise EngineUnavailable(f"PostgreSQL at {PG} is not reachable: {exc}") from exc
        return
    try:
        import MySQLdb  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(
            "the MariaDB driver (mysqlclient) is not installed: bash bench/install_mariadb_deps.sh"
        ) from exc
    try:
        _maria("SELECT 1")
    except Exception as exc:
        raise EngineUnavailable(f"MariaDB at 127.0.0.1:3306 is not reachable: {exc}") from exc


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _maria(sql: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def fresh_databases(engine: str, template: bool) -> None:
    """Empty databases for a build (dropping only this bench's own)."""
    suffix = "_tpl" if template else ""
    data_dir = ROOT / f"{engine}{suffix}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    if engine == "postgresql":
        for name in (f"{P}_control{suffix}", f"{P}_data{suffix}"):
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _pg(f'CREATE DATABASE "{name}"')
    elif engine == "mariadb":
        for name in [
            f"{P}_control",
            f"{P}_archive",
            *[f"{P}_{s.lower()}" for s in SOURCES],
            *[f"{P}_archive_{s.lower()}" for s in SOURCES],
        ]:
            _maria(f"DROP DATABASE IF EXISTS `{name}`")
        for name in [f"{P}_control", f"{P}_archive", *[f"{P}_{s.lower()}" for s in SOURCES]]:
            _maria(f"CREATE DATABASE `{name}`")


def worker(task: str, engine: str, topology: str = "same", *args: str, template: bool = False, check=True) -> str:
    """Run ``bench/worker.py task`` in a child process with the setup's environment; return its stdout."""
    env = environment(engine, topology, template)
    proc = subprocess.run(
        [PYTHON, str(REPO / "bench" / "worker.py"), task, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"bench worker {task} failed on {engine}/{topology} (exit {proc.returncode})")
    return proc.stdout


def build(engine: str, size_rows: int, tables: int, dataset: str = "tables120") -> None:
    """Generate data set ``dataset`` and its configs once; into templates where the engine has them."""
    template = engine != "mariadb"
    fresh_databases(engine, template)
    worker("build", engine, "same", str(size_rows), str(tables), dataset, template=template)
    if engine == "postgresql":
        # A template may not have open connections; the build's are closed.
        pass


def restore(engine: str, size_rows: int, tables: int, dataset: str = "tables120") -> None:
    """Put the working databases back to the freshly loaded state (MariaDB: regenerate ``dataset``)."""
    work = ROOT / engine
    if engine == "sqlite":
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(ROOT / "sqlite_tpl", work)
        shutil.rmtree(work / "logs", ignore_errors=True)
    elif engine == "postgresql":
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(ROOT / "postgresql_tpl", work)
        for name in (f"{P}_control", f"{P}_data"):
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            # FILE_COPY copies the files (fast) instead of WAL-logging every block.
            _pg(f'CREATE DATABASE "{name}" TEMPLATE "{name}_tpl" STRATEGY FILE_COPY')
        # Start every method from a fresh checkpoint, so none of them pays for
        # flushing the previous method's writes.
        _pg("CHECKPOINT")
    else:
        build(engine, size_rows, tables, dataset)
    # Write the copied files out before the timed run: otherwise the run's
    # first fsyncs wait for the kernel to write back the copy (ext4 commits
    # other files' dirty data with its journal), a delay that lands on
    # whichever method runs next and varies from run to run.
    os.sync()
