#!/usr/bin/env bash
# PostgreSQL's server binaries (Debian's `postgresql` package) for the multi-worker tests: each
# test run creates its own cluster in a temporary folder on 127.0.0.1 and stops it (a cluster
# the package itself may start on port 5432 is not used). Idempotent: does nothing when initdb
# is already installed. Needs root (as on CI) or sudo.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
apt_install postgresql
ls /usr/lib/postgresql/*/bin/initdb
