#!/usr/bin/env bash
# castellan's comparison benchmark (issue 17): castellan beside a bare axum
# endpoint, minimal rusqlite and sqlx-postgres session checks, and
# better-auth on SQLite, all built or installed here and measured in one run.
# Prints the seven target ratios (medians of BENCH_ROUNDS rounds) and the
# p50/p99 of every phase; writes bench/results/latest.json and latest.md.
#
# Usage: bench/run.sh
#   BENCH_BEFORE_BIN=/path/to/old/castellan  also measures that binary first,
#     with the same driver and comparison targets (bench/results/before.*);
#     BENCH_BEFORE_COMMIT names its commit in the report
#   BENCH_SKIP_BUILD=1  use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_BIN, BENCH_HASH_COST  other castellan and hash_cost binaries to measure
#   Short trial: BENCH_USERS=5000 BENCH_BIG=100000 BENCH_ROUNDS=3 BENCH_DURATION=3
#   Other settings (rounds, durations, connections, BENCH_SKIP): bench/driver.py.
#
# The machine is shared (other builds, other agents): the driver runs the
# servers and wrk at nice -10 in a session of their own, but expect noise;
# compare ratios from one run, not numbers across runs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$CARGO_TARGET_DIR/release

step() { printf '==> %s\n' "$*"; }

# With autogroup scheduling niceness only counts inside a session: run in a
# session of our own whose group gets the raised priority (as root).
if [ "$(id -u)" -eq 0 ] && [ "${BENCH_OWN_SESSION:-0}" != 1 ] && command -v setsid >/dev/null 2>&1 \
    && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
    BENCH_OWN_SESSION=1 exec setsid --wait "$ROOT/bench/run.sh" "$@"
fi
if [ "${BENCH_OWN_SESSION:-0}" = 1 ]; then
    printf '%s\n' "${BENCH_NICE:--10}" >/proc/self/autogroup 2>/dev/null || true
fi

# ------------------------------------------------------------- tools
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v g++ >/dev/null 2>&1 || need+=(g++ make)
command -v python3 >/dev/null 2>&1 || need+=(python3)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
    step "apt-get install ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi

# better-auth with better-sqlite3 12 (13 crashes on Node 20). The native
# module is compiled against the local Node headers if no prebuilt fits.
if [ ! -f bench/better-auth/node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
    step "npm install (bench/better-auth)"
    (cd bench/better-auth && npm_config_nodedir=${npm_config_nodedir:-/usr} npm install --no-audit --no-fund \
        && npm_config_nodedir=${npm_config_nodedir:-/usr} npm rebuild better-sqlite3)
fi

# ------------------------------------------------------------- builds
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    # Two builds: the example pulls in the dev-dependencies, whose test-hooks
    # feature must not reach the castellan binary being measured.
    step "cargo build --release (hash_cost, then castellan)"
    cargo build --release --example hash_cost
    cargo build --release --bin castellan
    step "cargo build --release (bench/targets: bare, sqlite_check, pg_check)"
    cargo build --release --manifest-path bench/targets/Cargo.toml --bins
fi
for b in castellan examples/hash_cost bare sqlite_check pg_check; do
    [ -x "$REL/$b" ] || { echo "missing $REL/$b" >&2; exit 1; }
done

# ------------------------------------------------------------- measure
if [ -n "${BENCH_BEFORE_BIN:-}" ]; then
    step "measuring the earlier binary $BENCH_BEFORE_BIN"
    BENCH_BIN=$BENCH_BEFORE_BIN BENCH_LABEL=${BENCH_BEFORE_LABEL:-before} \
        BENCH_COMMIT=${BENCH_BEFORE_COMMIT:-$BENCH_BEFORE_BIN} \
        BENCH_JSON=bench/results/before.json BENCH_MD=bench/results/before.md \
        python3 bench/driver.py
fi
step "measuring ${BENCH_BIN:-$REL/castellan}"
BENCH_BIN=${BENCH_BIN:-$REL/castellan} python3 bench/driver.py
