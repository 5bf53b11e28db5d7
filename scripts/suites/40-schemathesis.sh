#!/usr/bin/env bash
# Suite: contract fuzzing with schemathesis (PyPI) against /openapi.json of a
# running castellan, on SQLite and on PostgreSQL.
#
# Checks: no 5xx (not_a_server_error), every response matches its documented
# schema (response_schema_conformance) and has a documented status code
# (status_code_conformance). Bounded: a fixed number of examples per
# operation and a fixed seed. JUnit reports go to $CASTELLAN_TEST_REPORTS.
#
# The fuzzer holds a real session (scripts/suites/schemathesis_auth.py logs
# in an account registered here), so the handlers behind the session check
# are reached too, and passkeys are on (relying party `localhost`), so the
# passkey routes get past "not configured".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/suites/lib.sh
. scripts/suites/lib.sh

ensure_apt curl curl
ensure_pip schemathesis schemathesis
BIN=$(castellan_bin)
REPORTS=${CASTELLAN_TEST_REPORTS:-$(mktemp -d)}
mkdir -p "$REPORTS"
REPORTS=$(realpath "$REPORTS")
HOOKS=$PWD/scripts/suites/schemathesis_auth.py
EXAMPLES=${CASTELLAN_TEST_SCHEMATHESIS_EXAMPLES:-30}

WORK=$(mktemp -d /tmp/castellan-fuzz.XXXXXX)
PID=""
PG_DB=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    if [ -n "$PG_DB" ] && [ -n "${CASTELLAN_TEST_PG_URL:-}" ]; then
        python3 - "$CASTELLAN_TEST_PG_URL" "$PG_DB" <<'PY' >/dev/null 2>&1 || true
import sys, subprocess
subprocess.run(["psql", sys.argv[1], "-c", f"DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)"])
PY
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# fuzz NAME DATABASE_URL
fuzz() {
    local name=$1 url=$2 port
    port=$(free_port)
    suite_step "castellan on $name (127.0.0.1:$port)"
    CASTELLAN_LISTEN="127.0.0.1:$port" \
    CASTELLAN_DATA_DIR="$WORK/$name" \
    CASTELLAN_MAIL_DIR="$WORK/$name/mail" \
    CASTELLAN_DATABASE_URL="$url" \
    CASTELLAN_PUBLIC_BASE_URL="http://localhost:$port" \
    CASTELLAN_LOG_LEVEL=warn \
    CASTELLAN_RATE_REGISTRATION_PER_IP=100000/1m \
    CASTELLAN_RATE_LOGIN_PER_IP=100000/1m \
    CASTELLAN_RATE_RESET_PER_IP=100000/1m \
    CASTELLAN_RATE_VERIFICATION_PER_IP=100000/1m \
    CASTELLAN_RATE_MFA_PER_IP=100000/1m \
    CASTELLAN_ARGON2_MEMORY_KIB=8192 CASTELLAN_ARGON2_ITERATIONS=1 \
        "$BIN" serve >"$WORK/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 150); do
        curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; suite_die "castellan exited"; }
        sleep 0.2
    done
    local base="http://127.0.0.1:$port" password
    password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    curl -fsS -o /dev/null -H 'Content-Type: application/json' \
        -d "{\"email\":\"schemathesis@example.com\",\"password\":\"$password\"}" "$base/v1/registration" \
        || suite_die "could not register the fuzz account on $name"
    suite_step "schemathesis on $name ($EXAMPLES examples per operation)"
    local rc=0
    # From $WORK: schemathesis keeps a crash cache in ./.schemathesis, and
    # a cache from an earlier run would change what this run sends.
    (cd "$WORK" && CASTELLAN_TEST_FUZZ_BASE="$base" CASTELLAN_TEST_FUZZ_EMAIL=schemathesis@example.com \
        CASTELLAN_TEST_FUZZ_PASSWORD="$password" SCHEMATHESIS_HOOKS="$HOOKS" \
        timeout 600 schemathesis run "$base/openapi.json" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance \
        --max-examples "$EXAMPLES" --seed 1 --request-timeout 10 \
        --suppress-health-check all \
        --report junit --report-junit-path "$REPORTS/schemathesis-$name.xml") || rc=$?
    kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
    if [ "$rc" -ne 0 ]; then
        tail -n 50 "$WORK/$name.log" >&2
        return "$rc"
    fi
}

overall=0
fuzz sqlite "sqlite://$WORK/sqlite.db" || overall=1
if [ -n "${CASTELLAN_TEST_PG_URL:-}" ]; then
    ensure_apt psql postgresql-client
    PG_DB="fuzz_$(date +%s)_$$"
    psql "$CASTELLAN_TEST_PG_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
    base=${CASTELLAN_TEST_PG_URL%%\?*}; query=${CASTELLAN_TEST_PG_URL#"$base"}
    fuzz postgres "${base%/*}/$PG_DB$query" || overall=1
else
    suite_die "CASTELLAN_TEST_PG_URL is not set (run through scripts/test.sh)"
fi
printf 'schemathesis summary: %s\n' "$([ "$overall" -eq 0 ] && echo 'clean on sqlite and postgres' || echo 'FAILED, see above')"
exit "$overall"
