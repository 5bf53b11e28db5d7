#!/usr/bin/env bash
# castellan phase benchmark (one castellan per backend, one round per phase), used by
# bench/pool_sizes.sh; bench/run.sh is the comparison benchmark of issue 17.
# Writes bench/results/phases.md.
#
# Usage: bench/phases.sh
#
# What it does (about 5 minutes on 2 cores plus the build, and up to 1 minute waiting for an idle machine):
#   1. cargo build --release; installs wrk (and sqlite3) with apt-get if missing.
#   2. cargo run --release --example hash_cost: median Argon2id hash time on
#      1 thread (and the rate with one hashing thread per CPU).
#   3. For SQLite, then PostgreSQL (a throwaway cluster on a free port):
#      seeds 100,000 users and 100,000 sessions, then measures with wrk
#      (2 threads, 20 s after a 3 s warm-up each):
#        health   GET /health/live                         64 connections
#        session  GET /v1/session, random seeded token     64 connections
#        login    POST /v1/login, random seeded user       16 connections
#        mixed    session (64) and login (16) at the same time
#   4. Prints a table per backend and the target ratios, and writes them to
#      bench/results/latest.md.
#
# Environment (defaults in brackets; change them only for quick trial runs):
#   BENCH_USERS [100000]  BENCH_DURATION [20]  BENCH_WARMUP [3]
#   BENCH_BACKENDS ["sqlite postgres"]  BENCH_KEEP_TMP [0] keep logs and data on exit
#   BENCH_REPORT [bench/results/phases.md]  where the report goes
#   BENCH_SKIP_BUILD [0]  1: use the existing target/release binaries (no cargo)
#   BENCH_NICE [-10 as root, else 0]  niceness of the server, PostgreSQL, wrk and hash_cost
#   BENCH_IDLE_WAIT [60]  seconds to wait in all, at most, for other work on the machine to stop
#   BENCH_PHASES ["health session login mixed"]  which phases to measure (any subset, in that order)
#   BENCH_SESSION_CONNS [64]  wrk connections of the session phases
#   BENCH_PG_MAX_CONNECTIONS [100]  max_connections of the throwaway PostgreSQL cluster
#     (raise it to measure a castellan pool above 97, e.g. CASTELLAN_DB_MAX_CONNECTIONS=120)
# bench/pool_sizes.sh runs the session phase at several pool sizes with these.
# Other CASTELLAN_* variables in the environment reach the server and are
# listed in the report, e.g. `CASTELLAN_HASH_THREADS=1 bench/phases.sh` to compare.
#
# Everything (wrk included) runs on this machine, so other busy processes
# (a cargo build...) distort the numbers: each phase reports the CPU share
# used by the server, by wrk and by everything else ("other").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
RESULTS=$BENCH/results
REPORT=${BENCH_REPORT:-$RESULTS/phases.md}
BIN=$ROOT/target/release/castellan

USERS=${BENCH_USERS:-100000}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-3}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
WRK_THREADS=2
SESSION_CONNS=${BENCH_SESSION_CONNS:-64}
PHASES=" ${BENCH_PHASES:-health session login mixed} "
PG_MAX_CONNECTIONS=${BENCH_PG_MAX_CONNECTIONS:-100}
HEALTH_CONNS=64
LOGIN_CONNS=16
# Every seeded user has this password (no quotes or backslashes: it goes into JSON as is).
PASSWORD=ochre-lantern-quiet-harbor-7391
SEED_EMAIL=bench-seed@example.com

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

started_at=$(date +%s)

# The server, PostgreSQL, wrk and the hash timing run at a raised priority
# (as root), so a build or test run elsewhere on the machine disturbs them less.
if [ -n "${BENCH_NICE:-}" ]; then NICE=$BENCH_NICE; elif [ "$(id -u)" -eq 0 ]; then NICE=-10; else NICE=0; fi
PRIO=()
if [ "$NICE" != 0 ]; then PRIO=(nice -n "$NICE"); fi
# With autogroup scheduling (the Linux default) niceness only counts inside a
# session, so the benchmark runs in a session of its own whose group gets the
# raised priority. Signals to this process are passed on to it.
if [ "$NICE" != 0 ] && [ "${BENCH_OWN_SESSION:-0}" != 1 ] && command -v setsid >/dev/null 2>&1 \
    && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
    BENCH_OWN_SESSION=1 setsid --wait "$BENCH/phases.sh" "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
    rc=0
    while kill -0 "$child" 2>/dev/null; do
        wait "$child" && rc=0 || rc=$?
    done
    exit "$rc"
