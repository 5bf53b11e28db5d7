#!/usr/bin/env bash
# Multi-node suite (issue 18): three castellan nodes on one PostgreSQL behind
# HAProxy, health-checked on /health/ready. Scenarios: agreement across
# nodes, the start-up race, a rolling restart under load, kill -9, PostgreSQL
# fast and immediate restarts, a database unreachable at start-up. Prints a
# report per scenario (also in $CASTELLAN_TEST_REPORTS/nodes-report.txt).
# The 10-minute soak is separate: scripts/soak.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/suites/lib.sh
source scripts/suites/lib.sh

ensure_apt haproxy haproxy
ensure_pip pytest pytest
ensure_pip pytest_timeout pytest-timeout
ensure_pip requests requests
ensure_pip pyotp pyotp
castellan_bin >/dev/null
: "${CASTELLAN_TEST_PG_URL:?run through scripts/test.sh}"
: "${CASTELLAN_TEST_PG_BIN:?run through scripts/test.sh}"
REPORTS=${CASTELLAN_TEST_REPORTS:-/tmp}
mkdir -p "$REPORTS"

suite_step "pytest tests/nodes"
python3 -m pytest tests/nodes -p no:cacheprovider -q -rA --timeout 600 -o junit_family=xunit1 \
    --junitxml="$REPORTS/nodes.xml" "$@"
