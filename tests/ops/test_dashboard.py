"""The Grafana dashboard and the alert rules name only metrics and labels
castellan really exports: checked against a scrape of a real castellan
after traffic, and against a real Prometheus evaluating every query."""

import json
import time

import harness
import pytest

# Series castellan declares but a SQLite instance after this traffic does
# not export: the PostgreSQL pool, its timeouts, and the cleanup job's purge.
NOT_ON_SQLITE = {
    "castellan_db_pool_connections",
    "castellan_db_pool_idle_connections",
    "castellan_db_pool_in_use_connections",
    "castellan_db_pool_max_connections",
    "castellan_db_pool_acquire_timeouts_total",
    "castellan_sessions_purged_total",
}


def known(scraped):
    """What an expression may use: scraped series with their labels, plus
    names declared in src/metrics.rs (with the labels src/ attaches)."""
    out = {k: set(v) for k, v in harness.declared_metrics().items()}
    for name, labels in scraped.items():
        out.setdefault(name, set()).update(labels)
    return out


def base_name(series):
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) + "_bucket" in harness.declared_metrics():
            return series.removesuffix(suffix)
    return series


def test_the_traffic_exercised_what_the_dashboard_shows(served, scrape):
    _, did = served
    text, scraped = scrape
    assert did["failed"] >= 1 and did["throttled"] >= 1 and did["mfa"] == 1, did
    for kind in ("login_succeeded", "login_failed", "mfa_failed", "backup_code_used", "throttled"):
        assert f'kind="{kind}"' in text, kind
    assert 'limit="backoff"' in text
    used = {name for _, e in harness.dashboard_exprs() for name, _ in harness.references(e)[0]}
    missing = sorted(n for n in used if n not in scraped and base_name(n) not in NOT_ON_SQLITE)
    assert not missing, f"the traffic did not make castellan export {missing}"


def test_every_dashboard_query_uses_exported_metrics_and_labels(scrape):
    _, scraped = scrape
    problems = harness.unknown_references(harness.dashboard_exprs(), known(scraped))
    assert not problems, "\n".join(problems)


def test_every_alert_rule_uses_exported_metrics_and_labels(scrape):
    _, scraped = scrape
    names = known(scraped)
    names.update(harness.PROMETHEUS_SERIES)
    names.update({r: set() for r in harness.recorded_names()})
    problems = harness.unknown_references(harness.rule_exprs(), names)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_renamed_metric_or_label(scrape):
    _, scraped = scrape
    bad = [
        ("renamed metric", 'sum(rate(castellan_http_request_total[5m]))'),
        ("wrong label", 'sum(rate(castellan_security_events_total{event="login_failed"}[5m]))'),
        ("wrong grouping", 'sum by (path) (rate(castellan_http_requests_total[5m]))'),
        ("le on a counter", 'castellan_http_requests_total{le="1"}'),
        ("syntax", 'sum(rate(castellan_http_requests_total[5m])'),
    ]
    problems = harness.unknown_references(bad, known(scraped))
    assert {p.split(":")[0] for p in problems} == {t for t, _ in bad}, problems


def test_the_dashboard_shows_every_declared_metric():
    used = {base_name(name) for _, e in harness.dashboard_exprs() for name, _ in harness.references(e)[0]}
    declared = {base_name(n) for n in harness.declared_metrics()}
    assert declared - used == set(), f"not on the dashboard: {sorted(declared - used)}"


def test_the_dashboard_is_a_well_formed_grafana_dashboard():
    dash = json.loads(harness.DASHBOARD.read_text())
    assert dash["uid"] == "castellan" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            # every query follows the instance picker
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


def test_metrics_carry_no_secret_used_by_the_traffic(served, scrape):
    c, _ = served
    text, _ = scrape
    for secret in (harness.PASSWORD, c.admin_token, "cst_"):
        assert secret not in text


def test_a_real_prometheus_evaluates_every_query_and_loads_the_rules(served):
    c, _ = served
    prom = harness.Prometheus(c).start()
    try:
        prom.wait_scraped()
        # more traffic while Prometheus scrapes every second, so rates exist
        c.traffic(users=2, session_checks=20, failed_logins=7)
        time.sleep(4)
        c.traffic(users=2, session_checks=20, failed_logins=7)
        time.sleep(3)
        empty = []
        for title, expr in harness.dashboard_exprs():
            result = prom.query(harness.concrete(expr, "30s"))  # raises on a refused query
            if not result:
                empty.append((title, expr))
        names = {n for t, e in empty for n, _ in harness.references(e)[0]}
        assert all(base_name(n) in NOT_ON_SQLITE for n in names), f"no data for {empty}"
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == len(harness.rule_exprs())
        assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    finally:
        prom.stop()


def test_on_postgresql_the_pool_panels_match_the_exported_series(served_pg):
    c, _ = served_pg
    scraped = harness.scraped_metrics(c.metrics())
    pool = {n for n in NOT_ON_SQLITE if n.startswith("castellan_db_pool_") and not n.endswith("_total")}
    assert pool <= set(scraped), f"PostgreSQL does not export {sorted(pool - set(scraped))}"
    exprs = [(t, e) for t, e in harness.dashboard_exprs() + harness.rule_exprs()
             if "castellan_db_pool_" in e]
    assert exprs
    names = known(scraped)
    names.update(harness.PROMETHEUS_SERIES)
    problems = harness.unknown_references(exprs, names)
    assert not problems, "\n".join(problems)
    pool_max = [line for line in c.metrics().splitlines() if line.startswith("castellan_db_pool_max_connections ")]
    assert pool_max and float(pool_max[0].split()[1]) >= 1