fi
if [ "${BENCH_OWN_SESSION:-0}" = 1 ]; then
    printf '%s\n' "$NICE" >/proc/self/autogroup 2>/dev/null || true
fi

# machine_busy_pct SECONDS: share of all CPUs busy over SECONDS.
machine_busy_pct() {
    python3 - "$1" <<'PY'
import os, sys, time
def busy():
    with open("/proc/stat") as f:
        p = [int(x) for x in f.readline().split()[1:8]]
    return p[0] + p[1] + p[2] + p[5] + p[6], sum(p)
b0, t0 = busy(); time.sleep(float(sys.argv[1])); b1, t1 = busy()
print(round(100 * (b1 - b0) / max(t1 - t0, 1)))
PY
}

# wait_quiet LABEL: waits (BENCH_IDLE_WAIT seconds at most) until the machine is idle.
IDLE_WAIT_LEFT=${BENCH_IDLE_WAIT:-60}
wait_quiet() {
    local busy
    busy=$(machine_busy_pct 2)
    while [ "$busy" -gt 20 ] && [ "$IDLE_WAIT_LEFT" -gt 0 ]; do
        printf 'machine is %s%% busy before measuring; waiting for it to settle (%ss of waiting left)\n' \
            "$busy" "$IDLE_WAIT_LEFT"
        sleep 3
        IDLE_WAIT_LEFT=$((IDLE_WAIT_LEFT - 5))
        busy=$(machine_busy_pct 2)
    done
    printf 'machine %s%% busy before measuring\n' "$busy"
    BUSY_BEFORE="${BUSY_BEFORE:+$BUSY_BEFORE, }$1 $busy%"
}


# ---------------------------------------------------------------- cleanup
SERVER_PID=""
SERVER_LOG=""
WRK_PIDS=()
PG_STARTED=0
PG_TMP=""
PG_DATA=""
PG_LOG=""
PG_USER=""
PG_BIN=""
BENCH_TMP=$(mktemp -d /tmp/castellan-bench.XXXXXX)

