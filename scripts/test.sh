#!/usr/bin/env bash
# castellan test command: lint gates, throwaway PostgreSQL cluster, test suite.
#
# Usage: scripts/test.sh [extra args passed to the test runner, e.g. a filter]
#
# Environment:
#   CI=true                         use the nextest `ci` profile
#   CASTELLAN_TEST_SKIP_GATES=1     skip fmt / clippy / source gates (local use)
#   CASTELLAN_TEST_ONLY_PG_SMOKE=1  only start PostgreSQL, run a smoke query, stop
#   CASTELLAN_TEST_SKIP_CARGO=1     skip the cargo tests (run only suites, e.g. with CASTELLAN_TEST_SUITES)
#   CASTELLAN_TEST_SUITES="a b"     run only these suites of scripts/suites/ (by name without
#                                   the number and .sh; "none" runs none). Default: all of
#                                   them, or none when test-runner arguments were given.
#
# Exports for the tests:
#   CASTELLAN_TEST_PG_URL   postgres://castellan_admin:PASSWORD@127.0.0.1:PORT/postgres?sslmode=disable
#   CASTELLAN_TEST_PG_BIN   directory holding initdb/pg_ctl/postgres (e.g. /usr/lib/postgresql/15/bin)
#   CASTELLAN_TEST_PG_USER  unprivileged user that runs PostgreSQL when root, else empty
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Disk is finite on CI machines (a run once died of "No space left on device"
# in PostgreSQL), so the log says what the run takes: free space as it goes.
disk_note() {
    local where
    where=$(df -h --output=avail,target "${CARGO_TARGET_DIR:-$PWD}" /tmp 2>/dev/null \
        | awk 'NR > 1 && !seen[$2]++ { printf "%s%s free on %s", sep, $1, $2; sep = ", " }')
    step "disk ($1): ${where:-unknown}"
}
disk_note "start"

# A fresh machine gains nothing from incremental compilation, which would
# write gigabytes of caches next to the build; local runs keep it.
if [ "${CI:-}" = true ] && [ -z "${CARGO_INCREMENTAL:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

IS_ROOT=0
if [ "$(id -u)" -eq 0 ]; then IS_ROOT=1; fi

# ---------------------------------------------------------------- prerequisites
find_pg_bin() {
    local preferred=/usr/lib/postgresql/15/bin
    if [ -x "$preferred/initdb" ]; then
        printf '%s\n' "$preferred"
        return 0
    fi
    local found
    found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -type f 2>/dev/null \
        | sort -V | tail -n 1)
    if [ -n "$found" ]; then
        dirname "$found"
        return 0
    fi
    return 1
}

missing_pkgs=()
PG_BIN=$(find_pg_bin || true)
if [ -z "$PG_BIN" ]; then missing_pkgs+=(postgresql); fi
if ! command -v openssl >/dev/null 2>&1; then missing_pkgs+=(openssl); fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    if [ "$IS_ROOT" -ne 1 ]; then
        die "missing ${missing_pkgs[*]} (PostgreSQL server binaries /usr/lib/postgresql/*/bin/initdb" \
            "and openssl are required); install with: sudo apt-get install -y ${missing_pkgs[*]}  (or run this script as root)"
    fi
    step "installing ${missing_pkgs[*]} with apt-get"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
    PG_BIN=$(find_pg_bin || true)
    [ -n "$PG_BIN" ] || die "PostgreSQL installed but no /usr/lib/postgresql/*/bin/initdb found"
    command -v openssl >/dev/null 2>&1 || die "openssl still missing after install"
fi
PG_VERSION=$(basename "$(dirname "$PG_BIN")")

# pyotp: an independent TOTP implementation the MFA tests check castellan against.
if ! python3 -c 'import pyotp' >/dev/null 2>&1; then
    step "installing pyotp (independent TOTP implementation for the tests)"
    python3 -m pip install --quiet --disable-pip-version-check pyotp \
        || die "cannot install pyotp with pip; the MFA cross-check needs it"
fi
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    step "installing aiosmtpd (SMTP server for the mail tests)"
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd \
        || die "cannot install aiosmtpd with pip; the SMTP mail tests need it"
fi

# ------------------------------------------------------------------------ gates
run_gates() {
    step "cargo fmt --all -- --check"
    cargo fmt --all -- --check

    local locked=()
    if [ -f Cargo.lock ]; then locked=(--locked); fi
    step "cargo clippy --all-targets ${locked[*]} -- -D warnings"
    cargo clippy --all-targets "${locked[@]}" -- -D warnings

    step "source gate (src/)"
    local bad=0 hits
    hits=$(grep -rnIE '\b(TODO|FIXME|XXX|HACK)\b|\btodo!\(|\bunimplemented!\(|\bdbg!\(' src || true)
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" >&2
        printf 'source gate: TODO/FIXME/XXX/HACK, todo!(), unimplemented!() or dbg!() in src/\n' >&2
        bad=1
    fi
    hits=$(grep -rnIE '\be?print(ln)?!' src | grep -v '^src/cli_output\.rs:' || true)
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" >&2
        printf 'source gate: print!/println!/eprint!/eprintln! outside src/cli_output.rs\n' >&2
        bad=1
    fi
    [ "$bad" -eq 0 ] || exit 1
}

if [ "${CASTELLAN_TEST_ONLY_PG_SMOKE:-0}" != 1 ] && [ "${CASTELLAN_TEST_SKIP_GATES:-0}" != 1 ]; then
    run_gates
fi

# ------------------------------------------------------- throwaway PostgreSQL
PG_USER=""
if [ "$IS_ROOT" -eq 1 ]; then
    if getent passwd postgres >/dev/null 2>&1; then
        PG_USER=postgres
    else
        PG_USER=castellan-test
        if ! getent passwd "$PG_USER" >/dev/null 2>&1; then
            step "creating system user $PG_USER"
            useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
        fi
    fi
    PG_TMP=$(mktemp -d /tmp/castellan-pg.XXXXXX)
else
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/castellan-pg.XXXXXX")
fi
PG_DATA="$PG_TMP/data"
PG_SOCK="$PG_TMP/sock"
PG_LOG="$PG_TMP/postgres.log"
PG_STARTED=0

# Run a PostgreSQL tool as the cluster owner, from a directory it can read.
as_pg() {
    if [ -n "$PG_USER" ]; then
        (cd "$PG_TMP" && runuser -u "$PG_USER" -- "$@")
    else
        (cd "$PG_TMP" && "$@")
    fi
}

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$PG_STARTED" -eq 1 ] || [ -f "$PG_DATA/postmaster.pid" ]; then
        if [ "$rc" -ne 0 ] && [ -s "$PG_LOG" ]; then
            printf '==> last 50 lines of the PostgreSQL log (%s)\n' "$PG_LOG" >&2
            tail -n 50 "$PG_LOG" >&2
        fi
        step "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1
        if [ -f "$PG_DATA/postmaster.pid" ]; then
            # pg_ctl could not stop it: kill our own postmaster by its pid file.
            local pid
            pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)
            if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -KILL "$pid" 2>/dev/null; sleep 1; fi
        fi
    elif [ "$rc" -ne 0 ] && [ -s "$PG_LOG" ]; then
        tail -n 50 "$PG_LOG" >&2
    fi
    rm -rf "$PG_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PASSWORD=$(openssl rand -hex 16)
