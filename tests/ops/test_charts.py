"""bench/charts.py turns a benchmark result file into the PNGs of
docs/performance.md."""

import json
import struct
import subprocess
import sys

import harness

CHARTS = ["bench-throughput.png", "bench-latency.png", "bench-flood.png", "bench-ratios.png"]

FIXTURE = {
    "date": "2026-12-01 10:00 UTC",
    "commit": "abc1234",
    "machine": "test fixture",
    "targets": [
        {"name": "GET /health/live", "backend": None, "rps": 30000.0, "p50_ms": 1.5, "p99_ms": 4.0},
        {"name": "GET /v1/session", "backend": "sqlite", "rps": 12000.0, "p50_ms": 4.0, "p99_ms": 9.0},
        {"name": "GET /v1/session", "backend": "postgres", "rps": 8000.0, "p50_ms": 7.0, "p99_ms": 13.0},
        {"name": "POST /v1/login", "backend": "sqlite", "rps": 70.0, "p50_ms": 220.0, "p99_ms": 360.0},
    ],
    "ratios": [
        {"name": "session / health", "value": 0.4, "target": 0.3, "met": True},
        {"name": "flood p99", "value": 2.5, "target": 2.0, "met": False},
    ],
    "flood": [
        {"backend": "sqlite", "idle_p99_ms": 9.0, "under_login_p99_ms": 25.0},
        {"backend": "postgres", "idle_p99_ms": 13.0, "under_login_p99_ms": 50.0},
    ],
}


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def run_charts(src, out):
    return subprocess.run(
        [sys.executable, str(harness.ROOT / "bench/charts.py"), "--input", str(src), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )


def test_charts_are_drawn_from_a_result_file(tmp_path):
    src = tmp_path / "latest.json"
    src.write_text(json.dumps(FIXTURE))
    r = run_charts(src, tmp_path / "images")
    assert r.returncode == 0, r.stderr
    for name in CHARTS:
        path = tmp_path / "images" / name
        assert path.stat().st_size > 10_000, name
        w, h = png_size(path)
        assert w >= 600 and h >= 200, (name, w, h)


def test_charts_refuse_a_file_without_the_schema(tmp_path):
    src = tmp_path / "latest.json"
    src.write_text(json.dumps({k: v for k, v in FIXTURE.items() if k != "flood"}))
    r = run_charts(src, tmp_path / "images")
    assert r.returncode != 0
    assert "flood" in r.stderr


def test_the_committed_result_file_follows_the_schema_and_its_charts_exist():
    data = json.loads((harness.ROOT / "bench/results/latest.json").read_text())
    assert isinstance(data["date"], str) and isinstance(data["commit"], str) and isinstance(data["machine"], str)
    for t in data["targets"]:
        assert isinstance(t["name"], str) and (t["backend"] is None or isinstance(t["backend"], str))
        assert all(isinstance(t[k], (int, float)) and t[k] > 0 for k in ("rps", "p50_ms", "p99_ms"))
        assert t["p50_ms"] <= t["p99_ms"], t
    for r in data["ratios"]:
        assert isinstance(r["met"], bool) and r["target"] > 0 and r["value"] > 0
    for f in data["flood"]:
        assert f["idle_p99_ms"] > 0 and f["under_login_p99_ms"] > 0
    for name in CHARTS:
        png_size(harness.ROOT / "docs/images" / name)