as_pg() {
    if [ -n "$PG_USER" ]; then
        (cd "$PG_TMP" && "${PRIO[@]}" runuser -u "$PG_USER" -- "$@")
    else
        (cd "$PG_TMP" && "${PRIO[@]}" "$@")
    fi
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            printf 'castellan (pid %s) did not stop within 15 s; killing it\n' "$SERVER_PID" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

stop_pg() {
    if [ "$PG_STARTED" -eq 1 ] || { [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; }; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        if [ -f "$PG_DATA/postmaster.pid" ]; then
            local pid
            pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
            if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -KILL "$pid" 2>/dev/null || true; sleep 1; fi
        fi
        PG_STARTED=0
    fi
}

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    for pid in "${WRK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    if [ "$rc" -ne 0 ]; then
        if [ -n "$SERVER_LOG" ] && [ -s "$SERVER_LOG" ]; then
            printf '==> castellan log (%s): last warnings and errors, then the last 5 lines\n' "$SERVER_LOG" >&2
            grep -v '"level":"INFO"' "$SERVER_LOG" | tail -n 20 >&2
            tail -n 5 "$SERVER_LOG" >&2
        fi
        if [ -n "$PG_LOG" ] && [ -s "$PG_LOG" ]; then
            printf '==> last 30 lines of the PostgreSQL log\n' >&2
            tail -n 30 "$PG_LOG" >&2
        fi
    fi
    stop_server
    stop_pg
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then
        printf 'kept %s %s\n' "$BENCH_TMP" "$PG_TMP" >&2
    else
        rm -rf "$BENCH_TMP"
        [ -z "$PG_TMP" ] || rm -rf "$PG_TMP"
    fi
    if [ "$rc" -ne 0 ]; then printf 'benchmark FAILED (exit %s)\n' "$rc" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
find_pg_bin() {
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
        return 0
    fi
    local found
    found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -type f 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] && dirname "$found"
}
if [[ " $BACKENDS " == *" postgres "* ]]; then
    PG_BIN=$(find_pg_bin || true)
    [ -n "$PG_BIN" ] || need_apt+=(postgresql)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${need_apt[*]}; install with: sudo apt-get install -y ${need_apt[*]}"
    step "installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        PG_BIN=$(find_pg_bin || true)
        [ -n "$PG_BIN" ] || die "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) after install"
    fi
fi

# ---------------------------------------------------------------- build
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
    step "BENCH_SKIP_BUILD=1: using the existing target/release binaries"
    { [ -x "$BIN" ] && [ -x "$ROOT/target/release/examples/hash_cost" ]; } \
        || die "no target/release/castellan or examples/hash_cost; run without BENCH_SKIP_BUILD"
    hash_cmd=("$ROOT/target/release/examples/hash_cost")
else
    step "cargo build --release"
    cargo build --release
    [ -x "$BIN" ] || die "$BIN was not built"
    cargo build --release --example hash_cost
    hash_cmd=(cargo run --release --example hash_cost)
fi

wait_quiet hash_cost
step "${hash_cmd[*]} (30 sequential Argon2id hashes on 1 thread, then 30 on each CPU at once)"
python3 "$BENCH/cpu.py" snap 0 >"$BENCH_TMP/hash.cpu0"
TIMEFORMAT='%U %S'
hash_rc=0
{ time "${PRIO[@]}" "${hash_cmd[@]}" >"$BENCH_TMP/hash.out" 2>"$BENCH_TMP/hash.err"; } 2>"$BENCH_TMP/hash.time" \
    || hash_rc=$?
python3 "$BENCH/cpu.py" snap 0 >"$BENCH_TMP/hash.cpu1"
cat "$BENCH_TMP/hash.err" >&2
[ "$hash_rc" -eq 0 ] || die "the hash_cost example failed (exit $hash_rc)"
hash_out=$(cat "$BENCH_TMP/hash.out")
printf '%s\n' "$hash_out"
# Everything else's share of the machine while hash_cost ran ("wrk" there is hash_cost itself).
HASH_OTHER=$(python3 "$BENCH/cpu.py" diff "$BENCH_TMP/hash.cpu0" "$BENCH_TMP/hash.cpu1" 1 "$BENCH_TMP/hash.time" \
    | sed -n 's/.*cpu_other_pct=\([0-9.]*\).*/\1/p')
printf 'other processes used %s%% of the machine while hash_cost ran\n' "${HASH_OTHER:-?}"
HASH_MS=$(printf '%s\n' "$hash_out" | sed -n 's/.*hash_median_ms=\([0-9.]*\).*/\1/p' | tail -n 1)
[ -n "$HASH_MS" ] || die "could not read hash_median_ms from the hash_cost example"
HASH_PAR=$(printf '%s\n' "$hash_out" | sed -n 's/.*hash_parallel_per_s=\([0-9.]*\).*/\1/p' | tail -n 1)

NPROC=$(nproc)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
SECRET=$(openssl rand -base64 32)
export BENCH_WRK_DIR=$BENCH/wrk

# ---------------------------------------------------------------- helpers
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server DB_URL DATA_DIR LOG: starts castellan and waits for /health/live.
start_server() {
    local db_url=$1 data=$2 log=$3
    PORT=$(free_port)
    BASE=http://127.0.0.1:$PORT
    SERVER_LOG=$log
    mkdir -p "$data"
    # All load comes from 127.0.0.1: lift the per-address login limit (when
    # this build has one) so the login phases measure hashing, not the limiter.
    local extra=()
    if grep -qa 'rate_login_per_ip' "$BIN"; then extra+=(CASTELLAN_RATE_LOGIN_PER_IP=1000000000/1m); fi
    # Run from the temp folder so no ./castellan.toml of the work tree is read.
    (
        cd "$BENCH_TMP"
        exec "${PRIO[@]}" env CASTELLAN_SECRET_KEY="$SECRET" \
            CASTELLAN_DATA_DIR="$data" \
            CASTELLAN_MAIL_DIR="$data/mail" \
            CASTELLAN_LISTEN="127.0.0.1:$PORT" \
            CASTELLAN_DATABASE_URL="$db_url" \
            CASTELLAN_LOG_FORMAT=json \
            "${extra[@]}" \
            "$BIN" serve
    ) >>"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            die "castellan exited during start-up (log: $log)"
        fi
        if curl -fsS -o /dev/null "$BASE/health/live" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "castellan did not answer /health/live within 30 s"
}

# http_status METHOD PATH [BODY] [TOKEN]: prints the status code; body in $BENCH_TMP/last_body.
http_status() {
    local method=$1 path=$2 body=${3:-} token=${4:-}
    local args=(-sS -o "$BENCH_TMP/last_body" -w '%{http_code}' -X "$method")
    [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data "$body")
    [ -z "$token" ] || args+=(-H "Authorization: Bearer $token")
    curl "${args[@]}" "$BASE$path"
}

register_seed_user() {
    local code
    code=$(http_status POST /v1/registration "{\"email\":\"$SEED_EMAIL\",\"password\":\"$PASSWORD\"}")
    [ "$code" = 201 ] || die "registration returned $code: $(head -c 500 "$BENCH_TMP/last_body")"
}

verify_seed() {
    local token code
    token=$(head -n 1 "$TOKENS")
    code=$(http_status GET /v1/session "" "$token")
    [ "$code" = 200 ] || die "a seeded token got $code from GET /v1/session: $(head -c 500 "$BENCH_TMP/last_body")"
    code=$(http_status POST /v1/login "{\"email\":\"bench$((USERS - 1))@example.com\",\"password\":\"$PASSWORD\"}")
    [ "$code" = 200 ] || die "a seeded user got $code from POST /v1/login: $(head -c 500 "$BENCH_TMP/last_body")"
    printf 'seeded token: GET /v1/session 200; seeded user: POST /v1/login 200\n'
}

# Sets last_seen_at of every seeded session to now, so each session phase
# starts with no session due for its once-a-minute activity write (seeding
# happened a minute or more earlier by the later phases).
refresh_last_seen() {
    case "$BACKEND" in
        sqlite)
            python3 - "$DB_FILE" <<'PY'
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30)
with conn:
    conn.execute("UPDATE sessions SET last_seen_at = ? WHERE user_agent = 'bench'", (int(time.time() * 1000),))
