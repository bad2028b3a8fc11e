# Targets the README names. Every target creates what it needs (.venv, packages).
PYTHON_SYS ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
VENV_BASE := $(VENV)/.installed-base
VENV_DEV := $(VENV)/.installed-dev
DEMO_DIR ?= $(CURDIR)/data
# PostgreSQL leg: control database, one database for the archive and two sources
# (same server: schemas, one transaction per batch), and SourceDB3 in a database
# of its own (another server as far as the engine knows: streamed batches).
PG_URL ?= postgres://postgres@127.0.0.1:5432
PG_CONTROL ?= archival_ci_control
PG_DATA ?= archival_ci_data
PG_SRC3 ?= archival_ci_src3
PG_ENV = ARCHIVAL_DATA_DIR=$(CURDIR)/data/test-pg \
	DATABASE_URL=$(PG_URL)/$(PG_CONTROL) ARCHIVE_DATABASE_URL=$(PG_URL)/$(PG_DATA) \
	SOURCEDB1_DATABASE_URL=$(PG_URL)/$(PG_DATA) SOURCEDB2_DATABASE_URL=$(PG_URL)/$(PG_DATA) \
	SOURCEDB3_DATABASE_URL=$(PG_URL)/$(PG_SRC3) \
	ARCHIVE_READONLY_DATABASE_URL=postgres://archive_reader@127.0.0.1:5432/$(PG_DATA)

.PHONY: demo demo-disposal serve test test-pg test-mariadb test-full lint format clean

$(VENV_BASE): requirements.txt
	test -x $(PYTHON) || $(PYTHON_SYS) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

$(VENV_DEV): $(VENV_BASE) requirements-dev.txt
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	touch $@

# The main job on the embedded default (SQLite files under data/): migrate,
# build the demo topology once, archive, show the status. Run it again: it
# archives nothing new and says so.
demo: $(VENV_BASE)
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py migrate -v0
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py migrate --database archive -v0
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py canonicalize_hold_keys -v0
	test -f $(DEMO_DIR)/.demo-built || (ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py build_demo && touch $(DEMO_DIR)/.demo-built)
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py archival run
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py archival status

# A disposal cycle on the demo archive: a hold protects rows, a certificate is printed.
demo-disposal: demo
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py demo_disposal

# The admin and the search pages of the demo (or any data dir) on one URL, static
# files served by the app (whitenoise), DEBUG off. Stop with Ctrl-C.
SERVE_ADDR ?= 127.0.0.1:8000
serve: $(VENV_BASE)
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py migrate -v0
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py migrate --database archive -v0
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py collectstatic --noinput -v0
	@echo ""
	@echo "Serving http://$(SERVE_ADDR)/  (admin: http://$(SERVE_ADDR)/admin/, search: http://$(SERVE_ADDR)/search/)"
	@echo "First user of each role (in another shell; asks for a password, or add --generate-password):"
	@echo "  ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py create_role_user alice --role compliance"
	@echo "  ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py create_role_user bob --role administrator"
	@echo "  ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py create_role_user carol --role auditor"
	@echo "  ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py create_role_user dave --role reader"
	@echo ""
	ARCHIVAL_DATA_DIR=$(DEMO_DIR) $(PYTHON) manage.py runserver --noreload $(SERVE_ADDR)

# The whole suite on SQLite (CI sizes for the slow suites).
test: $(VENV_DEV)
	rm -rf data/test-sqlite && mkdir -p data/test-sqlite/test
	ARCHIVAL_DATA_DIR=$(CURDIR)/data/test-sqlite $(PYTHON) -m pytest

# The same suite on PostgreSQL (127.0.0.1:5432, user postgres).
test-pg: $(VENV_DEV)
	rm -rf data/test-pg && mkdir -p data/test-pg/test
	# The cluster tests bring their own SQLite and PostgreSQL sites, the CI
	# chaos test its own SQLite and PostgreSQL data sets, the SQL Server
	# checks parse files, and the browser tests drive pages the other admin
	# and search tests cover on PostgreSQL: all ran in the SQLite leg already.
	$(PG_ENV) $(PYTHON) -m pytest --ignore=tests/test_workers_clusters.py --ignore=tests/test_bench_chaos.py \
		--ignore=tests/test_admin_browser.py --ignore=tests/test_search_browser.py --ignore=tests/test_pages_browser.py \
		--ignore=tests/test_mssql_sql.py --ignore=tests/test_mssql_dry_run.py --ignore=tests/test_mssql_deploy.py