mkdir -p "$PG_SOCK"
( umask 077; printf '%s\n' "$PG_PASSWORD" >"$PG_TMP/pwfile" )
if [ -n "$PG_USER" ]; then chown -R "$PG_USER:" "$PG_TMP"; fi
chmod 700 "$PG_TMP" "$PG_SOCK"

step "initdb (PostgreSQL $PG_VERSION) in $PG_DATA${PG_USER:+ as $PG_USER}"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" --username=castellan_admin --pwfile="$PG_TMP/pwfile" \
    --auth=scram-sha-256 -E UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }
rm -f "$PG_TMP/pwfile"
cat >"$PG_DATA/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
HBA
if [ -n "$PG_USER" ]; then chown "$PG_USER:" "$PG_DATA/pg_hba.conf"; fi
chmod 600 "$PG_DATA/pg_hba.conf"

port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
    fi
    # Fallback / double check: can we connect to it?
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Every CREATE DATABASE writes its template (about 8 MB) to the WAL; a small
# max_wal_size recycles those segments at checkpoints instead of keeping 1 GB.
PG_SPACE_SETTINGS="-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=96MB -c min_wal_size=32MB"

PG_PORT=""
port=55432
attempts=0
while [ "$attempts" -lt 10 ] && [ "$port" -lt 65535 ]; do
    if port_in_use "$port"; then
        port=$((port + 1))
        continue
    fi
    attempts=$((attempts + 1))
    step "starting PostgreSQL $PG_VERSION on 127.0.0.1:$port"
    if as_pg "$PG_BIN/pg_ctl" -w -t 60 -D "$PG_DATA" -l "$PG_LOG" \
        -o "-p $port -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off $PG_SPACE_SETTINGS" \
        start >/dev/null; then
        PG_PORT=$port
        PG_STARTED=1
        break
    fi
    printf 'PostgreSQL did not start on port %s, trying the next one\n' "$port" >&2
    port=$((port + 1))
