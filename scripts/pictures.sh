#!/usr/bin/env bash
# Regenerates every picture in docs/images/:
#   bench-*.png     from bench/results/latest.json (bench/charts.py)
#   dashboard.png   the Grafana dashboard's queries on a real Prometheus
#                   scraping a test run (scripts/dashboard_chart.py, ~1 min)
#   pages/*.png     the hosted pages, as the browser suite's journey on
#                   SQLite saw them (scripts/suites/30-pages.sh, ~4 min)
#
# Usage: scripts/pictures.sh            (builds castellan unless CASTELLAN_TEST_BIN is set)
# Installs what it needs from the package registries (prometheus with apt,
# matplotlib and the others with pip), like the test suites.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/suites/lib.sh
. scripts/suites/lib.sh

ensure_apt prometheus prometheus
ensure_pip matplotlib matplotlib
ensure_pip yaml pyyaml
ensure_pip requests requests
ensure_pip pyotp pyotp
ensure_pip promql_parser promql-parser
ensure_pip prometheus_client prometheus-client

if [ -z "${CASTELLAN_TEST_BIN:-}" ]; then
    suite_step "cargo build --bin castellan"
    cargo build --bin castellan
    CASTELLAN_TEST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/castellan"
fi
export CASTELLAN_TEST_BIN

suite_step "benchmark charts from bench/results/latest.json"
python3 bench/charts.py
suite_step "dashboard picture from a Prometheus scrape of a test run"
python3 scripts/dashboard_chart.py
suite_step "page screenshots from the browser suite's journey on SQLite"
shots=$(mktemp -d)
trap 'rm -rf "$shots"' EXIT
CASTELLAN_TEST_SKIP_GATES=1 CASTELLAN_TEST_SKIP_CARGO=1 CASTELLAN_TEST_SUITES=pages \
    CASTELLAN_TEST_ARTIFACTS="$shots" scripts/test.sh
for shot in "$shots"/pages/sqlite-*.png; do
    cp "$shot" "docs/images/pages/${shot##*/sqlite-}"
done
