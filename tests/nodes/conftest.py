"""Fixtures for the multi-node scenarios, and the printed report.

Run through scripts/suites/50-nodes.sh (scripts/test.sh), which provides
CASTELLAN_TEST_PG_URL (an admin URL of a throwaway cluster),
CASTELLAN_TEST_PG_BIN, CASTELLAN_TEST_PG_USER and CASTELLAN_TEST_BIN."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Cluster, fresh_database  # noqa: E402

REPORTS: list[tuple[str, dict]] = []


@pytest.fixture(scope="session")
def admin_pg_url() -> str:
    url = os.environ.get("CASTELLAN_TEST_PG_URL")
    if not url or not os.environ.get("CASTELLAN_TEST_BIN"):
        pytest.fail("run through scripts/test.sh: CASTELLAN_TEST_PG_URL and CASTELLAN_TEST_BIN are needed")
    return url


@pytest.fixture(scope="module")
def cluster(admin_pg_url, request):
    """Three nodes on a fresh database with HAProxy in front (per module)."""
    c = Cluster(fresh_database(admin_pg_url))
    try:
        c.start()
    except Exception:
        c.destroy()
        raise
    yield c
    failed = getattr(request.node, "nodes_failed", False)
    c.destroy(keep_logs_on_failure=failed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item.parent.nodes_failed = True


@pytest.fixture
def report(request, record_property):
    """`report(key=value, ...)` adds numbers to this scenario's report,
    printed at the end of the run and stored in the JUnit XML."""
    data: dict = {}

    def add(**kw):
        data.update(kw)

    yield add
    if data:
        REPORTS.append((request.node.name, data))
        for k, v in data.items():
            record_property(k, json.dumps(v) if not isinstance(v, str) else v)


def pytest_terminal_summary(terminalreporter):
    if not REPORTS:
        return
    tr = terminalreporter
    tr.section("multi-node scenario report")
    lines = []
    for name, data in REPORTS:
        lines.append(f"{name}:")
        for k, v in data.items():
            lines.append(f"    {k}: {v}")
    for line in lines:
        tr.write_line(line)
    out = os.environ.get("CASTELLAN_TEST_REPORTS")
    if out:
        Path(out, "nodes-report.txt").write_text("\n".join(lines) + "\n")