done
[ -n "$PG_PORT" ] || die "could not start PostgreSQL (see log above)"

export CASTELLAN_TEST_PG_URL="postgres://castellan_admin:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/postgres?sslmode=disable"
export CASTELLAN_TEST_PG_BIN="$PG_BIN"
export CASTELLAN_TEST_PG_USER="$PG_USER"

if [ "${CASTELLAN_TEST_ONLY_PG_SMOKE:-0}" = 1 ]; then
    step "PostgreSQL smoke test"
    "$PG_BIN/psql" "$CASTELLAN_TEST_PG_URL" -v ON_ERROR_STOP=1 -X -q -t -c 'select version()'
    "$PG_BIN/psql" "$CASTELLAN_TEST_PG_URL" -v ON_ERROR_STOP=1 -X -q -c 'CREATE DATABASE smoke_x'
    step "smoke test passed"
    exit 0
fi

# ------------------------------------------------------------------------ tests
locked=()
if [ -f Cargo.lock ]; then locked=(--locked); fi

# The security grade reads nextest's JUnit report, so a machine without
# cargo-nextest gets it from crates.io (once; it lands in cargo's bin folder).
if ! cargo nextest --version >/dev/null 2>&1; then
    step "cargo install cargo-nextest --locked (the grade reads its JUnit reports)"
    cargo install cargo-nextest --locked \
        || printf 'could not install cargo-nextest: a whole run will have no report to grade\n'
fi
if cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo nextest run --workspace --all-targets --no-fail-fast)
    if [ "${CI:-}" = true ]; then runner+=(--profile ci); fi
else
    printf 'cargo-nextest not available, falling back to cargo test\n'
    runner=(cargo test --workspace --all-targets --no-fail-fast)
fi
runner+=("${locked[@]}" "$@")

