"""The archive's PostgreSQL connections keep to the schema of its own tables; a bad schema name stops start-up.

Read from the environment in a fresh process (settings load once); no database is contacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine_fixtures import BASE_DIR

DATA = "postgres://app@db.example:5432/data"
PRINT_OPTIONS = (
    "import django; django.setup(); from django.conf import settings; import json; "
    "print(json.dumps({a: c.get('OPTIONS', {}).get('options') for a, c in settings.DATABASES.items()}))"
)


def settings_of(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and not k.startswith("ARCHIVAL_")}
    clean.update(DJANGO_SETTINGS_MODULE="governance.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_OPTIONS], env=clean, capture_output=True, text=True, timeout=120, cwd=BASE_DIR
    )


def test_only_the_archive_connections_search_the_governance_schema():
    done = settings_of(
        DATABASE_URL=DATA.replace("/data", "/control"),
        ARCHIVE_DATABASE_URL=DATA,
        SOURCEDB1_DATABASE_URL=DATA,
        ARCHIVE_READONLY_DATABASE_URL=DATA.replace("app@", "reader@"),
    )
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)
    assert options["archive"] == options["archive_readonly"] == "-c jit=off -c search_path=archival_governance"
    # A source sharing the database keeps the server's search path: its tables are named with their schema.
    assert options["SourceDB1"] == options["default"] == "-c jit=off"


def test_the_schema_has_a_setting_of_its_own():
    done = settings_of(ARCHIVE_DATABASE_URL=DATA, ARCHIVAL_GOVERNANCE_SCHEMA="archival_meta")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["archive"].endswith("-c search_path=archival_meta")


@pytest.mark.parametrize("schema", ["public", "Governance", "gov,public", "gov path", "pg_gov", "archive_sourcedb1"])
def test_a_schema_that_is_not_ours_alone_is_refused_at_startup(schema):
    done = settings_of(ARCHIVE_DATABASE_URL=DATA, ARCHIVAL_GOVERNANCE_SCHEMA=schema)
    assert done.returncode != 0
    assert "ARCHIVAL_GOVERNANCE_SCHEMA" in done.stderr and "ImproperlyConfigured" in done.stderr
