"""Settings for the archival governance project.

Everything the deployment controls comes from the environment (see
``governance/env.py`` and the README's configuration table). With nothing set,
the project runs on local SQLite files under ``data/`` laid out like
production: a control database, an archive database and one file per source
database.
"""

from __future__ import annotations

import re
from pathlib import Path

from croniter import croniter
from django.core.exceptions import ImproperlyConfigured

from governance.env import (
    ALIAS_RE,
    database_from_url,
    env,
    env_bool,
    env_int,
    env_list,
    secret_key,
    source_aliases,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env.str("ARCHIVAL_DATA_DIR", default=str(BASE_DIR / "data"))).resolve()

# local: the embedded demo (generated SECRET_KEY allowed, plain-HTTP cookies).
# production: every secret explicit, secure cookies, HSTS.
DEPLOYMENT = env.str("ARCHIVAL_DEPLOYMENT", default="local")
if DEPLOYMENT not in {"local", "production"}:
    raise ImproperlyConfigured("ARCHIVAL_DEPLOYMENT must be 'local' or 'production'")
PRODUCTION = DEPLOYMENT == "production"

DEBUG = env_bool("DEBUG", default=False)
if DEBUG and PRODUCTION:
    raise ImproperlyConfigured("DEBUG may not be on with ARCHIVAL_DEPLOYMENT=production")
SECRET_KEY = secret_key(DATA_DIR, allow_generated=not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "testserver"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "import_export",
    "simple_history",
    "axes",
    "governance",
    "archival",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin CSS, our scripts) with DEBUG off, without --insecure
    # or a separate web server; nginx still serves them where it fronts the app.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "governance.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes requires: it locks out after repeated failed logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "governance.urls"
WSGI_APPLICATION = "governance.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases ---------------------------------------------------------------
# default: control database; archive: archive database (holds, ledger,
# certificates too); archive_readonly: the archive through a connection that
# cannot write; one alias per source database.
SOURCE_DATABASES = source_aliases(["SourceDB1", "SourceDB2", "SourceDB3"])


# SQLite's page cache per database file of a connection, in KiB. The archive
# connection has the archive and every source file attached, each with its
# own cache: at 64 MiB a run's process peaked at 212-266 MB; at 16 MiB it
# stays under 200 MB (bench/RESULTS.md).
SQLITE_CACHE_KIB = env.int("ARCHIVAL_SQLITE_CACHE_KIB", default=16384)
if not 1024 <= SQLITE_CACHE_KIB <= 4194304:
    raise ImproperlyConfigured("ARCHIVAL_SQLITE_CACHE_KIB must be a whole number of KiB from 1024 to 4194304")


def _sqlite_url(filename: str) -> str:
    return f"sqlite:///{DATA_DIR / filename}"


# The PostgreSQL schema of the archive's own tables (see _tune). Lower case:
# it is sent unquoted in the connection's search_path.
GOVERNANCE_SCHEMA = env.str("ARCHIVAL_GOVERNANCE_SCHEMA", default="archival_governance")
if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", GOVERNANCE_SCHEMA) or GOVERNANCE_SCHEMA == "public":
    raise ImproperlyConfigured(
        "ARCHIVAL_GOVERNANCE_SCHEMA must be a plain lower-case identifier other than public "
        "(letters, digits and underscores)"
    )