conn.close()
PY
            ;;
        postgres)
            pg_sql -q -c "UPDATE sessions SET last_seen_at = now() WHERE user_agent = 'bench'" >/dev/null
            ;;
    esac
}

# wrk_run NAME CONNS SECONDS SCRIPT [SCRIPT ARGS...]: output in $OUT/NAME.txt,
# wrk's own CPU seconds ("user sys") in $OUT/NAME.wrkcpu.
wrk_run() {
    local name=$1 conns=$2 secs=$3 script=$4 url
    shift 4
    case "$script" in
        session.lua) url=$BASE/v1/session ;;
        login.lua) url=$BASE/v1/login ;;
        *) url=$BASE/health/live ;;
    esac
    local TIMEFORMAT='%U %S'
    { time "${PRIO[@]}" wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout 10s --latency \
        -s "$BENCH/wrk/$script" "$url" -- "$@" >"$OUT/$name.txt" 2>&1; } 2>"$OUT/$name.wrkcpu"
}

cpu_snap() { python3 "$BENCH/cpu.py" snap "${SERVER_PID:-0}" "${PG_DATA:-}" >"$1"; }

# result_line NAME: checks wrk's result and appends the CPU line of the window.
result_line() {
    local name=$1 window=$2
    shift 2
    grep -q '^BENCH ' "$OUT/$name.txt" || { cat "$OUT/$name.txt" >&2; die "wrk printed no result for $name"; }
    local cpu
    cpu=$(python3 "$BENCH/cpu.py" diff "$OUT/$window.cpu0" "$OUT/$window.cpu1" "$DURATION" "$@")
    printf 'CPU %s\n' "$cpu" >>"$OUT/$name.txt"
    printf '%-14s %s %s\n' "$name" "$(grep '^BENCH ' "$OUT/$name.txt" | cut -c7-)" "$cpu"
}

# bench_phase NAME CONNS SCRIPT [ARGS...]: warm-up, then the measured run.
bench_phase() {
    local name=$1 conns=$2 script=$3
    shift 3
    wrk_run "$name.warmup" "$conns" "$WARMUP" "$script" "$@"
    cpu_snap "$OUT/$name.cpu0"
    wrk_run "$name" "$conns" "$DURATION" "$script" "$@"
    cpu_snap "$OUT/$name.cpu1"
    result_line "$name" "$name" "$OUT/$name.wrkcpu"
}

# mixed_phase: session checks and logins at the same time (two wrk processes).
mixed_phase() {
    local run secs suffix pid rc
    for run in warmup measure; do
        if [ "$run" = warmup ]; then secs=$WARMUP suffix=.warmup; else secs=$DURATION suffix=""; fi
        [ -n "$suffix" ] || cpu_snap "$OUT/mixed.cpu0"
        WRK_PIDS=()
        wrk_run "mixed_session$suffix" "$SESSION_CONNS" "$secs" session.lua "$TOKENS" &
        WRK_PIDS+=($!)
        wrk_run "mixed_login$suffix" "$LOGIN_CONNS" "$secs" login.lua "$USERS" "$PASSWORD" &
        WRK_PIDS+=($!)
        rc=0
        for pid in "${WRK_PIDS[@]}"; do wait "$pid" || rc=$?; done
        WRK_PIDS=()
        [ "$rc" -eq 0 ] || die "wrk failed in the mixed phase"
        [ -n "$suffix" ] || cpu_snap "$OUT/mixed.cpu1"
    done
    result_line mixed_session mixed "$OUT/mixed_session.wrkcpu" "$OUT/mixed_login.wrkcpu"
    result_line mixed_login mixed "$OUT/mixed_session.wrkcpu" "$OUT/mixed_login.wrkcpu"
}

