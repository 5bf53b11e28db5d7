"""Real processes for the operations tests and pictures: a castellan on SQLite
with an admin listener, traffic against it, a Prometheus scraping it, and the
PromQL expressions of the dashboard and alert rules.

Used by tests/ops/ and by scripts/dashboard_chart.py (the picture in
docs/operations.md), so both see the same traffic and the same queries.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/castellan.json"
RULES = ROOT / "deploy/prometheus/castellan-rules.yml"
METRICS_RS = ROOT / "src/metrics.rs"
PASSWORD = "plum-harbour-violet-engine-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        try:
            if requests.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout}s")


def stop(proc: subprocess.Popen | None, timeout: float = 15.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Castellan:
    """One castellan process on SQLite in a temporary data folder."""

    binary: str
    extra_env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    base: str = ""
    admin: str = ""
    admin_token: str = ""

    def start(self) -> "Castellan":
        self.tmp = Path(tempfile.mkdtemp(prefix="castellan-ops-"))
        port, admin_port = free_port(), free_port()
        self.admin_token = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CASTELLAN_", "PG"))}
        env.update(
            CASTELLAN_LISTEN=f"127.0.0.1:{port}",
            CASTELLAN_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
            CASTELLAN_ADMIN_TOKEN=self.admin_token,
            CASTELLAN_SECRET_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
            CASTELLAN_DATA_DIR=str(self.tmp / "data"),
            CASTELLAN_MAIL_DIR=str(self.tmp / "mail"),
            CASTELLAN_LOG_FORMAT="json",
            CASTELLAN_LOG_LEVEL="warn",
            # Cheap hashes keep the traffic fast on a shared machine.
            CASTELLAN_ARGON2_MEMORY_KIB="8192",
            CASTELLAN_ARGON2_ITERATIONS="1",
        )
        env.update(self.extra_env)
        self.log = open(self.tmp / "castellan.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], cwd=self.tmp, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.base = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin_port}"
        try:
            wait_http(self.base + "/health/live", self.proc, "castellan")
        except RuntimeError:
            self.stop()
            raise RuntimeError("castellan did not start:\n" + self.log_text())
        return self

    def log_text(self) -> str:
        return (self.tmp / "castellan.log").read_text(errors="replace")[-4000:]

    def stop(self):
        stop(self.proc)
        if self.tmp is not None:
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def metrics(self) -> str:
        r = requests.get(
            self.admin + "/metrics",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.text

    # ------------------------------------------------------------ traffic
    def post(self, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.base + path, json=body, headers=headers, timeout=30)

    def get(self, path, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + path, headers=headers, timeout=30)

    def register(self, email: str) -> None:
        r = self.post("/v1/registration", {"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text

    def login(self, email: str, password: str = PASSWORD):
        return self.post("/v1/login", {"email": email, "password": password})

    def traffic(self, users: int = 3, session_checks: int = 30, failed_logins: int = 8) -> dict:
        """Registers users, logs them in and out, checks sessions, fails
        logins until the back-off answers, and runs the TOTP enrolment and a
        login with a backup code. Returns counts of what it did."""
        import pyotp

        assert users >= 2, "the failed logins and the MFA login need separate accounts"
        tag = secrets.token_hex(4)
        emails = [f"ops-{tag}-{i}@example.com" for i in range(users)]
        did = {"registered": 0, "logins": 0, "failed": 0, "checks": 0, "mfa": 0, "throttled": 0}
        tokens = []
        for email in emails:
            self.register(email)
            did["registered"] += 1
            r = self.login(email)
            assert r.status_code == 200, r.text
            did["logins"] += 1
            tokens.append(r.json()["session_token"])
        for i in range(session_checks):
            r = self.get("/v1/session", token=tokens[i % len(tokens)])
            assert r.status_code == 200, r.text
            did["checks"] += 1
        assert self.get("/v1/session", token="cst_not-a-session").status_code == 401
        self.get("/health/ready")
        for _ in range(failed_logins):
            r = self.login(emails[0], "wrong-" + PASSWORD)
            if r.status_code == 429:
                did["throttled"] += 1
            else:
                assert r.status_code == 401, r.text
                did["failed"] += 1
        # TOTP: enrol and activate on the last user's session, then log in
        # again with a wrong TOTP code (mfa_failed) and a backup code.
        email, token = emails[-1], tokens[-1]
        r = self.post("/v1/mfa/totp/enroll", token=token)
        assert r.status_code == 200, r.text
        totp = pyotp.TOTP(r.json()["secret"])
        r = self.post("/v1/mfa/totp/activate", {"code": totp.now()}, token=token)
        assert r.status_code == 200, r.text
        backup = r.json()["backup_codes"]
        r = self.login(email)
        assert r.status_code == 200 and r.json()["session"]["mfa_pending"], r.text
        pending = r.json()["session_token"]
        wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
        assert self.post("/v1/login/mfa", {"totp_code": wrong}, token=pending).status_code == 401
        r = self.post("/v1/login/mfa", {"backup_code": backup[0]}, token=pending)
        assert r.status_code == 200, r.text
        did["mfa"] += 1
        assert self.post("/v1/logout", token=r.json()["session_token"]).status_code == 204
        assert self.post("/v1/password/reset/request", {"email": emails[1 % users]}).status_code == 202
        return did


# ---------------------------------------------------------------- metrics
def declared_metrics() -> dict[str, set[str]]:
    """Metric names declared in src/metrics.rs, each with the label names
    the code attaches to it anywhere in src/ (histograms: the _bucket,
    _sum and _count series, the bucket with `le`)."""
    text = METRICS_RS.read_text()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([a-z_:]+)";', text))
    labels: dict[str, set[str]] = {name: set() for name in consts.values()}
    histograms: set[str] = set()
    src = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    for kind, const, rest in re.findall(
        r"metrics::(counter|gauge|histogram)!\(\s*(?:crate::metrics::)?([A-Z_]+)(.*?)\)\s*[.)]",
        src,
        flags=re.S,
    ):
        if const not in consts:
            continue
        name = consts[const]
        labels[name] |= set(re.findall(r'"([a-z_]+)"\s*=>', rest))
        if kind == "histogram":
            histograms.add(name)
    out: dict[str, set[str]] = {}
    for name, names in labels.items():
        if name in histograms:
            out[name + "_bucket"] = names | {"le"}
            out[name + "_sum"] = set(names)
            out[name + "_count"] = set(names)
        else:
            out[name] = names
    return out


def scraped_metrics(text: str) -> dict[str, set[str]]:
    """Series names in a Prometheus text exposition, with their label names."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