def _tune(alias: str, config: dict) -> dict:
    engine = config["ENGINE"]
    options = config.setdefault("OPTIONS", {})
    if engine == "django.db.backends.sqlite3":
        # Archive and sources: rollback journal, synchronous FULL, the only
        # mode in which one transaction commits atomically across ATTACHed
        # files. The control database is never attached: WAL (one fsync per
        # commit, readers never block the writer) with synchronous FULL.
        # (Switching the control file to WAL happens once, on first connect,
        # in archival.backends.sqlite.use_wal_for_control: WAL persists.)
        journal = "" if alias == "default" else "PRAGMA journal_mode=DELETE; "
        options.setdefault(
            "init_command",
            f"{journal}PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-{SQLITE_CACHE_KIB};",
        )
        # Control database: IMMEDIATE takes the write lock at BEGIN, so two
        # writers (leases, the q2 ORM broker) queue on the busy timeout instead
        # of one failing with "database is locked". The archive and sources stay
        # deferred (an idle transaction locks nothing); the engine opens its
        # batch transactions IMMEDIATE itself (archival.engine.txn).
        if alias == "default":
            options.setdefault("transaction_mode", "IMMEDIATE")
            options.setdefault("timeout", 60)
        else:
            # The busy timeout is the engine's lock timeout from the first
            # statement (ATTACH and its PRAGMAs wait for a locked source file
            # too); archival.engine.txn sets it again before each batch.
            options.setdefault("timeout", env_int("ARCHIVAL_LOCK_TIMEOUT_MS", 5000, minimum=1) / 1000)
        test_name = str(DATA_DIR / "test" / Path(config["NAME"]).name)
        config.setdefault("TEST", {}).setdefault("NAME", test_name)
    elif engine == "django.db.backends.postgresql":
        config.setdefault("CONN_HEALTH_CHECKS", True)
        # No JIT: it compiles any statement whose estimated cost passes
        # jit_above_cost. A parent table's Mark count (a NOT EXISTS per child
        # table) is estimated that expensive and spends 280 ms compiling to
        # run in 4 ms. Every statement here is short and index-driven.
        options.setdefault("options", "-c jit=off")
        if alias in {"archive", "archive_readonly"}:
            # The archive's own tables (holds, ledger, certificates, the
            # archive lock, this alias's django_migrations) live in a schema
            # of their own, not in public beside the sources' tables when
            # they share the database. With only that schema on the path,
            # Django creates and finds them there, and a missing schema fails
            # every statement instead of falling back to public
            # (governance.archive_schema creates it before migrate).
            options["options"] = f"{options['options']} -c search_path={GOVERNANCE_SCHEMA}"
        # Server-side binding: values travel as protocol parameters instead
        # of being quoted into the statement text by the driver. Prepared
        # statements stay off (Django's default, prepare_threshold=None),
        # so a transaction-mode pooler works: enabling them
        # (prepare_threshold=5) makes no measurable difference to the
        # engine's short statements (bench/RESULTS.md).
        options.setdefault("server_side_binding", True)
        # A server that does not answer (a machine gone, a firewall dropping
        # packets) is given up on after this many seconds, not the TCP timeout:
        # the engine's retries and outage handling stay within a slice.
        options.setdefault("connect_timeout", 10)
    elif engine == "django.db.backends.mysql":
        options.setdefault("connect_timeout", 10)
    elif engine == "mssql":
        options.setdefault("driver", "ODBC Driver 18 for SQL Server")
    return config


DATABASES = {
    "default": _tune("default", database_from_url("DATABASE_URL", _sqlite_url("control.sqlite3"))),
    "archive": _tune(
        "archive",
        database_from_url("ARCHIVE_DATABASE_URL", _sqlite_url("archive.sqlite3")),
    ),
}
for _alias in SOURCE_DATABASES:
    DATABASES[_alias] = _tune(
        _alias,
        database_from_url(f"{_alias.upper()}_DATABASE_URL", _sqlite_url(f"{_alias}.sqlite3")),
    )

_readonly = database_from_url(
    "ARCHIVE_READONLY_DATABASE_URL",
    env.str("ARCHIVE_DATABASE_URL", default=_sqlite_url("archive.sqlite3")),
)
if _readonly["ENGINE"] == "django.db.backends.sqlite3":
    # Opens the file with mode=ro: SQLite itself refuses every write.
    _readonly["ENGINE"] = "governance.db.sqlite_readonly"
_readonly = _tune("archive_readonly", _readonly)
# The read-only alias reads the same database as ``archive``; in tests it must
# follow the archive's test database rather than get one of its own.
_readonly.setdefault("TEST", {})["MIRROR"] = "archive"
DATABASES["archive_readonly"] = _readonly

