#!/usr/bin/env python3
"""Draws the benchmark charts of docs/performance.md from bench/results/latest.json.

    python3 bench/charts.py [--input bench/results/latest.json] [--out docs/images]

Writes bench-throughput.png (requests/s per target), bench-latency.png (p50
and p99 per target), bench-flood.png (session-check p99 idle and under login
load) and bench-ratios.png (the three ratios against their goals). Needs
matplotlib (PyPI). scripts/pictures.sh runs it together with the other
pictures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"sqlite": "#4c72b0", "postgres": "#dd8452", None: "#55a868"}
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", None: "no backend"}


def backends(targets):
    seen = []
    for t in targets:
        if t.get("backend") not in seen:
            seen.append(t.get("backend"))
    return seen


def names(targets):
    seen = []
    for t in targets:
        if t["name"] not in seen:
            seen.append(t["name"])
    return seen


def subtitle(data):
    return f"{data['date']}, commit {data['commit']}; {data['machine']}"


def finish(fig, ax, data, path):
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.text(0.01, 0.01, subtitle(data), fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped_barh(ax, labels, series, fmt):
    """Horizontal grouped bars: one group per label, one bar per series
    (name, colour, values); missing values are skipped."""
    n = len(series)
    height = 0.8 / max(n, 1)
    for i, (name, colour, values) in enumerate(series):
        ys = [g + (i - (n - 1) / 2) * height for g in range(len(labels))]
        pairs = [(y, v) for y, v in zip(ys, values) if v is not None]
        if not pairs:
            continue
        bars = ax.barh([y for y, _ in pairs], [v for _, v in pairs], height, label=name, color=colour)
        ax.bar_label(bars, labels=[fmt(v) for _, v in pairs], padding=3, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()


def throughput(data, out):
    targets = data["targets"]
    labels = names(targets)
    series = []
    for b in backends(targets):
        by_name = {t["name"]: t["rps"] for t in targets if t.get("backend") == b}
        series.append((LABELS.get(b, b), COLOURS.get(b, "#8172b3"), [by_name.get(n) for n in labels]))
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(labels) + 1.6))
    grouped_barh(ax, labels, series, lambda v: f"{v:,.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("requests/s (median; logins: successful/s), log scale")
    ax.set_title("Throughput per target")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlim(right=max(t["rps"] for t in targets) * 8)
    finish(fig, ax, data, out / "bench-throughput.png")


def latency(data, out):
    targets = data["targets"]
    labels = names(targets)
    series = []
    for b in backends(targets):
        by_name = {t["name"]: t for t in targets if t.get("backend") == b}
        colour = COLOURS.get(b, "#8172b3")
        for pct, alpha in (("p50", 0.55), ("p99", 1.0)):
            values = [by_name[n][f"{pct}_ms"] if n in by_name else None for n in labels]
            series.append((f"{LABELS.get(b, b)} {pct}", matplotlib.colors.to_rgba(colour, alpha), values))
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(labels) + 1.6))
    grouped_barh(ax, labels, series, lambda v: f"{v:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency in ms, log scale")
    ax.set_title("Latency percentiles per target (p50, p99)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlim(right=max(t["p99_ms"] for t in targets) * 8)
    finish(fig, ax, data, out / "bench-latency.png")


def flood(data, out):
    rows = data["flood"]
    labels = [LABELS.get(r["backend"], r["backend"]) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(rows) + 1.8))
    series = [
        ("session checks alone", "#4c72b0", [r["idle_p99_ms"] for r in rows]),
        ("session checks while logins run", "#c44e52", [r["under_login_p99_ms"] for r in rows]),
    ]
    grouped_barh(ax, labels, series, lambda v: f"{v:g} ms")
    for i, r in enumerate(rows):
        limit = 2 * r["idle_p99_ms"]
        ax.plot([limit, limit], [i - 0.45, i + 0.45], color="black", linestyle="--", linewidth=1)
        ratio = r["under_login_p99_ms"] / r["idle_p99_ms"]
        ax.annotate(f"x{ratio:.2f} (goal: at most x2, dashed)", (limit, i + 0.45), fontsize=7,
                    xytext=(3, -2), textcoords="offset points")
    ax.set_xlabel("p99 of GET /v1/session in ms")
    ax.set_title("Login flood: session-check p99 alone and under login load")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlim(right=max(r["under_login_p99_ms"] for r in rows) * 1.35)
    finish(fig, ax, data, out / "bench-flood.png")


def ratios(data, out):
    rows = data["ratios"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.6))
    ys = range(len(rows))
    # The schema does not say whether a goal is a floor or a ceiling; `met`
    # does: a floor is met when value >= target. Score value / goal for a
    # floor and goal / value for a ceiling, so right of 1 always means met.
    scores, texts = [], []
    for r in rows:
        floor = r["met"] == (r["value"] >= r["target"])
        scores.append(r["value"] / r["target"] if floor else r["target"] / r["value"])
        goal = ">=" if floor else "<="
        texts.append(f"{r['value']:g} (goal {goal} {r['target']:g}, {'met' if r['met'] else 'missed'})")
    colours = ["#55a868" if r["met"] else "#c44e52" for r in rows]
    bars = ax.barh(list(ys), scores, color=colours)
    ax.bar_label(bars, labels=texts, padding=3, fontsize=7)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(list(ys), [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the goal reached (1 = exactly the goal; right of the line = met)")
    ax.set_title("The three performance ratios per backend")
    ax.set_xlim(0, max(scores) * 1.6)
    finish(fig, ax, data, out / "bench-ratios.png")


SCHEMA = {
    "date": str, "commit": str, "machine": str, "targets": list, "ratios": list, "flood": list,
}
FIELDS = {
    "targets": ("name", "backend", "rps", "p50_ms", "p99_ms"),
    "ratios": ("name", "value", "target", "met"),
    "flood": ("backend", "idle_p99_ms", "under_login_p99_ms"),
}


def check(data) -> list[str]:
    """What the result file lacks of the schema bench/run.sh writes."""
    problems = [f"{key}: missing or not a {kind.__name__}" for key, kind in SCHEMA.items()
                if not isinstance(data.get(key), kind)]
    for key, fields in FIELDS.items():
        for i, row in enumerate(data.get(key) or []):
            problems += [f"{key}[{i}]: no {f}" for f in fields if f not in row]
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images")
    args = parser.parse_args()
    data = json.loads(args.input.read_text())
    problems = check(data)
    if problems:
        raise SystemExit(f"{args.input}: " + "; ".join(problems))
    args.out.mkdir(parents=True, exist_ok=True)
    throughput(data, args.out)
    latency(data, args.out)
    flood(data, args.out)
    ratios(data, args.out)
    for name in ("bench-throughput", "bench-latency", "bench-flood", "bench-ratios"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
