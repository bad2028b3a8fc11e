"""docker-compose and the Kubernetes manifests for the SQL Server deployment (issue 8)."""

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