DATABASE_ROUTERS = ["governance.routers.ArchiveRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Archival engine ---------------------------------------------------------
ARCHIVAL = {
    # Archived tables keep their source database's name as a namespace
    # (a schema on PostgreSQL/SQL Server, an attached file on SQLite).
    "NAMESPACE_PREFIX": env.str("ARCHIVAL_NAMESPACE_PREFIX", default="archive_"),
    "DEFAULT_BATCH_SIZE": env_int("ARCHIVAL_BATCH_SIZE", 5000, minimum=1, maximum=100_000),
    # The procedures refuse more than 4,000 (archival.backends.mssql.procedures.MAX_BATCH_SIZE).
    "MSSQL_BATCH_SIZE": env_int("ARCHIVAL_MSSQL_BATCH_SIZE", 4000, minimum=1, maximum=4000),
    # Sources to move by streaming even when they share a server with the
    # archive (tests and benchmarks exercise both topologies this way).
    "STREAMING_SOURCES": env_list("ARCHIVAL_STREAMING_SOURCES", []),
    # A live worker renews its lease at least once per statement timeout (at
    # most half a lease); a dead one's lease is free after this (docs/workers.md).
    "LEASE_SECONDS": env_int("ARCHIVAL_LEASE_SECONDS", 60, minimum=5),
    # A run in one process reads the next table and verifies the last one on
    # a helper thread while it moves batches, where the databases allow it
    # (archival.engine.pipeline); false runs every step on one thread.
    "OVERLAP_TABLES": env.bool("ARCHIVAL_OVERLAP_TABLES", default=True),
    "LOG_DIR": Path(env.str("ARCHIVAL_LOG_DIR", default=str(DATA_DIR / "logs"))),
    # Retention defaults per table type: (months in source, years in archive).
    "TYPE_DEFAULTS": {
        "FUNCTIONAL": (
            env_int("ARCHIVAL_FUNCTIONAL_MONTHS", 24),
            env_int("ARCHIVAL_FUNCTIONAL_YEARS", 10),
        ),
        "REFERENCE": (
            env_int("ARCHIVAL_REFERENCE_MONTHS", 36),
            env_int("ARCHIVAL_REFERENCE_YEARS", 7),
        ),
        "OPERATIONAL": (
            env_int("ARCHIVAL_OPERATIONAL_MONTHS", 6),
            env_int("ARCHIVAL_OPERATIONAL_YEARS", 2),
        ),
    },
}
for _alias in ARCHIVAL["STREAMING_SOURCES"]:
    if _alias not in SOURCE_DATABASES:
        raise ImproperlyConfigured(f"ARCHIVAL_STREAMING_SOURCES names unknown source {_alias!r}")
if not ALIAS_RE.match(ARCHIVAL["NAMESPACE_PREFIX"] + "x"):
    raise ImproperlyConfigured("ARCHIVAL_NAMESPACE_PREFIX must be a plain identifier prefix")
if GOVERNANCE_SCHEMA.startswith(ARCHIVAL["NAMESPACE_PREFIX"].lower()) or GOVERNANCE_SCHEMA.startswith("pg_"):
    raise ImproperlyConfigured(
        "ARCHIVAL_GOVERNANCE_SCHEMA may not start with pg_ or with ARCHIVAL_NAMESPACE_PREFIX "
        "(the archived tables' schemas)"
    )

# --- Auth, sessions, security ------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_HOURS", 1, minimum=1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_ENABLED = env_bool("AXES_ENABLED", default=True)

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
ADMINS = [("Archival admins", a) for a in env_list("ARCHIVAL_ADMIN_EMAILS", [])]
SERVER_EMAIL = env.str("SERVER_EMAIL", default="archival@localhost")
DEFAULT_FROM_EMAIL = SERVER_EMAIL

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "archival": {
            "handlers": ["console"],
            "level": env.str("ARCHIVAL_LOG_LEVEL", default="WARNING"),
        }
    },
}

# --- django-q2 (refined by the scheduling section) ---------------------------
Q_CLUSTER = {
    "name": "archival",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    # q2 kills a task at timeout; every engine task works in slices well under it.
    "timeout": env_int("Q_TIMEOUT", 600, minimum=30),
    "retry": env_int("Q_RETRY", 720, minimum=60),
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 3, minimum=1),
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
}
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured("Q_RETRY must be larger than Q_TIMEOUT")

# --- Archive search pages ----------------------------------------------------
# Read through the archive_readonly alias. Every search page query and every
# export page runs under QUERY_TIMEOUT_MS; an export stops at EXPORT_MAX_ROWS.
ARCHIVAL_SEARCH = {
    "PAGE_SIZE": env_int("ARCHIVAL_SEARCH_PAGE_SIZE", 50, minimum=1, maximum=1000),
    "QUERY_TIMEOUT_MS": env_int("ARCHIVAL_SEARCH_QUERY_TIMEOUT_MS", 5000, minimum=10, maximum=600_000),
    "EXPORT_MAX_ROWS": env_int("ARCHIVAL_SEARCH_EXPORT_MAX_ROWS", 100_000, minimum=1, maximum=10_000_000),
}