# wants PHASE: whether BENCH_PHASES asks for PHASE.
wants() { [[ "$PHASES" == *" $1 "* ]]; }

measure() {
    if wants health; then bench_phase health "$HEALTH_CONNS" health.lua; fi
    if wants session; then
        refresh_last_seen
        bench_phase session "$SESSION_CONNS" session.lua "$TOKENS"
    fi
    if wants login; then bench_phase login "$LOGIN_CONNS" login.lua "$USERS" "$PASSWORD"; fi
    if wants mixed; then
        refresh_last_seen
        mixed_phase
    fi
}

# ---------------------------------------------------------------- PostgreSQL
pg_sql() { PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U castellan_bench -d "${PG_DB:-castellan}" "$@"; }

start_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        if getent passwd postgres >/dev/null 2>&1; then
            PG_USER=postgres
        else
            PG_USER=castellan-test
            getent passwd "$PG_USER" >/dev/null 2>&1 \
                || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
        fi
    fi
    PG_TMP=$(mktemp -d /tmp/castellan-bench-pg.XXXXXX)
    PG_DATA=$PG_TMP/data
    PG_LOG=$PG_TMP/postgres.log
    mkdir -p "$PG_TMP/sock"
    PG_PASSWORD=$(openssl rand -hex 16)
    (umask 077; printf '%s\n' "$PG_PASSWORD" >"$PG_TMP/pwfile")
    [ -z "$PG_USER" ] || chown -R "$PG_USER:" "$PG_TMP"
    chmod 700 "$PG_TMP" "$PG_TMP/sock"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" --username=castellan_bench --pwfile="$PG_TMP/pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }
    rm -f "$PG_TMP/pwfile"
    for _ in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        if as_pg "$PG_BIN/pg_ctl" -w -t 60 -D "$PG_DATA" -l "$PG_LOG" \
            -o "-p $PG_PORT -k $PG_TMP/sock -c listen_addresses=127.0.0.1 -c ssl=off -c max_connections=$PG_MAX_CONNECTIONS" \
            start >/dev/null; then
            PG_STARTED=1
            break
        fi
    done
    [ "$PG_STARTED" -eq 1 ] || die "could not start PostgreSQL"
    PG_DB=postgres pg_sql -q -c 'CREATE DATABASE castellan' >/dev/null
    PG_VERSION=$(pg_sql -Atc 'SHOW server_version')
}

# ---------------------------------------------------------------- backends
RUN_ROWS=$BENCH_TMP/rows.txt
: >"$RUN_ROWS"

for BACKEND in $BACKENDS; do
    OUT=$BENCH_TMP/$BACKEND
    mkdir -p "$OUT"
    TOKENS=$OUT/tokens.txt
    DATA=$OUT/data
    LOG=$OUT/castellan.log
    t0=$(date +%s)
    case "$BACKEND" in
        sqlite)
            step "SQLite: start castellan, register one user, seed $USERS users and sessions"
            DB_FILE=$OUT/castellan.db
            DB_URL=sqlite://$DB_FILE
            start_server "$DB_URL" "$DATA" "$LOG"
            register_seed_user
            stop_server
            phc=$(python3 - "$DB_FILE" "$SEED_EMAIL" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT password_hash FROM users WHERE email_key = ?", (sys.argv[2],)).fetchone()
print(row[0] if row else "")
PY
)
            [ -n "$phc" ] || die "the registered user's hash is not in $DB_FILE"
            CASTELLAN_SECRET_KEY=$SECRET python3 "$BENCH/seed.py" sqlite "$DB_FILE" \
                --hash "$phc" --users "$USERS" --tokens "$TOKENS"
            start_server "$DB_URL" "$DATA" "$LOG"
            ;;
        postgres)
            step "PostgreSQL: throwaway cluster, start castellan, register one user, seed $USERS users and sessions"
            start_pg
            printf 'PostgreSQL %s on 127.0.0.1:%s (ssl off)\n' "$PG_VERSION" "$PG_PORT"
            DB_URL="postgres://castellan_bench:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/castellan?sslmode=disable"
            start_server "$DB_URL" "$DATA" "$LOG"
            register_seed_user
            phc=$(pg_sql -Atc "SELECT password_hash FROM users WHERE email_key = '$SEED_EMAIL'")
            [ -n "$phc" ] || die "the registered user's hash is not in PostgreSQL"
            CASTELLAN_SECRET_KEY=$SECRET python3 "$BENCH/seed.py" postgres "$OUT" \
                --hash "$phc" --users "$USERS" --tokens "$TOKENS"
            pg_sql -q <<SQL
