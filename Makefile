PYTHON ?= .venv/bin/python

# --- Benchmarks and fault injection (bench/; see bench/RESULTS.md) -----------
# bench: the side-by-side run, small size (1,000,000 rows, 120 tables), every
# engine reachable here; prints the engine/ceiling ratio table, writes JSON
# and a chart to bench/results/. Needs requirements-bench.txt; MariaDB and
# pt-archiver need bench/install_mariadb_deps.sh and bench/install_pt_archiver.sh.
.PHONY: bench bench-large bench-scaling chaos
bench:
	$(PYTHON) bench/run.py --size small --no-phases

bench-large:
	$(PYTHON) bench/run.py --size large --engines postgresql --topologies same stream --no-phases

bench-scaling:
	$(PYTHON) bench/run.py --scaling

chaos:
	$(PYTHON) bench/chaos.py --trials $${CHAOS_TRIALS:-200}
