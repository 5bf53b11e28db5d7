#!/usr/bin/env bash
# Where castellan's CPU goes on one phase: samples the release binary with
# `perf record -e cpu-clock` (software clock: this VM has no hardware
# counters) while wrk loads it, then prints the hottest symbols.
#
# Usage: bench/profile.sh [health|session|login]   (default session)
#   BENCH_USERS [5000]  PROFILE_SECONDS [10]  BENCH_BIN (default: the release build)
# Needs the binaries bench/run.sh builds. SQLite backend.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=${BENCH_BIN:-$REL/castellan}
PHASE=${1:-session}
USERS=${BENCH_USERS:-5000}
SECS=${PROFILE_SECONDS:-10}
command -v perf >/dev/null 2>&1 || apt-get -o DPkg::Lock::Timeout=600 install -y -qq linux-perf >/dev/null
TMP=$(mktemp -d /tmp/castellan-profile.XXXXXX)
PID=""
cleanup() {
    [ -z "$PID" ] || kill -TERM "$PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

SECRET=$(openssl rand -base64 32)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB=$TMP/castellan.db
export CASTELLAN_SECRET_KEY=$SECRET CASTELLAN_DATA_DIR=$TMP/data CASTELLAN_MAIL_DIR=$TMP/mail \
    CASTELLAN_LISTEN=127.0.0.1:$PORT CASTELLAN_DATABASE_URL=sqlite://$DB CASTELLAN_LOG_FORMAT=json \
    CASTELLAN_RATE_LOGIN_PER_IP=1000000000/1m
PASSWORD=ochre-lantern-quiet-harbor-7391
start() {
    (cd "$TMP" && exec "$BIN" serve) >>"$TMP/castellan.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health/live" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "castellan did not start" >&2
    exit 1
}
start
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench-seed@example.com\",\"password\":\"$PASSWORD\"}" "http://127.0.0.1:$PORT/v1/registration"
kill -TERM "$PID"
wait "$PID" 2>/dev/null || true
PHC=$(python3 -c "import sqlite3,sys; print(sqlite3.connect('$DB').execute(\"SELECT password_hash FROM users\").fetchone()[0])")
python3 bench/seed.py sqlite "$DB" --hash "$PHC" --users "$USERS" --tokens "$TMP/tokens" >/dev/null
start
case "$PHASE" in
    health) script=health.lua url=/health/live args=() conns=64 ;;
    session) script=session.lua url=/v1/session args=("$TMP/tokens") conns=64 ;;
    login) script=login.lua url=/v1/login args=("$USERS" "$PASSWORD") conns=16 ;;
    *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
BENCH_WRK_DIR=$ROOT/bench/wrk wrk -t1 -c"$conns" -d"$((SECS + 2))s" --latency -s "bench/wrk/$script" \
    "http://127.0.0.1:$PORT$url" -- "${args[@]}" >"$TMP/wrk.txt" 2>&1 &
WRK=$!
sleep 1
perf record -e cpu-clock -F 999 -g -p "$PID" -o "$TMP/perf.data" -- sleep "$SECS" >/dev/null 2>&1
wait "$WRK" || true
grep '^BENCH' "$TMP/wrk.txt" || cat "$TMP/wrk.txt"
echo "== hottest symbols (self time, % of castellan's samples)"
perf report -i "$TMP/perf.data" --stdio --no-children --sort symbol 2>/dev/null \
    | grep -E '^ +[0-9]' | head -n "${PROFILE_TOP:-40}"
echo "== by thread"
perf report -i "$TMP/perf.data" --stdio --no-children --sort comm 2>/dev/null | grep -E '^ +[0-9]' | head -n 10