# The engine's invariant and crash tests (archival and restore), the scheduler-settings
# migration, the DELETE-refusing triggers and disposal (review, refusals, retention
# changes, a killed executor, the workers, the admin, the property suite) and the hold
# check's forms on MariaDB (127.0.0.1:3306, root):
# control, archive and the three sources as databases on the server.
MY_URL ?= mysql://root@127.0.0.1:3306
# Database names on the server; another prefix lets two checkouts test at once.
# The archive namespaces are databases of the server too (archive_sourcedb1 ...):
# they take the prefix as well, or two checkouts drop each other's archive tables.
MY_PREFIX ?= archival_ci
test-mariadb: $(VENV_DEV)
	$(PYTHON) -m pip install -q -r requirements-mariadb.txt
	rm -rf data/test-mariadb && mkdir -p data/test-mariadb/test
	ARCHIVAL_DATA_DIR=$(CURDIR)/data/test-mariadb ARCHIVAL_NAMESPACE_PREFIX=$(MY_PREFIX)_archive_ \
	DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_control ARCHIVE_DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_data \
	ARCHIVE_READONLY_DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_data SOURCEDB1_DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_src1 \
	SOURCEDB2_DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_src2 SOURCEDB3_DATABASE_URL=$(MY_URL)/$(MY_PREFIX)_src3 \
	$(PYTHON) -m pytest tests/test_engine_invariants.py tests/test_engine_crash.py tests/test_engine_no_rows_in_python.py \
		tests/test_restore_crash.py tests/test_migrations_scheduler_singleton.py tests/test_governance_delete_triggers.py \
		tests/test_archive_reshape.py tests/test_disposal_review.py tests/test_disposal_refusal_counts.py \
		tests/test_disposal_retention_changes.py tests/test_disposal_crash.py tests/test_disposal_workers.py \
		tests/test_disposal_admin.py tests/test_disposal_property.py tests/test_hold_coverage.py

# Full sizes of the slow suites (crash trials, property examples).
test-full: $(VENV_DEV)
	rm -rf data/test-sqlite && mkdir -p data/test-sqlite/test
	ARCHIVAL_DATA_DIR=$(CURDIR)/data/test-sqlite CRASH_TRIALS=25 DISPOSAL_HYPOTHESIS_PROFILE=full CHAOS_TRIALS=50 $(PYTHON) -m pytest

lint: $(VENV_DEV)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	$(PYTHON) -m sqlfluff lint sql/

format: $(VENV_DEV)
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench-deps: $(VENV_DEV)
	$(PYTHON) -m pip install -q -r requirements-bench.txt

# The MariaDB race: its driver (and the system library it builds against) and
# pt-archiver; apt-get as root where they are missing, nothing otherwise.
bench-mariadb-deps: $(VENV_DEV)
	PYTHON=$(PYTHON) bash bench/install_mariadb_deps.sh
	bash bench/install_pt_archiver.sh

# The real install and a run on the docker-compose SQL Server 2019 (needs
# Docker; no SQL Server runs on the development machines, so this target has
# never been run there). The DBA (sa, in the throwaway container only) runs
# sql/00-07 with sqlcmd -b, `migrate` for both databases, then sql/08-10;
# everything after that runs as the runtime login or as the reader, never
# as sa: the permission design is what is being tested.
MSSQL_HOST = 127.0.0.1:1433
MSSQL_APP = mssql://archival_app:App-Passw0rd-Local@$(MSSQL_HOST)
MSSQL_READER = mssql://archival_reader:Reader-Passw0rd-Local@$(MSSQL_HOST)
MSSQL_APP_ENV = DATABASE_URL=$(MSSQL_APP)/ArchivalControl ARCHIVE_DATABASE_URL=$(MSSQL_APP)/ArchivalArchive \
	ARCHIVE_READONLY_DATABASE_URL=$(MSSQL_READER)/ArchivalArchive \
	SOURCEDB1_DATABASE_URL=$(MSSQL_APP)/SourceDB1 SOURCEDB2_DATABASE_URL=$(MSSQL_APP)/SourceDB2 \
	SOURCEDB3_DATABASE_URL=$(MSSQL_APP)/SourceDB3 \
	MSSQL_TRUST_SERVER_CERTIFICATE=true ARCHIVAL_DATA_DIR=$(CURDIR)/data/mssql-test