\\copy users (id, email, email_key, password_hash, email_verified, mfa_enabled, created_at, password_changed_at) FROM '$OUT/users.csv' WITH (FORMAT csv)
\\copy sessions (id, token_hash, user_id, aal, mfa_pending, created_at, authenticated_at, last_seen_at, expires_at, user_agent, ip) FROM '$OUT/sessions.csv' WITH (FORMAT csv)
ANALYZE;
SQL
            rm -f "$OUT/users.csv" "$OUT/sessions.csv"
            ;;
        *) die "unknown backend $BACKEND (sqlite or postgres)" ;;
    esac
    verify_seed
    printf 'seeding and start-up took %ss\n' "$(($(date +%s) - t0))"

    wait_quiet "$BACKEND"
    step "$BACKEND: measuring (wrk, $WRK_THREADS threads, ${WARMUP}s warm-up + ${DURATION}s per phase)"
    measure
    stop_server

    # Server log: warnings/errors and 5xx responses it recorded.
    errors=$(grep -c '"level":"ERROR"' "$LOG" || true)
    warns=$(grep -c '"level":"WARN"' "$LOG" || true)
    fivexx=$(grep -c '"status":5[0-9][0-9]' "$LOG" || true)
    printf 'castellan log: %s ERROR, %s WARN lines, %s responses with a 5xx status\n' "$errors" "$warns" "$fivexx"
    {
        printf 'backend=%s' "$BACKEND"
        for name in health session login mixed_session mixed_login; do
            [ -f "$OUT/$name.txt" ] || continue
            line="$(grep '^BENCH ' "$OUT/$name.txt" | tail -n 1 | cut -c7-) $(grep '^CPU ' "$OUT/$name.txt" | tail -n 1 | cut -c5-)"
            # prefix each key with the phase name
            printf ' %s' "$(printf '%s' "$line" | sed "s/\([a-z0-9_]*\)=/$name.\1=/g")"
        done
        printf ' log_errors=%s log_warns=%s log_5xx=%s\n' "$errors" "$warns" "$fivexx"
    } >>"$RUN_ROWS"
    if [ "$errors" -gt 0 ] || [ "$warns" -gt 0 ]; then
        # Distinct messages (the fields that vary per request removed).
        grep -E '"level":"(ERROR|WARN)"' "$LOG" \
            | python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        c[line.strip()[:200]] += 1
        continue
    f = dict(e, **e.get("fields", {}))
    key = " ".join(f"{k}={f[k]!r}" for k in ("level", "target", "message", "error", "status") if k in f)
    c[key] += 1
for k, n in c.most_common(8):
    print(f"{n:>7} x {k[:300]}")
' >"$OUT/log_excerpt.txt" || true
        sed 's/^/    /' "$OUT/log_excerpt.txt"
        cp "$OUT/log_excerpt.txt" "$BENCH_TMP/log_excerpt_$BACKEND.txt"
    fi
    if [ "$BACKEND" = postgres ]; then
        stop_pg
        # What PostgreSQL itself complained about (e.g. clients dropping connections).
        if grep -qE 'WARNING|ERROR|FATAL|could not receive data' "$PG_LOG"; then
            sed -E 's/^[0-9-]+ [0-9:.]+ [A-Z]+ \[[0-9]+\] //' "$PG_LOG" \
                | grep -E '^(WARNING|ERROR|FATAL)|could not receive data' | sort | uniq -c | sort -rn | head -n 8 \
                | awk '{ printf "%7d x PostgreSQL: ", $1; $1 = ""; sub(/^ /, ""); print }' >>"$BENCH_TMP/log_excerpt_$BACKEND.txt"
            printf 'PostgreSQL log:\n'
            grep 'PostgreSQL: ' "$BENCH_TMP/log_excerpt_$BACKEND.txt"
        fi
    fi
done

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$REPORT")"
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then GIT_REV="$GIT_REV (src/ has uncommitted changes)"; fi
elapsed=$(($(date +%s) - started_at))

# The command as given, with the BENCH_* and CASTELLAN_* variables it ran with.
CMDLINE="$(env | grep -E '^(BENCH|CASTELLAN)_[A-Z_]+=' \
    | grep -vE '^(BENCH_OWN_SESSION|BENCH_WRK_DIR)=|^CASTELLAN_[A-Z_]*(SECRET|TOKEN|PASSWORD|DATABASE_URL)' \
    | sort | tr '\n' ' ' || true)bench/phases.sh"
