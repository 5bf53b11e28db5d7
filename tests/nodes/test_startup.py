"""Scenario 2: three nodes started at the same moment on an empty database
apply the migrations exactly once and all become ready. Scenario 5, second
half: a node whose database is unreachable at start-up starts anyway,
reports not ready, and becomes ready when the database appears."""

from __future__ import annotations

import os
import time
from pathlib import Path

import requests

from harness import Api, Cluster, Node, PgServer, fresh_database, new_email, psql, wait_until

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "postgres"


def test_three_nodes_on_an_empty_database_migrate_once_and_all_become_ready(admin_pg_url, report):
    cluster = Cluster(fresh_database(admin_pg_url))
    try:
        started = time.monotonic()
        cluster.start(wait_ready=False)  # all three spawned back to back, none waited for
        for n in cluster.nodes:
            n.wait_ready()
        took = time.monotonic() - started
        files = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
        rows = psql(cluster.database_url,
                    "SELECT count(*), count(DISTINCT version), bool_and(success) FROM _sqlx_migrations")
        count, distinct, success = rows.split("|")
        assert int(count) == len(files) == int(distinct), f"{rows} for {len(files)} migration files"
        assert success == "t"
        # Every node serves from the one schema.
        for n in cluster.nodes:
            r = Api(n.url).register(new_email("race"))
            assert r.status_code == 201, f"{n.name}: {r.text}"
        for n in cluster.nodes:
            assert "migrations failed" not in n.tail(200), n.tail()
        report(nodes=3, migration_files=len(files), migration_rows=int(count),
               all_ready_after_s=round(took, 1))
    finally:
        cluster.destroy()


def test_a_node_starts_without_its_database_and_becomes_ready_when_it_appears(report, tmp_path):
    pg = PgServer()
    try:
        pg.start()
        pg.create_database()
        pg.stop("fast")
        node = Node("lonely", os.environ["CASTELLAN_TEST_BIN"], pg.url, tmp_path)
        node.start(wait_ready=False)
        try:
            live = wait_until("liveness", lambda: requests.get(node.url + "/health/live", timeout=2)
                              .status_code == 200, 60)
            assert live
            assert node.proc.poll() is None, "the node exited without its database"
            r = requests.get(node.url + "/health/ready", timeout=5)
            assert r.status_code == 503, r.text
            r = Api(node.url).register(new_email("early"))
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            assert int(r.headers["Retry-After"]) >= 1
            pg.start()
            appeared = time.monotonic()
            node.wait_ready(timeout=30)
            ready_after = time.monotonic() - appeared
            email = new_email("late")
            assert Api(node.url).register(email).status_code == 201
            assert Api(node.url).login(email).status_code == 200
            assert node.starts == 1, "ready without a restart"
            report(not_ready_status=503, api_while_down="503 unavailable + Retry-After",
                   ready_after_database_appeared_s=round(ready_after, 1), restarts=0)
        finally:
            node.stop()
    finally:
        pg.destroy()
