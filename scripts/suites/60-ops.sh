#!/usr/bin/env bash
# Operations kit (issue 19): the Grafana dashboard and the alert rules
# against a real castellan and a real Prometheus, promtool rule tests, the
# systemd unit (systemd-analyze verify and security), the container image
# (podman, when it can run here), and the benchmark charts.
# JUnit: $CASTELLAN_TEST_REPORTS/ops.xml; the container outcome also in
# $CASTELLAN_TEST_REPORTS/container.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/suites/lib.sh
. scripts/suites/lib.sh

ensure_apt promtool prometheus
ensure_apt systemd-analyze systemd
ensure_apt strip binutils
# The container test skips itself, saying why, when podman is missing or
# cannot run containers; an install failure must not stop the other tests.
# runc: crun refuses this kind of machine's hybrid cgroups, runc does not.
( ensure_apt podman podman ) || suite_step "podman could not be installed; the container test will say so"
( ensure_apt runc runc ) || suite_step "runc could not be installed"

ensure_pip pytest pytest
ensure_pip yaml pyyaml
ensure_pip requests requests
ensure_pip pyotp pyotp
ensure_pip matplotlib matplotlib
ensure_pip promql_parser promql-parser
ensure_pip prometheus_client prometheus-client

CASTELLAN_TEST_BIN=$(castellan_bin)
export CASTELLAN_TEST_BIN
: "${CASTELLAN_TEST_REPORTS:=target/test-reports}"
mkdir -p "$CASTELLAN_TEST_REPORTS"
rm -f "$CASTELLAN_TEST_REPORTS/container.txt"

rc=0
python3 -m pytest -q -rs -p no:cacheprovider tests/ops \
    --junitxml="$CASTELLAN_TEST_REPORTS/ops.xml" || rc=$?
if [ -s "$CASTELLAN_TEST_REPORTS/container.txt" ]; then
    suite_step "container: $(tail -n 1 "$CASTELLAN_TEST_REPORTS/container.txt")"
fi
exit "$rc"
