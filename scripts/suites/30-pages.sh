#!/usr/bin/env bash
# Hosted pages and forward auth in a real browser and behind a real nginx:
# the journey, accessibility (axe-core), headers, CSRF, redirects, attacks,
# on SQLite and on PostgreSQL (a fresh database per run on the cluster of
# CASTELLAN_TEST_PG_URL). Screenshots and axe reports go to
# $CASTELLAN_TEST_ARTIFACTS/pages (default: $CASTELLAN_TEST_REPORTS/artifacts/pages).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=lib.sh
source scripts/suites/lib.sh

ensure_apt /usr/bin/chromium chromium
ensure_apt nginx nginx
ensure_pip playwright playwright
ensure_pip pyotp pyotp
ensure_pip pytest pytest
# A hung browser call must fail its test, not stall the whole run; a test
# that fails is run once more, because headless Chromium now and then hangs
# closing a page on a loaded machine (seen twice, cause not found). A test
# that fails twice fails the suite.
ensure_pip pytest_timeout pytest-timeout
ensure_pip pytest_rerunfailures pytest-rerunfailures

# axe-core from npm (only its axe.min.js is used; injected by the tests).
AXE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/castellan-tests/axe
export CASTELLAN_AXE_JS="$AXE_DIR/node_modules/axe-core/axe.min.js"
if [ ! -f "$CASTELLAN_AXE_JS" ]; then
    ensure_apt npm npm
    suite_step "installing axe-core with npm"
    mkdir -p "$AXE_DIR"
    (cd "$AXE_DIR" && npm install --silent --no-audit --no-fund axe-core@4) \
        || suite_die "npm install axe-core failed"
fi

export CASTELLAN_TEST_BIN
CASTELLAN_TEST_BIN=$(castellan_bin)
[ -n "${CASTELLAN_TEST_PG_URL:-}" ] || suite_die "CASTELLAN_TEST_PG_URL is not set (run through scripts/test.sh)"
REPORTS=${CASTELLAN_TEST_REPORTS:-target/test-reports}
mkdir -p "$REPORTS"
export CASTELLAN_TEST_ARTIFACTS=${CASTELLAN_TEST_ARTIFACTS:-$REPORTS/artifacts}
# Playwright only drives the Debian chromium; it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

suite_step "pytest tests/browser (screenshots in $CASTELLAN_TEST_ARTIFACTS/pages)"
# test_passkeys.py has its own suite (35-passkeys.sh).
python3 -m pytest -q -p no:cacheprovider --timeout 180 --timeout-method signal --reruns 1 tests/browser --ignore=tests/browser/test_passkeys.py --junitxml="$REPORTS/pages.xml"