REPORT_ENV=(
    CMDLINE="$CMDLINE"
    HASH_MS="$HASH_MS" HASH_OTHER="${HASH_OTHER:-}" HASH_PAR="${HASH_PAR:-}" NPROC="$NPROC" CPU_MODEL="$CPU_MODEL" RUN_ROWS="$RUN_ROWS"
    USERS="$USERS" DURATION="$DURATION" WARMUP="$WARMUP" WRK_THREADS="$WRK_THREADS"
    SESSION_CONNS="$SESSION_CONNS" LOGIN_CONNS="$LOGIN_CONNS" HEALTH_CONNS="$HEALTH_CONNS"
    WRK_VERSION="$WRK_VERSION" GIT_REV="$GIT_REV" PG_VERSION="${PG_VERSION:-}"
    ELAPSED="$elapsed" NICE="$NICE" HASH_CMD="${hash_cmd[*]}" BUSY_BEFORE="${BUSY_BEFORE:-}" DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" BENCH_TMP="$BENCH_TMP"
    RUSTC="$(rustc --version 2>/dev/null || echo unknown)"
    SERVER_OVERRIDES="$(env | grep -E '^CASTELLAN_' | grep -vE '^CASTELLAN_[A-Z_]*(SECRET|TOKEN|PASSWORD|DATABASE_URL)' | sort | tr '\n' ' ' || true)"
)
env "${REPORT_ENV[@]}" python3 - >"$REPORT" <<'PY'
import os

E = os.environ
hash_ms = float(E["HASH_MS"])
nproc = int(E["NPROC"])
ideal_logins = nproc / (hash_ms / 1000.0)

rows = []
for line in open(E["RUN_ROWS"]):
    d = {}
    for kv in line.split():
        k, _, v = kv.partition("=")
        d[k] = v
    rows.append(d)

def f(d, k, default=0.0):
    return float(d.get(k, default))

def ok_logins(d, phase):
    return f(d, f"{phase}.status_200") / f(d, f"{phase}.duration_s", 1)

out = []
p = out.append
p("# castellan benchmark: latest run")
p("")
p(f"- date: {E['DATE']}")
p(f"- command: `{E['CMDLINE']}`")
p(f"- machine: `nproc` = {nproc}, CPU: {E['CPU_MODEL']}")
p(f"- castellan: git {E['GIT_REV']}, release build; {E['RUSTC']}")
p(f"- load: wrk {E['WRK_VERSION']}, {E['WRK_THREADS']} threads, {E['DURATION']} s per phase after a {E['WARMUP']} s warm-up, "
  f"on the same machine as the server")
p(f"- data: {int(E['USERS']):,} users and {int(E['USERS']):,} sessions seeded per backend"
  + (f"; PostgreSQL {E['PG_VERSION']} throwaway cluster (default settings, ssl off, TCP on 127.0.0.1)"
     if E.get("PG_VERSION") else ""))
p(f"- Argon2id (19456 KiB, t=2, p=1), one thread: median {hash_ms:.1f} ms per hash "
  f"(`{E['HASH_CMD'].replace(os.getcwd() + '/', '')}`), so the ideal login rate is "
  f"{nproc} CPUs / {hash_ms/1000:.4f} s = {ideal_logins:.1f} logins/s"
  + (f"; {nproc} threads hashing at once really managed {float(E['HASH_PAR']):.1f} hashes/s"
     if E.get("HASH_PAR") else "")
  + (f" (other processes used {float(E['HASH_OTHER']):.0f}% of the machine meanwhile)" if E.get("HASH_OTHER") else ""))
p("- castellan settings: defaults (SQLite in a temp folder, or the PostgreSQL URL; a fixed secret key; JSON logs to a file; "
  "the per-address login rate limit lifted, as all load comes from 127.0.0.1)"
  + (f", plus from the environment: `{E['SERVER_OVERRIDES'].strip()}`" if E.get("SERVER_OVERRIDES", "").strip() else ""))
p(f"- whole run: {int(E['ELAPSED'])} s; CPU busy just before measuring: {E.get('BUSY_BEFORE') or 'n/a'}")
p(f"- priority: server, PostgreSQL, wrk and hash_cost ran with nice {E['NICE']}" if E.get("NICE", "0") != "0"
  else "- priority: normal (nice 0)")
p("- CPU columns: share of all CPUs during the phase used by the server (castellan, plus PostgreSQL), "
  "by wrk, and by everything else")
p("")

