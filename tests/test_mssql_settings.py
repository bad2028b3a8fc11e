"""SQL Server connection settings, read from the environment in a fresh process (settings load once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine_fixtures import BASE_DIR

READER = "mssql://archival_reader:secret@sql.example:1433/Archive"
APP = "mssql://archival_app:secret@sql.example:1433/Archive"
PRINT_TIMEOUTS = (
    "import django; django.setup(); from django.conf import settings; import json; "
    "print(json.dumps({a: c.get('OPTIONS', {}).get('query_timeout') for a, c in settings.DATABASES.items()"
    " if c['ENGINE'] == 'mssql'}))"
)


def settings_of(**env) -> subprocess.CompletedProcess:
    """Load governance.settings with ``env`` (no database is contacted)."""
    clean = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and not k.startswith("MSSQL_")}
    clean.update(DJANGO_SETTINGS_MODULE="governance.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_TIMEOUTS], env=clean, capture_output=True, text=True, timeout=120, cwd=BASE_DIR
    )


def test_the_read_only_alias_gets_a_search_time_limit_and_the_writer_none():
    done = settings_of(ARCHIVE_DATABASE_URL=APP, ARCHIVE_READONLY_DATABASE_URL=READER)
    assert done.returncode == 0, done.stderr
    # The search's 5,000 ms, in mssql-django's whole seconds; the procedure calls stay unbounded.
    assert json.loads(done.stdout) == {"archive": 0, "archive_readonly": 5}


def test_the_read_only_time_limit_has_its_own_setting():
    done = settings_of(
        ARCHIVE_DATABASE_URL=APP, ARCHIVE_READONLY_DATABASE_URL=READER, MSSQL_READONLY_QUERY_TIMEOUT="30"
    )
    assert json.loads(done.stdout)["archive_readonly"] == 30


@pytest.mark.parametrize("setting", [{"MSSQL_READONLY_QUERY_TIMEOUT": "0"}, {"MSSQL_READONLY_QUERY_TIMEOUT": "soon"}])
def test_a_read_only_alias_without_a_time_limit_is_refused_at_startup(setting):
    done = settings_of(ARCHIVE_DATABASE_URL=APP, ARCHIVE_READONLY_DATABASE_URL=READER, **setting)
    assert done.returncode != 0
    assert "MSSQL_READONLY_QUERY_TIMEOUT" in done.stderr and "ImproperlyConfigured" in done.stderr


def test_a_zero_time_limit_in_the_url_is_refused_at_startup():
    done = settings_of(ARCHIVE_DATABASE_URL=APP, ARCHIVE_READONLY_DATABASE_URL=f"{READER}?query_timeout=0")
    assert done.returncode != 0 and "query_timeout" in done.stderr
