"""deploy/systemd/castellan.service: systemd accepts it, rates its exposure
2.0 or lower, and the configuration it sets up starts castellan."""

import os
import re
import secrets
import base64
import shutil
import subprocess
import tempfile
from pathlib import Path

import harness
import pytest
import requests

UNIT = harness.ROOT / "deploy/systemd/castellan.service"
TOML = harness.ROOT / "deploy/systemd/castellan.toml"
MAX_EXPOSURE = 2.0


def analyze(*args):
    binary = shutil.which("systemd-analyze")
    if not binary:
        pytest.fail("systemd-analyze is missing: install the Debian package systemd")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def directives(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def image_root(castellan_bin, tmp_path):
    """A root for `systemd-analyze verify --root`: the unit, the system's
    own units (targets it depends on) and castellan at the unit's path."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(UNIT, root / "etc/systemd/system/castellan.service")
    exec_start = directives(UNIT.read_text())["ExecStart"][0].split()[0]
    target = root / exec_start.lstrip("/")
    target.parent.mkdir(parents=True)
    try:
        os.link(castellan_bin, target)
    except OSError:
        shutil.copy(castellan_bin, target)
    return root


def test_systemd_analyze_verify_accepts_the_unit(image_root):
    r = analyze("verify", f"--root={image_root}", "castellan.service")
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_systemd_analyze_verify_reports_a_broken_unit(image_root):
    unit = image_root / "etc/systemd/system/castellan.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = analyze("verify", f"--root={image_root}", "castellan.service")
    assert "NoNewPrivilege" in r.stderr


def exposure(unit_path):
    r = analyze("security", "--offline=true", str(unit_path))
    m = re.search(r"Overall exposure level for castellan\.service: ([0-9.]+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), m.group(2), r.stdout


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    unit = tmp_path / "castellan.service"
    shutil.copy(UNIT, unit)
    level, verdict, report = exposure(unit)
    print(f"exposure {level} {verdict}")
    assert level <= MAX_EXPOSURE and verdict == "OK", report
    # The figure in the docs is the measured one.
    ops = (harness.ROOT / "docs/operations.md").read_text()
    assert f"exposure level **{level}** (OK)" in ops, "update the exposure figure in docs/operations.md"


def test_the_security_rating_drops_without_the_sandbox(tmp_path):
    weak = "\n".join(
        line for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability", "NoNewPriv"))
    )
    unit = tmp_path / "castellan.service"
    unit.write_text(weak)
    level, _, _ = exposure(unit)
    assert level > MAX_EXPOSURE


def test_the_unit_has_the_required_hardening():
    d = directives(UNIT.read_text())
    assert d["DynamicUser"] == ["yes"] and "User" not in d
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "StateDirectory": "castellan", "KillSignal": "SIGTERM",
    }.items():
        assert d.get(key) == [value], key
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in d["SystemCallFilter"]
    assert {c.split(":")[0] for c in d["LoadCredential"]} >= {"secret_key", "admin_token"}
    # castellan's own shutdown_timeout (10s) ends well before systemd's SIGKILL
    assert int(d["TimeoutStopSec"][0].rstrip("s")) > 10


def unit_environment():
    env = {}
    for value in directives(UNIT.read_text())["Environment"]:
        key, val = value.split("=", 1)
        env[key] = val
    return env


@pytest.fixture
def service_dir():
    # Not under pytest's tmp_path: that sits in a root-only folder, and the
    # service runs as an unprivileged user.
    path = Path(tempfile.mkdtemp(prefix="castellan-unit-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_unit_configuration_starts_castellan_with_file_credentials(castellan_bin, service_dir):
    tmp_path = service_dir
    # What systemd would do: the credentials in a directory (%d), the state
    # directory, the unit's Environment= and the example TOML. Ports are
    # moved to free ones; everything else is the unit's.
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    admin_token = secrets.token_urlsafe(32)
    (creds / "secret_key").write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    (creds / "admin_token").write_text(admin_token + "\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASTELLAN_", "PG"))}
    for key, val in unit_environment().items():
        env[key] = val.replace("%d", str(creds)).replace("/var/lib/castellan", str(state))
    port, admin_port = harness.free_port(), harness.free_port()
    env["CASTELLAN_LISTEN"] = f"127.0.0.1:{port}"
    env["CASTELLAN_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
    assert env["CASTELLAN_PROFILE"] == "production"
    # Like DynamicUser=: an unprivileged user owning the state and credentials.
    as_user = {}
    if os.geteuid() == 0:
        for path in (tmp_path, creds, state, creds / "secret_key", creds / "admin_token"):
            os.chown(path, 65534, 65534)
        as_user = {"user": 65534, "group": 65534, "extra_groups": []}
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen([castellan_bin, "--config", str(TOML), "serve"], cwd=state, env=env,
                            stdout=log, stderr=subprocess.STDOUT, **as_user)
    try:
        try:
            harness.wait_http(f"http://127.0.0.1:{port}/health/live", proc, "castellan")
        except RuntimeError as e:
            pytest.fail(f"{e}\n{(tmp_path / 'log').read_text()[-3000:]}")
        metrics = f"http://127.0.0.1:{admin_port}/metrics"
        assert requests.get(metrics, headers={"Authorization": f"Bearer {admin_token}"}, timeout=5).status_code == 200
        assert requests.get(metrics, headers={"Authorization": "Bearer " + "x" * 43}, timeout=5).status_code == 401
        assert (state / "castellan.db").exists(), "SQLite is not in the state directory"
        # `castellan health`, the container health check, sees it live
        r = subprocess.run([castellan_bin, "--config", str(TOML), "health"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        harness.stop(proc)
        log.close()
    assert proc.returncode == 0, "castellan did not stop cleanly on SIGTERM (KillSignal)"
    r = subprocess.run([castellan_bin, "--config", str(TOML), "health"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot connect" in r.stderr, r.stderr
