#!/usr/bin/env bash
# Before/after comparison of two castellan binaries that holds up on a noisy
# machine: bench/driver.py measures them in turn, A B A B ..., and the table
# shows, per phase, the median over the runs of each binary's per-run median
# and the after/before ratio. bench/run.sh measures the two one after the
# other, so a load that comes or goes during the run lands on one side only.
#
# Usage: bench/alternate.sh BEFORE_BIN [AFTER_BIN]
#   AFTER_BIN defaults to $CARGO_TARGET_DIR/release/castellan (build it first,
#   e.g. with bench/run.sh or `cargo build --release --bin castellan`).
#   BENCH_ALTERNATIONS [3]  runs of each binary
#   BENCH_SKIP ["betterauth big"]  phases of driver.py to leave out
#   BENCH_BEFORE_COMMIT, BENCH_AFTER_COMMIT  the commits the binaries were built
#     from, for the report (default: the paths, and this tree's HEAD)
# Other BENCH_* settings reach bench/driver.py. Writes bench/results/alternate.md
# (or BENCH_ALTERNATE_MD).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
before=${1:?usage: bench/alternate.sh BEFORE_BIN [AFTER_BIN]}
after=${2:-${CARGO_TARGET_DIR:-$ROOT/target}/release/castellan}
runs=${BENCH_ALTERNATIONS:-3}
export BENCH_SKIP=${BENCH_SKIP:-betterauth big}

# The same priority arrangement as bench/run.sh (a session of our own).
if [ "$(id -u)" -eq 0 ] && [ "${BENCH_OWN_SESSION:-0}" != 1 ] && command -v setsid >/dev/null 2>&1 \
    && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
    BENCH_OWN_SESSION=1 exec setsid --wait "$ROOT/bench/alternate.sh" "$@"
fi
if [ "${BENCH_OWN_SESSION:-0}" = 1 ]; then
    printf '%s\n' "${BENCH_NICE:--10}" >/proc/self/autogroup 2>/dev/null || true
fi

out=$(mktemp -d /tmp/castellan-alternate.XXXXXX)
for i in $(seq 1 "$runs"); do
    for side in before after; do
        bin=$before
        [ "$side" = after ] && bin=$after
        printf '==> run %s of %s: %s (%s)\n' "$i" "$runs" "$side" "$bin"
        BENCH_BIN=$bin BENCH_LABEL=$side BENCH_JSON="$out/$side-$i.json" BENCH_MD="$out/$side-$i.md" \
            python3 bench/driver.py >"$out/$side-$i.log" 2>&1
    done
done

python3 - "$out" "$runs" "${BENCH_BEFORE_COMMIT:-$before}" "${BENCH_AFTER_COMMIT:-$(git rev-parse --short HEAD)}" <<'EOF'
import json, os, statistics, sys
out, runs, before_commit, after_commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(side):
    return [json.load(open(f"{out}/{side}-{i}.json")) for i in range(1, runs + 1)]
sides = {s: load(s) for s in ("before", "after")}
names = [t["name"] for t in sides["after"][0]["targets"] if t["name"].startswith("castellan_")]
def med(side, name, key):
    vals = [t[key] for run in sides[side] for t in run["targets"] if t["name"] == name]
    return statistics.median(vals) if vals else None
lines = [
    "# castellan before/after, alternating runs",
    "",
    f"- before: {before_commit}; after: {after_commit}; {runs} runs of each, in turn (A B A B ...)",
    "- each cell: the median over the runs of that run's median requests/s (and p99)",
    "- written by `bench/alternate.sh`; the machine is shared, so read the ratios, not the absolute numbers",
    "",
    "| phase | before req/s | after req/s | after/before | before p99 ms | after p99 ms |",
    "|---|---:|---:|---:|---:|---:|",
]
for n in names:
    b, a = med("before", n, "rps"), med("after", n, "rps")
    bp, ap = med("before", n, "p99_ms"), med("after", n, "p99_ms")
    if b is None or a is None:
        continue
    lines.append(f"| {n} | {b:,.1f} | {a:,.1f} | {a / b:.3f} | {bp:.2f} | {ap:.2f} |")
text = "\n".join(lines) + "\n"
open(os.environ.get("BENCH_ALTERNATE_MD", "bench/results/alternate.md"), "w").write(text)
print(text)
EOF
rm -rf "$out"
