#!/usr/bin/env bash
# Passkeys in a real browser: Chromium's virtual authenticator (DevTools
# protocol) adds a passkey on the hosted account page and signs in with it
# alone, on SQLite and on PostgreSQL. JUnit: $CASTELLAN_TEST_REPORTS/passkeys.xml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=lib.sh
source scripts/suites/lib.sh

ensure_apt /usr/bin/chromium chromium
ensure_pip playwright playwright
ensure_pip pytest pytest
# A hung browser call must fail its test, not stall the whole run; a test
# that fails is run once more, because headless Chromium now and then hangs
# closing a page on a loaded machine (seen twice, cause not found). A test
# that fails twice fails the suite.
ensure_pip pytest_timeout pytest-timeout
ensure_pip pytest_rerunfailures pytest-rerunfailures

export CASTELLAN_TEST_BIN
CASTELLAN_TEST_BIN=$(castellan_bin)
[ -n "${CASTELLAN_TEST_PG_URL:-}" ] || suite_die "CASTELLAN_TEST_PG_URL is not set (run through scripts/test.sh)"
REPORTS=${CASTELLAN_TEST_REPORTS:-target/test-reports}
mkdir -p "$REPORTS"
# Playwright only drives the Debian chromium; it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

suite_step "pytest tests/browser/test_passkeys.py"
python3 -m pytest -q -p no:cacheprovider --timeout 180 --timeout-method signal --reruns 1 tests/browser/test_passkeys.py --junitxml="$REPORTS/passkeys.xml"