test-mssql: $(VENV_DEV)
	docker compose up -d --wait mssql
	docker compose run --rm sql-init
	docker compose run --rm migrate
	docker compose run --rm sql-finish
	mkdir -p data/mssql-test
	# As the runtime login: the weekly cycle on the configured tables (import
	# governance/fixtures/demo_table_configs.csv with schema dbo in the admin
	# first, or the cycle has nothing to do), end to end.
	$(MSSQL_APP_ENV) $(PYTHON) manage.py check --database default --database archive
	$(MSSQL_APP_ENV) $(PYTHON) manage.py archival plan
	$(MSSQL_APP_ENV) $(PYTHON) manage.py archival run
	$(MSSQL_APP_ENV) $(PYTHON) manage.py archival status
	# As the reader: the search catalog reads, and a write is refused.
	$(MSSQL_APP_ENV) $(PYTHON) manage.py shell -c "from archival.search.catalog import archived_table_names as n; \
		print(n('SourceDB1')); from django.db import connections, DatabaseError; c = connections['archive_readonly'].cursor(); \
		exec('try:\\n c.execute(\"DELETE FROM dbo.governance_hold\")\\n raise SystemExit(\"reader could delete\")\\nexcept DatabaseError as e:\\n print(\"refused:\", e)')"
	# The SQL Server test files, with the app and reader URLs in the environment.
	$(MSSQL_APP_ENV) $(PYTHON) -m pytest -p no:cacheprovider tests/test_mssql_sql.py tests/test_mssql_deploy.py

clean:
	rm -rf data/test-sqlite data/test-pg

# --- Benchmarks and fault injection (bench/; see bench/RESULTS.md) -----------
# bench: the side-by-side run, small size, both data sets (single: 1,000,000
# Position rows, PERFORMANCE.md's measurement; tables120: 1,000,000 rows in
# 120 tables), every engine reachable here. The yardstick is the plain ceiling
# (source columns and primary key only); the engine's ratio to it comes first,
# then its ratio to the same-shape ceiling (our archive table shape: the
# engine's overhead alone), and pt-archiver on MariaDB. Writes JSON and a chart
# per data set to bench/results/. Installs requirements-bench.txt, the MariaDB
# driver and pt-archiver first (bench-mariadb-deps); an engine whose server is
# not reachable is reported and skipped, the others still measured.
.PHONY: bench-deps bench-mariadb-deps bench bench-large bench-scaling bench-workers bench-oltp bench-disposal chaos
# BENCH_REPEAT=3: each setup's engine and yardsticks run three rounds (median per-round ratios).
BENCH_REPEAT ?= 1
bench: $(VENV_DEV) bench-deps bench-mariadb-deps
	$(PYTHON) bench/run.py --dataset single tables120 --size small --no-phases --repeat $(BENCH_REPEAT)

bench-large: $(VENV_DEV) bench-deps
	$(PYTHON) bench/run.py --dataset tables120 --size large --engines postgresql --topologies same stream --no-phases

bench-scaling: $(VENV_DEV) bench-deps
	$(PYTHON) bench/run.py --scaling

# bench-workers: the scheduled run (django-q2 fan-out, Redis broker) on 1, 2 and 4
# workers, PostgreSQL; BENCH_WORKERS_SIZE=large for 12,000,000 rows.
bench-workers: $(VENV_DEV) bench-deps
	$(PYTHON) bench/sched_workers.py --size $${BENCH_WORKERS_SIZE:-small} --workers 1 2 4 --reuse --keep

# bench-oltp: what an archival run costs an operational load beside it (issue 30):
# a fixed-rate read/update/insert mix on Position and Trade from a second
# process, before and during `manage.py archival run`, on every engine reachable
# here (3,000,000 rows; about 12 min); load latency percentiles, errors and lock waits
# on both sides, the engine's rows/s against the plain ceiling. BENCH_OLTP_ARGS
# adds options, e.g. "--engines postgresql --variant nopacing:pacing_enabled=false".
bench-oltp: $(VENV_DEV) bench-deps bench-mariadb-deps
	$(PYTHON) bench/oltp.py $(BENCH_OLTP_ARGS)

# bench-disposal: disposal at scale on PostgreSQL (docs/disposal.md, "Disposal at
# scale"): an archive with 25% expired rows and 1,000 holds of mixed scopes, the
# engine's plan + execute against a DBA's batched DELETE of the same rows,
# alternated on fresh copies. CI size by default (2,000,000 rows, 3 pairs, a few
# minutes); BENCH_DISPOSAL_ROWS=20000000 for the full size (build about 15 min).
BENCH_DISPOSAL_ROWS ?= 2000000
BENCH_DISPOSAL_PAIRS ?= 3
bench-disposal: $(VENV_DEV) bench-deps
	$(PYTHON) bench/disposal_scale.py --rows $(BENCH_DISPOSAL_ROWS) --pairs $(BENCH_DISPOSAL_PAIRS)

chaos: $(VENV_DEV)
	$(PYTHON) bench/chaos.py --trials $${CHAOS_TRIALS:-200}
