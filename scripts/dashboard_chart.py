#!/usr/bin/env python3
"""Draws the picture of the Grafana dashboard in docs/operations.md.

    CASTELLAN_TEST_BIN=target/debug/castellan python3 scripts/dashboard_chart.py [--out docs/images/dashboard.png]

No Grafana can be installed from the package registries, so this draws the
dashboard's own queries instead of a screenshot: it starts castellan (SQLite,
temporary folder) and a real Prometheus scraping its /metrics every second,
drives traffic in three phases (steady use, a credential-stuffing burst of
wrong passwords, steady use again), then asks Prometheus for every query of
every panel of deploy/grafana/castellan.json and plots the answers in the
dashboard's layout. Needs the Debian package prometheus and the Python
packages matplotlib, requests, pyyaml, pyotp, promql-parser. Takes about
two minutes. scripts/pictures.sh runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/ops"))

import harness  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RATE = "15s"  # $__rate_interval for a 1 s scrape


def steady(c: harness.Castellan, stop: threading.Event, tokens: list[str]):
    """Session checks all the time, a login now and then."""
    i = 0
    while not stop.is_set():
        c.get("/v1/session", token=tokens[i % len(tokens)])
        if i % 40 == 0:
            c.login(EMAILS[i % len(EMAILS)])
        i += 1
        time.sleep(0.01)


def stuffing(c: harness.Castellan, seconds: float):
    """Wrong passwords for many accounts, as fast as one client goes."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        c.login(EMAILS[n % len(EMAILS)], f"guess-{n}-{secrets.token_hex(4)}")
        n += 1


EMAILS: list[str] = []


def drive(c: harness.Castellan, phase: float) -> list[tuple[str, float, float]]:
    tag = secrets.token_hex(3)
    tokens = []
    for i in range(6):
        email = f"picture-{tag}-{i}@example.com"
        c.register(email)
        EMAILS.append(email)
        tokens.append(c.login(email).json()["session_token"])
    # Once before the picture starts, so each event's series exists and the
    # second round in the steady phase shows as a rate.
    c.traffic(users=2, session_checks=5, failed_logins=6)
    stop = threading.Event()
    worker = threading.Thread(target=steady, args=(c, stop, tokens), daemon=True)
    worker.start()
    phases = []
    t0 = time.time()
    time.sleep(phase / 2)
    c.traffic(users=3, session_checks=10, failed_logins=6)  # MFA and back-off events too
    time.sleep(phase / 2)
    t1 = time.time()
    phases.append(("steady", t0, t1))
    stuffing(c, phase)
    t2 = time.time()
    phases.append(("credential stuffing", t1, t2))
    time.sleep(phase)
    t3 = time.time()
    phases.append(("steady", t2, t3))
    stop.set()
    worker.join()
    return phases


def draw(prom: harness.Prometheus, phases, out: Path, backend: str):
    dash = json.loads(harness.DASHBOARD.read_text())
    start, end = phases[0][1], phases[-1][2]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(17, 3.0 * rows + 1.2), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        drawn = 0
        for target in panel["targets"]:
            expr = harness.concrete(target["expr"], RATE)
            for series in prom.query_range(expr, start, end, "1s"):
                legend = target.get("legendFormat", "")
                for key, value in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1, label=legend or expr[:30])
                drawn += 1
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, end - start)
        ax.grid(alpha=0.3)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_ylabel({"s": "seconds", "reqps": "req/s", "ops": "per second"}.get(unit, ""), fontsize=7)
        for name, a, b in phases:
            if name != "steady":
                ax.axvspan(a - start, b - start, color="#c44e52", alpha=0.08)
        if drawn:
            ax.legend(fontsize=6, loc="upper left", ncol=2 if drawn > 4 else 1, framealpha=0.6)
        else:
            ax.text(0.5, 0.5, f"no data on {backend}", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="#777777")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    when = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(
        f"castellan dashboard (deploy/grafana/castellan.json): its queries on a real Prometheus scrape "
        f"of a test run, {backend}, {when}. Shaded: credential-stuffing burst. x: seconds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/dashboard.png")
    parser.add_argument("--phase", type=float, default=25.0, help="seconds per traffic phase")
    args = parser.parse_args()
    binary = os.environ.get("CASTELLAN_TEST_BIN") or str(ROOT / "target/debug/castellan")
    c = harness.Castellan(binary).start()
    prom = None
    try:
        prom = harness.Prometheus(c).start()
        prom.wait_scraped()
        phases = drive(c, args.phase)
        time.sleep(2)  # the last scrape
        draw(prom, phases, args.out, "SQLite")
    finally:
        if prom:
            prom.stop()
        c.stop()
    print(args.out)


if __name__ == "__main__":
    main()
