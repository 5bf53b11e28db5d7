"""Scenarios 3 to 5: a client storm through HAProxy while nodes are
restarted one by one (SIGTERM), one node is killed with SIGKILL, and
PostgreSQL is restarted with a fast and an immediate shutdown."""

from __future__ import annotations

import signal
import time

import pytest

from harness import Api, Cluster, PgServer, fresh_database, new_email, psql, wait_until
from storm import Storm

WORKERS = 4


def sql_list(values: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def check_durable(cluster: Cluster, storm: Storm) -> dict:
    """Everything that got a 2xx is still there, and no TOTP activation is
    half done. Returns the counts checked."""
    d = storm.durable
    url = cluster.database_url
    accounts = list(d.accounts)
    if accounts:
        found = int(psql(url, f"SELECT count(*) FROM users WHERE email = ANY({sql_list(accounts)})"))
        assert found == len(accounts), f"{len(accounts) - found} acknowledged registrations lost"
    api = Api(cluster.lb.url)
    dead = [t for t in list(d.sessions) if api.session(t).status_code != 200]
    assert not dead, f"{len(dead)} of {len(d.sessions)} acknowledged sessions stopped working"
    # TOTP: enabled with its 10 backup codes, or not enabled and no codes.
    half = psql(url, """
        SELECT count(*) FROM users u
        LEFT JOIN totp_credentials t ON t.user_id = u.id
        WHERE u.mfa_enabled <> (t.enabled_at IS NOT NULL)
           OR (SELECT count(*) FROM backup_codes b WHERE b.user_id = u.id)
              <> CASE WHEN u.mfa_enabled THEN 10 ELSE 0 END""")
    assert half == "0", f"{half} users with a half-done TOTP activation"
    if d.activated:
        on = int(psql(url, f"SELECT count(*) FROM users WHERE mfa_enabled AND "
                           f"email = ANY({sql_list(d.activated)})"))
        assert on == len(d.activated), f"{len(d.activated) - on} acknowledged activations lost"
    tried = int(psql(url, f"SELECT count(*) FROM users WHERE email = ANY({sql_list(d.activation_tried or ['-'])})"))
    return {"accounts_checked": len(accounts), "sessions_checked": len(d.sessions),
            "activations_acknowledged": len(d.activated), "activations_attempted": tried,
            "half_done_activations": 0}


@pytest.fixture
def storm_cluster(admin_pg_url):
    cluster = Cluster(fresh_database(admin_pg_url))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_rolling_restart_under_load_fails_no_client_request(storm_cluster, report):
    cluster = storm_cluster
    storm = Storm(cluster.lb.url, workers=WORKERS)
    storm.start()
    time.sleep(2)
    drains = []
    served_while_draining = 0
    for node in cluster.nodes:
        stopped = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        # Draining: not ready at once, but still serving what arrives.
        wait_until(f"{node.name} not ready", lambda: node.ready_status() == 503, 2, every=0.05)
        assert node.proc.poll() is None, f"{node.name} exited before the drain delay"
        r = Api(node.url).register(new_email("drain"))
        assert r.status_code == 201, f"{node.name} refused a request while draining: {r.status_code}"
        served_while_draining += 1
        assert node.proc.wait(timeout=60) == 0, node.tail()
        drains.append(round(time.monotonic() - stopped, 1))
        node.start()
        wait_until(f"haproxy sees {node.name} up", lambda: cluster.lb.up_count() == 3, 30)
        time.sleep(1)
    time.sleep(2)
    storm.stop()
    summary = storm.summary()
    retries = cluster.lb.retries()
    failed = storm.failures()
    assert not failed, f"{len(failed)} failed client requests: {summary['failed_by_outcome']}"
    durable = check_durable(cluster, storm)
    report(**summary, restarts=3, sigterm_to_exit_s=drains, haproxy=retries,
           not_ready_then_served_while_draining=served_while_draining,
           retry_policy="HAProxy retry-on conn-failure empty-response + option redispatch; "
                        "the client never retries", **durable)


def test_kill_9_during_the_storm_keeps_every_acknowledged_write(storm_cluster, report):
    cluster = storm_cluster
    storm = Storm(cluster.lb.url, workers=WORKERS)
    storm.start()
    time.sleep(3)
    victim = cluster.nodes[1]
    killed_at = time.monotonic()
    victim.kill()
    time.sleep(5)
    storm.stop()
    summary = storm.summary()
    failed = storm.failures()
    # Only requests in flight around the kill may fail; the others keep serving.
    late = [r for r in failed if r.started > killed_at + 2]
    assert not late, f"{len(late)} failures well after the kill: {[(r.kind, r.status, r.error) for r in late[:5]]}"
    after = [r for r in storm.records if r.started > killed_at + 2]
    assert after and all(r.ok for r in after)
    durable = check_durable(cluster, storm)
    around = sorted({(r.kind, r.status, "castellan" if r.from_castellan else "haproxy",
                      round(r.started - killed_at, 1), r.error[:80]) for r in failed})
    report(**summary, killed=victim.name, requests_after_kill=len(after), failure_samples=around[:10],
           failures_around_kill=len(failed), haproxy=cluster.lb.retries(), **durable)


def test_postgres_fast_and_immediate_restarts_during_the_storm(report, tmp_path):
    pg = PgServer()
    cluster = None
    try:
        pg.start()
        pg.create_database()
        cluster = Cluster(pg.url)
        cluster.start()
        storm = Storm(cluster.lb.url, workers=WORKERS)
        storm.start()
        t0 = time.monotonic()
        time.sleep(2)
        windows = []
        recoveries = []
        for mode in ("fast", "immediate"):
            down = time.monotonic()
            pg.stop(mode)
            time.sleep(3)
            pg.start()
            up = time.monotonic()
            for n in cluster.nodes:
                n.wait_ready(timeout=30)
            wait_until("haproxy sees every node up", lambda: cluster.lb.up_count() == 3, 30)
            recovered = time.monotonic()
            recoveries.append(round(recovered - up, 1))
            windows.append((down, recovered))
            time.sleep(3)
        storm.stop()
        failed = storm.failures()
        slack = 1.0
        for r in failed:
            assert r.status == 503, f"{r.kind}: {r.status} {r.error}: only 503 while the database is down"
            assert r.retry_after and int(r.retry_after) >= 1, f"{r.kind}: 503 without Retry-After"
            assert any(r.ended >= a - slack and r.started <= b + slack for a, b in windows), \
                f"{r.kind}: 503 outside the outage windows {[(round(a - t0, 1), round(b - t0, 1)) for a, b in windows]}: " \
                f"sent at {r.started - t0:.1f}s, answered at {r.ended - t0:.1f}s, " \
                f"{'castellan' if r.from_castellan else 'haproxy'}: {r.error}"
        after = [r for r in storm.records if r.started > windows[-1][1] + slack]
        assert after and all(r.ok for r in after), "requests after the recovery fail"
        assert all(n.starts == 1 and n.proc.poll() is None for n in cluster.nodes), "a node restarted"
        durable = check_durable(cluster, storm)
        verify = cluster.audit_verify()
        assert verify.returncode == 0, verify.stdout + verify.stderr
        summary = storm.summary()
        report(**summary,
               unavailable_from_castellan=sum(1 for r in failed if r.from_castellan),
               unavailable_from_haproxy=sum(1 for r in failed if not r.from_castellan),
               outage_s=[round(b - a, 1) for a, b in windows],
               ready_after_restart_s=recoveries, node_restarts=0, audit_verify="ok", **durable)
    finally:
        if cluster is not None:
            cluster.destroy()
        pg.destroy()
