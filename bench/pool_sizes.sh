#!/usr/bin/env bash
# Session-check throughput and p99 against PostgreSQL at several castellan
# pool sizes: runs bench/phases.sh (session phase only) once per size and
# repetition, then prints one table of medians. See docs/operations/pool-sizing.md.
#
# Usage: bench/pool_sizes.sh
#
# Environment (defaults in brackets):
#   POOL_SIZES ["2 4 8 16 32 120"]  values of CASTELLAN_DB_MAX_CONNECTIONS
#   POOL_REPS [3]          repetitions; sizes are interleaved within each repetition
#   POOL_MAX_OTHER [10]    a run where other processes used more than this share
#                          of the machine (%) is disturbed and is run again (twice at most)
#   POOL_OUT [bench/results/pool_sizes.md]  where the table goes
#   BENCH_* as for bench/phases.sh (BENCH_SKIP_BUILD=1 after one release build;
#   BENCH_DURATION, BENCH_USERS, BENCH_SESSION_CONNS, ...). BENCH_BACKENDS,
#   BENCH_PHASES and BENCH_PG_MAX_CONNECTIONS are set here.
#
# Before each run it waits (polling every 30 s) while a rustc, cargo or cargo-nextest
# process is running: a build on the same 2 CPUs distorts the numbers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=${POOL_SIZES:-2 4 8 16 32 120}
REPS=${POOL_REPS:-3}
MAX_OTHER=${POOL_MAX_OTHER:-10}
OUT=${POOL_OUT:-bench/results/pool_sizes.md}
LOGS=$(mktemp -d /tmp/castellan-pool-sizes.XXXXXX)
RESULTS=$LOGS/results.txt
: >"$RESULTS"

largest=0
for size in $SIZES; do [ "$size" -le "$largest" ] || largest=$size; done
# Room for the pool, the reserved superuser connections and psql.
pg_max=$((largest + 20))
[ "$pg_max" -ge 100 ] || pg_max=100

wait_for_builds() {
    while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null || pgrep -x cargo-nextest >/dev/null; do
        printf '%s: a build is running (load %s); waiting 30 s\n' "$(date -u +%T)" \
            "$(cut -d' ' -f1-3 /proc/loadavg)"
        sleep 30
    done
}

# run_one SIZE REP: one run.sh; appends "size rep rps p50 p99 other non2xx" to $RESULTS.
run_one() {
    local size=$1 rep=$2 try log line
    for try in 1 2 3; do
        wait_for_builds
        log=$LOGS/size$size-rep$rep-try$try.log
        printf '%s: pool %s, repetition %s, try %s (load %s)\n' "$(date -u +%T)" "$size" "$rep" "$try" \
            "$(cut -d' ' -f1-3 /proc/loadavg)"
        BENCH_BACKENDS=postgres BENCH_PHASES=session BENCH_PG_MAX_CONNECTIONS=$pg_max \
            BENCH_REPORT=$LOGS/size$size-rep$rep.md CASTELLAN_DB_MAX_CONNECTIONS=$size \
            bench/phases.sh >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
        line=$(grep -E '^session +requests=' "$log" | tail -n 1)
        [ -n "$line" ] || { tail -n 30 "$log" >&2; exit 1; }
        line=$(printf '%s\n' "$line" | python3 -c '
import sys
d = dict(kv.split("=", 1) for kv in sys.stdin.read().split()[1:])
print(d["rps"], d["p50_ms"], d["p99_ms"], d["cpu_other_pct"], d["non2xx"])')
        printf '    %s\n' "$line"
        read -r _ _ _ other _ <<<"$line"
        if python3 -c "import sys; sys.exit(0 if float('$other') <= $MAX_OTHER else 1)"; then
            printf '%s %s %s\n' "$size" "$rep" "$line" >>"$RESULTS"
            return 0
        fi
        printf '    disturbed (%s%% other); running it again\n' "$other"
    done
    printf '%s %s %s disturbed\n' "$size" "$rep" "$line" >>"$RESULTS"
}

for rep in $(seq 1 "$REPS"); do
    for size in $SIZES; do run_one "$size" "$rep"; done
done

mkdir -p "$(dirname "$OUT")"
CMD="$(env | grep -E '^(BENCH|POOL)_[A-Z_]+=' | grep -v '^BENCH_OWN_SESSION=' | sort | tr '\n' ' ')bench/pool_sizes.sh"
python3 - "$RESULTS" "$CMD" "$(git rev-parse --short HEAD)" "$(nproc)" >"$OUT" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    size, rep, rps, p50, p99, other, non2xx, *flag = line.split()
    rows.setdefault(int(size), []).append((float(rps), float(p50), float(p99), float(other), int(non2xx), bool(flag)))
print(f"Pool sizes, PostgreSQL session checks (`{sys.argv[2]}`, git {sys.argv[3]}, {sys.argv[4]} CPUs)")
print()
print("| pool | runs | requests/s (median) | p50 ms (median) | p99 ms (median) | p99 ms (min-max) | other CPU % (max) | non-2xx | disturbed runs |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for size in sorted(rows):
    r = rows[size]
    med = lambda i: statistics.median(x[i] for x in r)
    p99s = [x[2] for x in r]
    print(f"| {size} | {len(r)} | {med(0):,.0f} | {med(1):.2f} | {med(2):.2f} | {min(p99s):.2f}-{max(p99s):.2f} "
          f"| {max(x[3] for x in r):.0f} | {sum(x[4] for x in r)} | {sum(x[5] for x in r)} |")
print()
print("Each run: " + "; ".join(f"{s}: " + ", ".join(f"{x[0]:,.0f} rps / p99 {x[2]:.2f} ms" for x in rows[s]) for s in sorted(rows)))
PY
cat "$OUT"
printf 'logs in %s\n' "$LOGS"
