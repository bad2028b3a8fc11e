#!/usr/bin/env bash
# System libraries the MariaDB driver (mysqlclient) compiles against, then the
# driver itself. Optional: `make demo` needs none of this. Debian/Ubuntu, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if ! dpkg -s libmariadb-dev pkg-config >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libmariadb-dev
fi
"$PY" -m pip install -q -r requirements-mariadb.txt