disturbed = []
for d in rows:
    b = d["backend"]
    p(f"## {'SQLite' if b == 'sqlite' else 'PostgreSQL'}")
    p("")
    p("| phase | connections | requests/s | p50 ms | p99 ms | non-2xx | socket errors | CPU server / wrk / other % |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    def line(label, phase, conns, rps=None):
        if phase + ".rps" not in d:
            return  # not measured (BENCH_PHASES)
        r = f(d, f"{phase}.rps") if rps is None else rps
        other = f(d, phase + ".cpu_other_pct")
        if other > 10:
            disturbed.append(f"{d['backend']} {phase} ({other:.0f}% other)")
        p(f"| {label} | {conns} | {r:,.1f} | {f(d, phase + '.p50_ms'):.2f} | {f(d, phase + '.p99_ms'):.2f} "
          f"| {int(f(d, phase + '.non2xx'))} | {int(f(d, phase + '.socket_errors'))} "
          f"| {f(d, phase + '.cpu_server_pct'):.0f} / {f(d, phase + '.cpu_wrk_pct'):.0f} / {other:.0f} |")
    line("GET /health/live", "health", E["HEALTH_CONNS"])
    line("GET /v1/session (idle)", "session", E["SESSION_CONNS"])
    line("POST /v1/login, successful/s", "login", E["LOGIN_CONNS"], ok_logins(d, "login"))
    line("GET /v1/session under login load", "mixed_session", E["SESSION_CONNS"])
    line("POST /v1/login with session load, successful/s", "mixed_login", E["LOGIN_CONNS"], ok_logins(d, "mixed_login"))
    p("")
    statuses = []
    for phase in [x for x in ("login", "mixed_login") if x + ".rps" in d]:
        codes = sorted((k.split("status_")[1], int(float(v))) for k, v in d.items() if k.startswith(phase + ".status_"))
        statuses.append(f"{phase}: " + ", ".join(f"{c}: {n}" for c, n in codes))
    if statuses:
        p("Login responses by status: " + "; ".join(statuses) + ".")
    p(f"castellan log (JSON, level info): {d.get('log_errors', '0')} ERROR and {d.get('log_warns', '0')} WARN lines, "
      f"{d.get('log_5xx', '0')} responses logged with a 5xx status.")
    excerpt = os.path.join(E["BENCH_TMP"], f"log_excerpt_{b}.txt")
    if os.path.exists(excerpt):
        p("")
        p("```")
        p(open(excerpt).read().rstrip())
        p("```")
    p("")

p("## Ratios")
p("")
hash_par = float(E["HASH_PAR"]) if E.get("HASH_PAR") else 0.0
p("| backend | session rps / health rps (target >= 0.3) | login rps / ideal (target >= 0.8) | session p99 under login load / idle (target <= 2) | login rps / measured parallel hash rate (info) |")
p("|---|---:|---:|---:|---:|")
for d in rows:
    if not all(k + ".rps" in d for k in ("health", "session", "login", "mixed_session")):
        continue  # ratios need every phase (BENCH_PHASES left some out)
    r1 = f(d, "session.rps") / max(f(d, "health.rps"), 1e-9)
    r2 = ok_logins(d, "login") / ideal_logins
    r3 = f(d, "mixed_session.p99_ms") / max(f(d, "session.p99_ms"), 1e-9)
    mark = lambda good: "ok" if good else "MISSED"
    r4 = f"{ok_logins(d, 'login') / hash_par:.3f}" if hash_par else "n/a"
    p(f"| {d['backend']} | {r1:.3f} ({mark(r1 >= 0.3)}) | {r2:.3f} ({mark(r2 >= 0.8)}) | {r3:.2f} ({mark(r3 <= 2)}) | {r4} |")
p("")
if E.get("HASH_OTHER") and float(E["HASH_OTHER"]) > 10:
    disturbed.append(f"hash_cost ({float(E['HASH_OTHER']):.0f}% other)")
if disturbed:
    p("**Warning: other processes used more than 10% of the machine during " + ", ".join(disturbed)
      + "; those numbers are disturbed. Re-run on a quiet machine.**")
    p("")
p("Notes: login rps counts 200 responses only; non-2xx counts responses with status >= 400 "
  "(for logins, 503 means the hashing queue was full). Before each session phase the seeded sessions' "
  "`last_seen_at` is set to now, so the measured session checks are reads (castellan writes "
  "`last_seen_at` at most once a minute per session). The server logs every request at `info` (JSON) to a file.")
print("\n".join(out))
PY

step "results (also in ${REPORT#"$ROOT"/})"
cat "$REPORT"
