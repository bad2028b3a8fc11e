#!/usr/bin/env bash
# pt-archiver (Debian's percona-toolkit) and its Perl MySQL driver, for the
# MariaDB race in bench/run.py. Debian/Ubuntu, as root.
set -euo pipefail
if ! command -v pt-archiver >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq percona-toolkit libdbd-mysql-perl
fi
pt-archiver --version
