"""Soak (scenario 6): mixed load on three nodes behind HAProxy for a while,
printing memory (RSS per node), open database connections and errors at
intervals. Not collected by pytest; run it with scripts/soak.sh.

Exit status 0 when no request failed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import Cluster, PgServer, psql  # noqa: E402
from storm import Storm  # noqa: E402


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def open_fds(node) -> int:
    try:
        return len(list(Path(f"/proc/{node.proc.pid}/fd").iterdir()))
    except OSError:
        return -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", default="10m", help="e.g. 10m, 90s (default 10m)")
    ap.add_argument("--interval", default="30s", help="sampling interval (default 30s)")
    ap.add_argument("--workers", type=int, default=4, help="client threads (default 4)")
    args = ap.parse_args()
    duration = parse_duration(args.duration)
    interval = parse_duration(args.interval)

    pg = PgServer()
    cluster = None
    try:
        pg.start()
        pg.create_database()
        cluster = Cluster(pg.url)
        cluster.start()
        storm = Storm(cluster.lb.url, workers=args.workers)
        print(f"soak: {len(cluster.nodes)} nodes behind HAProxy, {args.workers} client threads, "
              f"{args.duration}, sample every {args.interval}", flush=True)
        print(f"{'t(s)':>6} {'requests':>9} {'errors':>7} {'db_conns':>8} "
              + " ".join(f"{n.name + '_rss_MiB':>14} {n.name + '_fds':>9}" for n in cluster.nodes),
              flush=True)
        samples = []
        started = time.monotonic()
        storm.start()
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            time.sleep(min(interval, duration - elapsed))
            elapsed = time.monotonic() - started
            conns = int(psql(pg.admin_url,
                             "SELECT count(*) FROM pg_stat_activity WHERE datname = 'castellan'"))
            s = storm.summary()
            row = {
                "t": round(elapsed),
                "requests": s["requests"],
                "errors": s["failed"],
                "db_conns": conns,
                "rss": [round(n.rss_kib() / 1024, 1) for n in cluster.nodes],
                "fds": [open_fds(n) for n in cluster.nodes],
            }
            samples.append(row)
            print(f"{row['t']:>6} {row['requests']:>9} {row['errors']:>7} {row['db_conns']:>8} "
                  + " ".join(f"{r:>14} {f:>9}" for r, f in zip(row["rss"], row["fds"])), flush=True)
        storm.stop()
        s = storm.summary()
        first, last = samples[0], samples[-1]
        print("soak result:", flush=True)
        print(f"  duration: {args.duration}, requests: {s['requests']} ({s['by_kind']}), "
              f"failed: {s['failed']} {s['failed_by_outcome'] or ''}")
        print(f"  RSS MiB first sample -> last: "
              + ", ".join(f"{n.name} {a} -> {b}" for n, a, b in zip(cluster.nodes, first["rss"], last["rss"])))
        print(f"  RSS MiB max: " + ", ".join(
            f"{n.name} {max(x['rss'][i] for x in samples)}" for i, n in enumerate(cluster.nodes)))
        print(f"  database connections min/max: {min(x['db_conns'] for x in samples)}/"
              f"{max(x['db_conns'] for x in samples)}; open fds per node first -> last: "
              + ", ".join(f"{a} -> {b}" for a, b in zip(first["fds"], last["fds"])))
        print(f"  haproxy: {cluster.lb.retries()}", flush=True)
        return 0 if s["failed"] == 0 else 1
    finally:
        if cluster is not None:
            cluster.destroy()
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
