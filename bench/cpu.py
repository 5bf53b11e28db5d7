#!/usr/bin/env python3
"""CPU accounting for bench/run.sh: who used the machine during a phase.

  cpu.py snap SERVER_PID [PG_DATA]   prints one snapshot line
  cpu.py diff BEFORE AFTER SECONDS WRK_CPU_FILE...   (SECONDS: fallback window)
                                     prints cpu_server_pct=.. cpu_wrk_pct=.. cpu_other_pct=..

A snapshot holds the machine's busy CPU ticks (/proc/stat: user, nice,
system, irq, softirq) and the ticks of the server under test (castellan, plus
the PostgreSQL cluster's postmaster, its live children and reaped children).
wrk's CPU seconds come from bash's `time` (files holding "user sys").
Percentages are of the whole machine (all CPUs over the time between the
snapshots): "other" is
what neither the server nor wrk used, i.e. other processes and kernel work
not charged to them; a high value means the numbers are disturbed.
"""

import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in parts[1:8])
    return user + nice + system + irq + softirq


def stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid = field 4, utime..cstime = fields 14..17.
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def server_ticks(server_pid: int, pg_data: str) -> int:
    total = 0
    if server_pid > 0:
        st = stat(server_pid)
        if st:
            total += st[1]
    if pg_data:
        try:
            with open(os.path.join(pg_data, "postmaster.pid")) as f:
                postmaster = int(f.readline())
        except (OSError, ValueError):
            postmaster = 0
        if postmaster:
            st = stat(postmaster)
            if st:
                total += st[1] + st[2]  # own time plus reaped children
            for name in os.listdir("/proc"):
                if name.isdigit():
                    st = stat(int(name))
                    if st and st[0] == postmaster:
                        total += st[1]
    return total


def main() -> None:
    if sys.argv[1] == "snap":
        pid = int(sys.argv[2] or 0)
        pg_data = sys.argv[3] if len(sys.argv) > 3 else ""
        print(machine_busy(), server_ticks(pid, pg_data), time.monotonic())
        return
    before = [float(x) for x in open(sys.argv[2]).read().split()]
    after = [float(x) for x in open(sys.argv[3]).read().split()]
    # The window between the two snapshots (wrk's run plus its start and exit).
    seconds = after[2] - before[2] if len(after) > 2 else float(sys.argv[4])
    wrk = 0.0
    for path in sys.argv[5:]:
        try:
            # bash's `time` report ("user sys") is the file's last line.
            wrk += sum(float(x) for x in open(path).read().strip().splitlines()[-1].split()[:2])
        except (OSError, ValueError, IndexError):
            pass
    capacity = seconds * os.cpu_count()
    busy = (after[0] - before[0]) / HZ
    server = (after[1] - before[1]) / HZ
    other = max(busy - server - wrk, 0.0)
    print(
        f"cpu_server_pct={100 * server / capacity:.1f} cpu_wrk_pct={100 * wrk / capacity:.1f} "
        f"cpu_other_pct={100 * other / capacity:.1f} cpu_idle_pct={100 * max(capacity - busy, 0) / capacity:.1f}"
    )


if __name__ == "__main__":
    main()
