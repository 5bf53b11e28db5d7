"""The alert rules load (promtool check rules) and every alert fires on its
synthetic series and stays quiet on normal traffic (promtool test rules)."""

import shutil
import subprocess

import harness
import pytest

TESTS = harness.ROOT / "deploy/prometheus/tests/castellan-rules.test.yml"


def promtool(*args, cwd=None):
    binary = shutil.which("promtool")
    if not binary:
        pytest.fail("promtool is missing: install the Debian package prometheus")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_the_rules():
    r = promtool("check", "rules", str(harness.RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(harness.rule_exprs())} rules found" in r.stdout


def test_promtool_unit_tests_of_every_alert_pass():
    r = promtool("test", "rules", str(TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_firing_test_and_is_in_the_quiet_test():
    import yaml

    alerts = {name for name, _ in harness.rule_exprs() if name[0].isupper()}
    spec = yaml.safe_load(TESTS.read_text())
    quiet = spec["tests"][0]
    assert quiet["name"] == "normal traffic fires nothing"
    assert {t["alertname"] for t in quiet["alert_rule_test"] if t["exp_alerts"] == []} == alerts
    fired = {
        t["alertname"]
        for case in spec["tests"][1:]
        for t in case.get("alert_rule_test", [])
        if t["exp_alerts"]
    }
    assert fired == alerts, f"alerts without a firing test: {alerts - fired}"


def test_the_unit_tests_fail_when_a_threshold_is_wrong(tmp_path):
    # The same tests against rules with the failed-login threshold raised
    # tenfold: promtool must report the surge alert as missing.
    rules = harness.RULES.read_text()
    changed = rules.replace('kind="login_failed"}[5m])) > 2', 'kind="login_failed"}[5m])) > 20')
    assert changed != rules
    (tmp_path / "tests").mkdir()
    (tmp_path / "castellan-rules.yml").write_text(changed)
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    r = promtool("test", "rules", str(tmp_path / "tests" / TESTS.name))
    assert r.returncode != 0
    assert "CastellanFailedLoginSurge" in r.stdout + r.stderr
