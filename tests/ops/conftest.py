"""Fixtures of the operations suite (scripts/suites/60-ops.sh)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402


@pytest.fixture(scope="session")
def castellan_bin() -> str:
    path = os.environ.get("CASTELLAN_BIN", "")
    if not (path and os.access(path, os.X_OK)):
        pytest.fail("CASTELLAN_BIN must name a built castellan (run through scripts/test.sh)")
    return path


@pytest.fixture(scope="session")
def served(castellan_bin):
    """One castellan on SQLite after the harness traffic, with what it did."""
    c = harness.Castellan(castellan_bin).start()
    try:
        did = c.traffic()
        yield c, did
    finally:
        c.stop()


@pytest.fixture(scope="session")
def scrape(served):
    c, _ = served
    text = c.metrics()
    return text, harness.scraped_metrics(text)
