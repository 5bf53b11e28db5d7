"""Fixtures of the operations suite (scripts/suites/60-ops.sh)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402


@pytest.fixture(scope="session")
def castellan_bin() -> str:
    path = os.environ.get("CASTELLAN_TEST_BIN", "")
    if not (path and os.access(path, os.X_OK)):
        pytest.fail("CASTELLAN_TEST_BIN must name a built castellan (run through scripts/test.sh)")
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


@pytest.fixture(scope="session")
def served_pg(castellan_bin):
    """A castellan on a fresh database of the suite's PostgreSQL cluster
    (CASTELLAN_TEST_PG_URL from scripts/test.sh), after the same traffic."""
    import re
    import shutil
    import subprocess
    import uuid

    url = os.environ.get("CASTELLAN_TEST_PG_URL")
    if not url:
        pytest.skip("CASTELLAN_TEST_PG_URL is not set (run through scripts/test.sh for PostgreSQL)")
    psql = os.path.join(os.environ.get("CASTELLAN_TEST_PG_BIN", ""), "psql")
    if not os.access(psql, os.X_OK):
        psql = shutil.which("psql") or pytest.fail("psql not found")
    name = f"ops_{uuid.uuid4().hex[:10]}"
    subprocess.run([psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    db_url = re.sub(r"/[^/?]*\?", f"/{name}?", url, count=1)
    c = harness.Castellan(castellan_bin, extra_env={"CASTELLAN_DATABASE_URL": db_url}).start()
    try:
        did = c.traffic()
        yield c, did
    finally:
        c.stop()
        subprocess.run([psql, url, "-X", "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       capture_output=True)
