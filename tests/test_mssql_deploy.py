"""docker-compose and the Kubernetes manifests for the SQL Server deployment."""

from __future__ import annotations

import glob
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def docs(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def test_compose_runs_sql_server_2019_the_init_scripts_web_worker_and_redis():
    services = docs("docker-compose.yml")[0]["services"]
    assert services["mssql"]["image"].startswith("mcr.microsoft.com/mssql/server:2019")
    assert {"sql-init", "migrate", "sql-finish", "web", "qcluster", "redis", "static"} <= set(services)
    assert services["qcluster"]["command"] == ["python", "manage.py", "qcluster"]
    # Between them the two sqlcmd steps run every script in sql/, in order.
    init = services["sql-init"]["command"][0] + services["sql-finish"]["command"][0]
    globs = re.findall(r"/sql/([0-9\[\]\-]+_\*\.sql)", init)
    covered = sorted({Path(p).name for g in globs for p in glob.glob(str(ROOT / "sql" / g))})
    assert covered == sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert "sqlcmd -b" in init


def test_kubernetes_takes_secrets_from_a_secret_and_runs_the_weekly_command():
    cron = docs("deploy/cronjob.yaml")[0]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "manage.py", "archival", "run"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    workers = docs("deploy/qcluster.yaml")
    assert workers[0]["kind"] == "Deployment" and workers[1]["kind"] == "HorizontalPodAutoscaler"
    for path in ("deploy/web.yaml", "deploy/qcluster.yaml", "deploy/cronjob.yaml"):
        text = (ROOT / path).read_text()
        assert "secretRef: {name: archival-env}" in text
        assert not re.search(r"(PASSWORD|SECRET_KEY|_URL)\s*:", text), f"{path} carries a secret value"


def test_the_image_carries_no_secret_and_has_the_driver_libraries():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "libodbc2" in dockerfile and "libltdl7" in dockerfile and "libkrb5-3" in dockerfile
    assert not re.search(r"^ENV .*(SECRET_KEY|PASSWORD|DATABASE_URL)", dockerfile, re.MULTILINE)


def test_the_source_aliases_use_the_runtime_login_everywhere():
    # sql/03 makes the runtime login a VIEW DEFINITION-only user of each source
    # database: compose and the Secret template must point the sources at it.
    env = docs("docker-compose.yml")[0]["x-app-env"]
    secret = docs("deploy/secrets.example.yaml")[0]["stringData"]
    for values in (env, secret):
        sources = {k: v for k, v in values.items() if k.startswith("SOURCEDB")}
        assert sources and all(v.startswith("mssql://archival_app:") for v in sources.values()), sources
        assert values["ARCHIVE_READONLY_DATABASE_URL"].startswith("mssql://archival_reader:")


def test_the_scripts_after_migrate_get_the_variables_they_use():
    services = docs("docker-compose.yml")[0]["services"]
    finish = services["sql-finish"]["command"][0]
    assert "/sql/10_*.sql" in finish
    used = set()
    for name in ("08_", "09_", "10_"):
        path = next((ROOT / "sql").glob(f"{name}*.sql"))
        used |= set(re.findall(r"\$\((\w+)\)", path.read_text()))
    given = set(re.findall(r"(\w+)=", finish.split('VARS="-v ', 1)[1].split('"', 1)[0]))
    assert used <= given, used - given


def test_make_test_mssql_installs_as_the_dba_then_never_connects_as_sa():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest-mssql:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
    install = [s for s in steps if s.startswith("docker compose")]
    assert install == [
        "docker compose up -d --wait mssql",
        "docker compose run --rm sql-init",
        "docker compose run --rm migrate",
        "docker compose run --rm sql-finish",
    ]
    after = recipe.split("docker compose run --rm sql-finish", 1)[1]
    assert "sa:" not in after and "-U sa" not in after
    assert "$(MSSQL_APP_ENV) $(PYTHON) manage.py archival run" in after
    env = makefile.split("MSSQL_APP_ENV =", 1)[1].split("\ntest-mssql:", 1)[0]
    assert "ARCHIVE_READONLY_DATABASE_URL=$(MSSQL_READER)" in env and "sa:" not in env


def test_the_docs_give_the_install_order_and_recommend_rcsi_on_the_sources():
    text = (ROOT / "docs" / "sqlserver.md").read_text()
    assert "**00 → 07, `migrate` (both databases), 08, 09 (demo),\n10**" in text
    assert "ALTER DATABASE [Sales] SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE;" in text
    assert "**Never run against SQL Server:**" in text