# --- SQL Server (docs/sqlserver.md) ------------------------------------------
# An mssql:// URL selects mssql-django. By default it connects through the
# bundled mssql-python driver (no Microsoft ODBC driver package to install,
# only libltdl7/libodbc2/Kerberos libraries); MSSQL_DRIVER=pyodbc uses the
# system "ODBC Driver 18 for SQL Server" instead.
MSSQL_DRIVER = env.str("MSSQL_DRIVER", default="mssql_python")
if MSSQL_DRIVER not in {"mssql_python", "pyodbc"}:
    raise ImproperlyConfigured("MSSQL_DRIVER must be 'mssql_python' or 'pyodbc'")
# The search pages' time limit on SQL Server is mssql-django's query_timeout
# (whole seconds, every statement) on the read-only alias; 0 would mean no
# limit, so it has a setting of its own with a minimum of 1 second. Default:
# the search's QUERY_TIMEOUT_MS, rounded up.
MSSQL_READONLY_QUERY_TIMEOUT = env_int(
    "MSSQL_READONLY_QUERY_TIMEOUT",
    -(-ARCHIVAL_SEARCH["QUERY_TIMEOUT_MS"] // 1000),
    minimum=1,
    maximum=600,
)
for _alias, _config in DATABASES.items():
    if _config["ENGINE"] != "mssql":
        continue
    _options = _config.setdefault("OPTIONS", {})
    if MSSQL_DRIVER == "mssql_python":
        _options.setdefault("python_driver", "mssql_python")
    # Encryption is on unless the operator says otherwise; a server with a
    # self-signed certificate (docker-compose) needs MSSQL_TRUST_SERVER_CERTIFICATE.
    _extra = [f"Encrypt={'yes' if env_bool('MSSQL_ENCRYPT', default=True) else 'no'}"]
    if env_bool("MSSQL_TRUST_SERVER_CERTIFICATE", default=False):
        if PRODUCTION:
            raise ImproperlyConfigured(
                "MSSQL_TRUST_SERVER_CERTIFICATE may not be on with ARCHIVAL_DEPLOYMENT=production"
            )
        _extra.append("TrustServerCertificate=yes")
    # MARS lets Django keep two result sets open on one pyodbc connection on
    # Linux (mssql-django turns it on only on Windows); mssql-python has none.
    if MSSQL_DRIVER == "pyodbc" and env_bool("MSSQL_MARS", default=False):
        _extra.append("MARS_Connection=yes")
    if _options.get("extra_params"):
        _extra.insert(0, _options["extra_params"])
    _options["extra_params"] = ";".join(_extra)
    _options.setdefault("connection_timeout", env_int("MSSQL_CONNECTION_TIMEOUT", 30, minimum=1))
    if _alias == "archive_readonly":
        _timeout = str(_options.setdefault("query_timeout", MSSQL_READONLY_QUERY_TIMEOUT))
        if not _timeout.isdigit() or int(_timeout) < 1:
            raise ImproperlyConfigured(
                f"archive_readonly on SQL Server: query_timeout={_timeout!r}; the search needs 1 second or more"
            )
        _options["query_timeout"] = int(_timeout)
    else:
        # 0 = no statement timeout: each procedure call moves one bounded batch.
        _options.setdefault("query_timeout", env_int("MSSQL_QUERY_TIMEOUT", 0, minimum=0))
    _options.setdefault("connection_retries", env_int("MSSQL_CONNECTION_RETRIES", 3, minimum=0))

# --- Scheduling and workers --------------------------------------------------
# Refines the base Q_CLUSTER above. Broker: the ORM broker on the control
# database unless REDIS_URL is set; worker machines that share a run must share
# the broker (one Redis, same Q_CLUSTER_NAME, same SECRET_KEY: q2 signs task
# payloads with it) and the database URLs. See docs/workers.md.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("REDIS_URL must be a redis://, rediss:// or unix:// URL")
    Q_CLUSTER.pop("orm", None)
    Q_CLUSTER["redis"] = REDIS_URL
Q_CLUSTER["name"] = env.str("Q_CLUSTER_NAME", default=Q_CLUSTER["name"])
if not ALIAS_RE.match(Q_CLUSTER["name"]):
    raise ImproperlyConfigured(
        "Q_CLUSTER_NAME must be a plain identifier (it names the Redis list and salts task signatures)"
    )
# Prefetch at most one task per worker: Redis hands tasks over without an
# acknowledgement, so whatever a killed cluster prefetched is gone (the
# sweeper re-enqueues it), and a stopping cluster runs its prefetched tasks
# before it exits.
Q_CLUSTER["queue_limit"] = env_int("Q_QUEUE_LIMIT", Q_CLUSTER["workers"], minimum=1)
Q_CLUSTER["bulk"] = 1
# Results are kept (failures always): they help diagnose a worker; the audit
# trail and run history are our own tables, never q2's.
Q_CLUSTER["save_limit"] = env_int("Q_SAVE_LIMIT", Q_CLUSTER["save_limit"], minimum=1)
Q_CLUSTER["ack_failures"] = True
Q_CLUSTER["catch_up"] = False
if not Q_CLUSTER["max_attempts"]:
    raise ImproperlyConfigured("Q_MAX_ATTEMPTS must be finite (q2 treats 0 as unlimited)")
ARCHIVAL_SCHEDULER = {
    # The weekly run; editable afterwards in the admin (django-q2 schedules).
    "RUN_CRON": env.str("ARCHIVAL_RUN_CRON", default="0 2 * * 0"),
    # Weekly reminder to compliance officers about holds past their review-by date.
    "HOLD_REVIEW_CRON": env.str("ARCHIVAL_HOLD_REVIEW_CRON", default="0 7 * * 1"),
    # The pump/sweeper: enqueues waiting tables, re-enqueues lost ones, alerts.
    "SWEEP_MINUTES": env_int("ARCHIVAL_SWEEP_MINUTES", 1, minimum=1, maximum=60),
    # A slice never gets more than this share of the q2 timeout.
    "MAX_SLICE_SECONDS": Q_CLUSTER["timeout"] // 2,
    # /healthz and `archival status --check`: a completed run older than this is a warning.
    "MAX_RUN_AGE_DAYS": env_int("ARCHIVAL_MAX_RUN_AGE_DAYS", 8, minimum=1),
    # Whether a django-q2 cluster runs the schedule here. A deployment that
    # archives from a CronJob (deploy/cronjob.yaml) sets it false, so health
    # does not report workers it never had as down.
    "WORKERS": env_bool("ARCHIVAL_WORKERS", default=True),
}
# Every statement of a slice is bounded, so a slice ends (cleanly, its batch
# rolled back) before q2 kills the task and no process waits past its lease
# (docs/workers.md, "Bounded waits"). A lock wait gives up after
# ARCHIVAL_LOCK_TIMEOUT_MS (PostgreSQL lock_timeout, MariaDB
# innodb_lock_wait_timeout, SQLite busy timeout, SQL Server LOCK_TIMEOUT: the
# procedures take it as @lock_timeout_ms); any statement after
# ARCHIVAL_STATEMENT_TIMEOUT_MS. By default a statement gets a third of what
# the q2 timeout leaves after the slice's time box, and at most half a lease.
_statement_budget_ms = (Q_CLUSTER["timeout"] - ARCHIVAL_SCHEDULER["MAX_SLICE_SECONDS"]) * 1000
ARCHIVAL["STATEMENT_TIMEOUT_MS"] = env_int(
    "ARCHIVAL_STATEMENT_TIMEOUT_MS",
    min(_statement_budget_ms // 3, ARCHIVAL["LEASE_SECONDS"] * 500),
    minimum=1000,
    maximum=_statement_budget_ms // 2,
)
ARCHIVAL_LOCK_TIMEOUT_MS = env_int(
    "ARCHIVAL_LOCK_TIMEOUT_MS", min(5000, ARCHIVAL["STATEMENT_TIMEOUT_MS"]), minimum=1, maximum=600_000
)
if ARCHIVAL_LOCK_TIMEOUT_MS > ARCHIVAL["STATEMENT_TIMEOUT_MS"]:
    raise ImproperlyConfigured("ARCHIVAL_LOCK_TIMEOUT_MS must not exceed ARCHIVAL_STATEMENT_TIMEOUT_MS")
# Batches in a row that may time out waiting for locks (each retry with half
# the rows) before the table is left waiting, with that reason, for the
# sweeper (after LOCK_COOLDOWN_SECONDS) or an `archival resume`.
ARCHIVAL["LOCK_RETRIES"] = env_int("ARCHIVAL_LOCK_RETRIES", 4, minimum=1, maximum=20)
ARCHIVAL["LOCK_COOLDOWN_SECONDS"] = env_int("ARCHIVAL_LOCK_COOLDOWN_SECONDS", 60, minimum=0)
if ARCHIVAL["STATEMENT_TIMEOUT_MS"] > ARCHIVAL["LEASE_SECONDS"] * 500:
    raise ImproperlyConfigured(
        "ARCHIVAL_STATEMENT_TIMEOUT_MS must be at most half of ARCHIVAL_LEASE_SECONDS: "
        "a statement must end (and the lease be renewed) before the lease can expire"
    )
# Worker processes write a heartbeat this often; three missed beats mark a
# worker dead, on any machine (archival.heartbeat, docs/workers.md).
ARCHIVAL["HEARTBEAT_SECONDS"] = env_int("ARCHIVAL_HEARTBEAT_SECONDS", 10, minimum=1, maximum=300)
for _key in ("RUN_CRON", "HOLD_REVIEW_CRON"):
    if not croniter.is_valid(ARCHIVAL_SCHEDULER[_key]):
        raise ImproperlyConfigured(f"ARCHIVAL_{_key}={ARCHIVAL_SCHEDULER[_key]!r} is not a cron expression")

# --- Governance admin --------------------------------------------------------
# django-import-export lets every staff user import and export by default;
# require a permission named after the action instead. No role holds an
# "import_*" or "export_*" permission except where an admin says so
# (TableConfigAdmin: add+change to import, view to export; the audit trail's
# own export checks governance.export_auditevent).
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "import"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "export"
# Imports run in one transaction: a bad row rolls every row back.
IMPORT_EXPORT_USE_TRANSACTIONS = True
# Formula escaping on export is governance.spreadsheet's (SafeCSV, SafeXLSX:
# the full OWASP set, a leading apostrophe), the one rule of every export. The
# library's own switch stays off: it deletes a leading "=" (data lost), misses
# + - @ tab CR, and turns every empty cell into the text "None".
# `manage.py export` takes our format by path: governance.spreadsheet.SafeCSV.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False
# Reverting a config from its history would skip the schema check's audit trail.
SIMPLE_HISTORY_REVERT_DISABLED = True

# --- Disposal review policy (docs/disposal.md) -------------------------------
# Approvals by distinct people (never the planner) before a disposal batch of
# each table type may execute; 0 means automatic. Validated when used
# (archival.disposal.policy): a missing or malformed entry refuses to plan.
ARCHIVAL_DISPOSAL_POLICY = {
    "OPERATIONAL": env_int("ARCHIVAL_DISPOSAL_APPROVALS_OPERATIONAL", 0, minimum=0, maximum=5),
    "REFERENCE": env_int("ARCHIVAL_DISPOSAL_APPROVALS_REFERENCE", 1, minimum=0, maximum=5),
    "FUNCTIONAL": env_int("ARCHIVAL_DISPOSAL_APPROVALS_FUNCTIONAL", 2, minimum=0, maximum=5),
}

# --- Disposal on the workers -------------------------------------------------
# The weekly schedule "archival: weekly disposal" (archival.tasks.scheduled_disposal)
# plans disposal and executes approved batches, SchedulerSettings.dispose_concurrency
# at a time; by default Sunday 05:00, after the weekly run.
ARCHIVAL_SCHEDULER["DISPOSAL_CRON"] = env.str("ARCHIVAL_DISPOSAL_CRON", default="0 5 * * 0")
if not croniter.is_valid(ARCHIVAL_SCHEDULER["DISPOSAL_CRON"]):
    raise ImproperlyConfigured(
        f"ARCHIVAL_DISPOSAL_CRON={ARCHIVAL_SCHEDULER['DISPOSAL_CRON']!r} is not a cron expression"
    )