# A whole run grades only its own results: reports left by an earlier run
# (another nextest profile, a filtered run, a suite that failed then) would
# otherwise count toward or against this run's security grade.
NEXTEST_PROFILE=default
if [ "${CI:-}" = true ]; then NEXTEST_PROFILE=ci; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export CASTELLAN_TEST_REPORTS="$TARGET_DIR/test-reports"
whole_run=0
if [ "$#" -eq 0 ] && [ "${CASTELLAN_TEST_SKIP_CARGO:-0}" != 1 ] && [ -z "${CASTELLAN_TEST_SUITES:-}" ]; then
    whole_run=1
    rm -f target/nextest/*/junit.xml "$TARGET_DIR"/nextest/*/junit.xml
    rm -f "$CASTELLAN_TEST_REPORTS"/*.xml
fi

test_rc=0
if [ "${CASTELLAN_TEST_SKIP_CARGO:-0}" = 1 ]; then
    step "skipping the cargo tests (CASTELLAN_TEST_SKIP_CARGO=1)"
else
    step "${runner[*]}"
    "${runner[@]}" || test_rc=$?
    disk_note "after the cargo tests; test cluster $(du -sh "$PG_DATA" 2>/dev/null | cut -f1)"
fi

if [ -f src/lib.rs ] && [ "${CASTELLAN_TEST_SKIP_CARGO:-0}" != 1 ]; then
    # Doc tests take plain name filters only; skip them when runner options were given.
    only_filters=1
    for arg in "$@"; do
        case "$arg" in -*) only_filters=0 ;; esac
    done
    if [ "$only_filters" -eq 1 ]; then
        step "cargo test --doc ${locked[*]} $*"
        doc_rc=0
        cargo test --doc "${locked[@]}" "$@" || doc_rc=$?
        if [ "$test_rc" -eq 0 ]; then test_rc=$doc_rc; fi
    else
        step "skipping doc tests (runner-specific options given)"
    fi
fi

# ------------------------------------------------------------- suites
# Each scripts/suites/NN-name.sh is a test suite outside cargo (browser, proxy,
# multi-node, operations kit, scanners). It gets the cluster above, the built
# binary and a folder for JUnit reports, installs what it needs itself, and
# exits non-zero on failure.
mkdir -p "$CASTELLAN_TEST_REPORTS"
suite_wanted() {
    local name=$1
    if [ -n "${CASTELLAN_TEST_SUITES:-}" ]; then
        [ "$CASTELLAN_TEST_SUITES" != none ] && [[ " $CASTELLAN_TEST_SUITES " == *" $name "* ]]
    else
        [ "$SUITES_DEFAULT" = all ]
    fi
}
SUITES_DEFAULT=all
if [ "$#" -gt 0 ]; then SUITES_DEFAULT=none; fi
suites=()
for suite in scripts/suites/[0-9]*.sh; do
    [ -e "$suite" ] || continue
    name=$(basename "$suite" .sh); name=${name#*-}
    suite_wanted "$name" && suites+=("$suite")
done
if [ "${#suites[@]}" -gt 0 ]; then
    step "cargo build --bin castellan ${locked[*]} (binary for the suites)"
    cargo build --bin castellan "${locked[@]}"
    export CASTELLAN_TEST_BIN="$TARGET_DIR/debug/castellan"
    for suite in "${suites[@]}"; do
        step "suite $suite"
        suite_rc=0
        bash "$suite" || suite_rc=$?
        if [ "$suite_rc" -ne 0 ]; then
            step "suite $suite FAILED (exit $suite_rc)"
            if [ "$test_rc" -eq 0 ]; then test_rc=$suite_rc; fi
        fi
    done
fi

# ------------------------------------------------------- security grade
# Only a whole run grades: a filtered run did not run every test that names a requirement.
if [ "$whole_run" = 1 ]; then
    step "scripts/security-grade --min scripts/security-grade.min (this run's $NEXTEST_PROFILE profile and suite reports)"
    grade_rc=0
    # nextest keeps its reports under the workspace's target/ even when
    # CARGO_TARGET_DIR points elsewhere.
    python3 scripts/security-grade --min scripts/security-grade.min \
        --reports "target/nextest/$NEXTEST_PROFILE/junit.xml" \
        --reports "$TARGET_DIR/nextest/$NEXTEST_PROFILE/junit.xml" \
        --reports "$CASTELLAN_TEST_REPORTS" || grade_rc=$?
    if [ "$test_rc" -eq 0 ]; then test_rc=$grade_rc; fi
fi

disk_note "end"
if [ "$test_rc" -eq 0 ]; then step "all tests passed"; else step "tests FAILED (exit $test_rc)"; fi
exit "$test_rc"
