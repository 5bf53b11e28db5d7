#!/usr/bin/env bash
# Soak: three castellan nodes behind HAProxy on a throwaway PostgreSQL,
# mixed client load for a while (default 10 minutes), printing RSS per
# node, open database connections, open file descriptors and errors at
# intervals, then a summary. Off by default in CI (it is not a suite).
#
# Usage: scripts/soak.sh [--duration 10m] [--interval 30s] [--workers 4]
# Environment: CASTELLAN_TEST_BIN (a built castellan; default: cargo build
# --release --bin castellan), CASTELLAN_TEST_PG_BIN (PostgreSQL binaries).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/suites/lib.sh
source scripts/suites/lib.sh

ensure_apt haproxy haproxy
ensure_pip requests requests
ensure_pip pyotp pyotp

if [ -z "${CASTELLAN_TEST_PG_BIN:-}" ]; then
    found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -type f 2>/dev/null \
        | sort -V | tail -n 1)
    [ -n "$found" ] || suite_die "PostgreSQL server binaries missing (apt-get install postgresql)"
    export CASTELLAN_TEST_PG_BIN=$(dirname "$found")
fi
if [ "$(id -u)" -eq 0 ] && [ -z "${CASTELLAN_TEST_PG_USER:-}" ]; then
    # PostgreSQL refuses to run as root.
    if getent passwd postgres >/dev/null 2>&1; then
        export CASTELLAN_TEST_PG_USER=postgres
    else
        export CASTELLAN_TEST_PG_USER=castellan-test
        getent passwd castellan-test >/dev/null 2>&1 \
            || useradd --system --no-create-home --shell /usr/sbin/nologin castellan-test
    fi
fi
if [ -z "${CASTELLAN_TEST_BIN:-}" ]; then
    suite_step "cargo build --release --bin castellan"
    cargo build --release --locked --bin castellan
    export CASTELLAN_TEST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/castellan"
fi

exec python3 tests/nodes/soak.py "$@"