# ------------------------------------------------------------ expressions
def dashboard_exprs(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    dash = json.loads(path.read_text())
    out = []

    def visit(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            visit(p.get("panels", []))

    visit(dash["panels"])
    return out


def rule_exprs(path: Path = RULES) -> list[tuple[str, str]]:
    import yaml

    out = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((rule.get("alert") or rule.get("record"), rule["expr"]))
    return out


def recorded_names(path: Path = RULES) -> set[str]:
    import yaml

    return {
        r["record"]
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }


def concrete(expr: str, rate_interval: str = "5m") -> str:
    """A dashboard expression with Grafana's variables filled in."""
    return expr.replace("$__rate_interval", rate_interval).replace("$instance", ".+")


def references(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """Parses PromQL: the selectors (metric name, label names matched) and
    the label names used by by/without/on/ignoring/group_x."""
    import promql_parser as pp

    selectors: list[tuple[str, set[str]]] = []
    grouping: set[str] = set()

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            names = {m.name for m in node.matchers.matchers}
            if not node.name:
                raise ValueError(f"selector without a metric name in {expr!r}")
            selectors.append((node.name, names - {"__name__"}))
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])
        return True

    pp.walk(pp.parse(concrete(expr)), visit)
    return selectors, grouping


# Labels Prometheus itself attaches to every scraped series, and its own
# per-target series.
TARGET_LABELS = {"instance", "job"}
PROMETHEUS_SERIES = {"up": set()}


def unknown_references(exprs, known: dict[str, set[str]]) -> list[str]:
    """Every metric or label an expression uses that `known` (name -> label
    names) does not have, as readable problems."""
    problems = []
    for title, expr in exprs:
        try:
            selectors, grouping = references(expr)
        except Exception as e:  # a syntax error is a problem too
            problems.append(f"{title}: cannot parse {expr!r}: {e}")
            continue
        used_metrics = set()
        for name, labels in selectors:
            if name not in known:
                problems.append(f"{title}: unknown metric {name}")
                continue
            used_metrics.add(name)
            for label in labels - known[name] - TARGET_LABELS:
                problems.append(f"{title}: {name} has no label {label!r}")
        available = set(TARGET_LABELS).union(*(known[m] for m in used_metrics)) if used_metrics else set(TARGET_LABELS)
        for label in grouping - available:
            problems.append(f"{title}: no metric in the expression has label {label!r}")
    return problems


# ----------------------------------------------------------- Prometheus
@dataclass
class Prometheus:
    """A real Prometheus scraping one castellan's admin listener."""

    target: Castellan
    scrape_interval: str = "1s"
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    url: str = ""

    def start(self) -> "Prometheus":
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus is not installed (Debian package prometheus)")
        self.tmp = Path(tempfile.mkdtemp(prefix="castellan-prom-"))
        token_file = self.tmp / "admin_token"
        token_file.write_text(self.target.admin_token)
        token_file.chmod(0o600)
        admin_hostport = self.target.admin.removeprefix("http://")
        (self.tmp / "prometheus.yml").write_text(
            f"""global:
  scrape_interval: {self.scrape_interval}
  evaluation_interval: {self.scrape_interval}
rule_files:
  - {RULES}
scrape_configs:
  - job_name: castellan
    authorization:
      credentials_file: {token_file}
    static_configs:
      - targets: ['{admin_hostport}']
"""
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(self.tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_http(self.url + "/-/ready", self.proc, "prometheus", timeout=60)
        return self

    def stop(self):
        stop(self.proc)
        if self.tmp is not None:
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def api(self, path: str, **params) -> dict:
        r = requests.get(self.url + "/api/v1/" + path, params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def wait_scraped(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s["value"][1] == "1" for s in self.query('up{job="castellan"}')):
                return
            time.sleep(0.5)
        raise RuntimeError("Prometheus did not scrape castellan")
