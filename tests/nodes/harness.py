"""Three castellan nodes on one PostgreSQL behind HAProxy, and the faults
the scenarios inject: SIGTERM, kill -9, PostgreSQL restarts.

Everything runs on 127.0.0.1 with ports picked at run time. The scenarios
(test_*.py) and the soak (scripts/soak.sh) share this module.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

PASSWORD = "correct horse battery staple nodes"
ADMIN_TOKEN = "nodes-admin-token-" + "x" * 32
SECRET_KEY = base64.b64encode(bytes(range(32))).decode()
AUDIT_KEY = base64.b64encode(bytes(range(32, 64))).decode()
# One request must answer within this (a hang is a failure).
TIMEOUT = 15


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, picked below the kernel's ephemeral range. A port from
    that range (what binding to port 0 returns) can be taken by an outgoing
    connection, such as a node's pool opening connections to PostgreSQL,
    between the pick and the bind of the process it is meant for."""
    top = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(10000, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port found between 10000 and {top}")


class Fatal(AssertionError):
    """A condition that no amount of waiting will fix (a process exited)."""


def wait_until(what: str, check, timeout: float = 30.0, every: float = 0.1, detail=None):
    """Polls `check` until it returns something true. On a timeout or a
    `Fatal`, `detail()` (a log tail, say) is added to the failure."""

    def fail(error: AssertionError):
        if detail is None:
            return error
        return type(error)(f"{error}\n{detail()}")

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Fatal as e:
            raise fail(e) from None
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            pass
        if time.monotonic() > deadline:
            raise fail(AssertionError(f"timed out after {timeout}s waiting for {what}"))
        time.sleep(every)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------ PostgreSQL


def pg_bin() -> Path:
    return Path(os.environ["CASTELLAN_TEST_PG_BIN"])


def psql(url: str, sql: str) -> str:
    out = subprocess.run(
        [str(pg_bin() / "psql"), url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def fresh_database(admin_url: str, prefix: str = "nodes") -> str:
    """A new empty database on the shared cluster; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    psql(admin_url, f"CREATE DATABASE {name}")
    return with_database(admin_url, name)


class PgServer:
    """A throwaway PostgreSQL cluster of our own (initdb in a temp folder,
    own port), so the scenarios may stop and restart it. As root it runs as
    CASTELLAN_TEST_PG_USER, like scripts/test.sh does."""

    def __init__(self):
        self.user = os.environ.get("CASTELLAN_TEST_PG_USER", "")
        self.dir = Path(tempfile.mkdtemp(prefix="castellan-nodes-pg."))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        if self.user:
            shutil.chown(self.dir, self.user)
        os.chmod(self.dir, 0o700)
        self._run("initdb", "-D", str(self.data), "--username=castellan", "--auth=trust",
                  "-E", "UTF8", "--locale=C")
        self.running = False

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(pg_bin() / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stdout}{out.stderr}")
        return out

    @property
    def url(self) -> str:
        return f"postgres://castellan@127.0.0.1:{self.port}/castellan?sslmode=disable"

    @property
    def admin_url(self) -> str:
        return f"postgres://castellan@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def start(self):
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=100 -c fsync=off -c full_page_writes=off", "start")
        self.running = True

    def create_database(self):
        psql(self.admin_url, "CREATE DATABASE castellan")

    def stop(self, mode: str):
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-m", mode, "stop")
        self.running = False

    def destroy(self):
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------- nodes


@dataclass
class Node:
    name: str
    bin: str
    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    extra_env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTELLAN_")}
        data = self.workdir / f"{self.name}-data"
        env.update({
            "CASTELLAN_LISTEN": f"127.0.0.1:{self.port}",
            "CASTELLAN_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            "CASTELLAN_ADMIN_TOKEN": ADMIN_TOKEN,
            "CASTELLAN_DATABASE_URL": self.database_url,
            "CASTELLAN_SECRET_KEY": SECRET_KEY,
            "CASTELLAN_AUDIT_KEY": AUDIT_KEY,
            "CASTELLAN_DATA_DIR": str(data),
            "CASTELLAN_MAIL_DIR": str(self.workdir / "mail"),
            "CASTELLAN_LOG_FORMAT": "json",
            # One client address (127.0.0.1) sends everything here.
            "CASTELLAN_RATE_REGISTRATION_PER_IP": "1000000/1m",
            "CASTELLAN_RATE_LOGIN_PER_IP": "1000000/1m",
            "CASTELLAN_RATE_MFA_PER_IP": "1000000/1m",
            "CASTELLAN_ARGON2_MEMORY_KIB": "8192",
            "CASTELLAN_ARGON2_ITERATIONS": "1",
            "CASTELLAN_HASH_QUEUE": "256",
            "CASTELLAN_DB_MAX_CONNECTIONS": "8",
            "CASTELLAN_DB_ACQUIRE_TIMEOUT": "2s",
            # Above HAProxy's inter x fall (2 x 500ms) plus a check's time.
            "CASTELLAN_SHUTDOWN_DRAIN_DELAY": "3s",
            "CASTELLAN_SHUTDOWN_TIMEOUT": "10s",
        })
        env.update(self.extra_env)
        return env

    def start(self, wait_ready: bool = True):
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already runs"
        log = open(self.log_path, "a")
        log.write(f"---- start {self.starts + 1}\n")
        log.flush()
        self.proc = subprocess.Popen([self.bin, "serve"], env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        if wait_ready:
            self.wait_ready()

    def ready_status(self) -> int | None:
        try:
            return requests.get(self.url + "/health/ready", timeout=2).status_code
        except requests.RequestException:
            return None

    def wait_ready(self, timeout: float = 60.0):
        def check():
            if self.proc is not None and self.proc.poll() is not None:
                raise Fatal(f"{self.name} exited ({self.proc.returncode})")
            return self.ready_status() == 200
        wait_until(f"{self.name} ready", check, timeout, detail=self.tail)

    def terminate(self) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self):
        """kill -9: no drain, no chance to finish anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


class HAProxy:
    """HAProxy from Debian: round robin over the nodes, each health-checked
    on /health/ready. Retries: a request whose connection failed, or that got
    no response at all, is retried (on another node after a redispatch);
    a request that got any HTTP response is never retried."""

    def __init__(self, nodes: list[Node], workdir: Path):
        self.nodes = nodes
        self.port = free_port()
        self.stats_port = free_port()
        self.cfg = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        self.errorfile = workdir / "haproxy-503.http"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(
            f"    server {n.name} 127.0.0.1:{n.port} check" for n in self.nodes
        )
        return f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    # When no node is ready, answer like castellan does: 503 with Retry-After.
    errorfile 503 {self.errorfile}

frontend castellan
    bind 127.0.0.1:{self.port}
    default_backend nodes

frontend stats
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats

backend nodes
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    # A check may take a while on a busy machine; two failures mark a node down.
    timeout check 2s
    default-server inter 500ms fall 2 rise 2
{servers}
"""

    def start(self):
        body = '{"error":{"code":"unavailable","message":"no castellan node is ready","request_id":""}}'
        self.errorfile.write_text(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Retry-After: 2\r\nCache-Control: no-store\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}")
        self.cfg.write_text(self.config())
        check = subprocess.run(["haproxy", "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert check.returncode == 0, f"haproxy config invalid: {check.stdout}{check.stderr}"
        log = open(self.log, "a")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        def every_node_up():
            if self.proc.poll() is not None:
                raise Fatal(f"haproxy exited ({self.proc.returncode})")
            return self.up_count() == len(self.nodes)

        wait_until("haproxy up with every node", every_node_up, 30, detail=self.diagnosis)

    def diagnosis(self) -> str:
        """What HAProxy thinks of each node, and the end of its log."""
        try:
            states = self.server_states()
        except requests.RequestException as err:
            states = f"stats unreachable: {err}"
        return f"server states: {states}\n{log_tail(self.log)}"

    def stats(self) -> list[dict]:
        text = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        lines = [l for l in text.splitlines() if l]
        header = lines[0].lstrip("# ").split(",")
        return [dict(zip(header, l.split(","))) for l in lines[1:]]

    def server_states(self) -> dict:
        return {r["svname"]: r["status"] for r in self.stats()
                if r["pxname"] == "nodes" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def up_count(self) -> int:
        return sum(1 for s in self.server_states().values() if s.startswith("UP"))

    def retries(self) -> dict:
        """Retries and redispatches HAProxy did on the backend so far."""
        for r in self.stats():
            if r["pxname"] == "nodes" and r["svname"] == "BACKEND":
                return {"retries": int(r.get("wretr") or 0), "redispatches": int(r.get("wredis") or 0)}
        return {"retries": 0, "redispatches": 0}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Three nodes (or `count`) on one database, and HAProxy in front."""

    def __init__(self, database_url: str, count: int = 3, extra_env: dict | None = None):
        self.bin = os.environ["CASTELLAN_TEST_BIN"]
        self.workdir = Path(tempfile.mkdtemp(prefix="castellan-nodes."))
        self.database_url = database_url
        self.nodes = [
            Node(f"node{i + 1}", self.bin, database_url, self.workdir, extra_env=dict(extra_env or {}))
            for i in range(count)
        ]
        self.lb = HAProxy(self.nodes, self.workdir)

    def start(self, wait_ready: bool = True):
        for n in self.nodes:
            n.start(wait_ready=False)
        if wait_ready:
            for n in self.nodes:
                n.wait_ready()
            self.lb.start()

    def stop(self):
        self.lb.stop()
        for n in self.nodes:
            n.stop()

    def destroy(self, keep_logs_on_failure: bool = False):
        self.stop()
        if not keep_logs_on_failure:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def audit_verify(self) -> subprocess.CompletedProcess:
        env = self.nodes[0].env()
        return subprocess.run([self.bin, "audit", "verify"], env=env, capture_output=True,
                              text=True, timeout=120)


# --------------------------------------------------------------------- client


class Api:
    """A castellan client bound to one base URL (a node or the balancer)."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()

    def call(self, method: str, path: str, token: str | None = None, json=None,
             admin: bool = False) -> requests.Response:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if admin:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        return self.http.request(method, self.base + path, headers=headers, json=json,
                                 timeout=TIMEOUT)

    def register(self, email: str, password: str = PASSWORD) -> requests.Response:
        return self.call("POST", "/v1/registration", json={"email": email, "password": password})

    def login(self, email: str, password: str = PASSWORD) -> requests.Response:
        return self.call("POST", "/v1/login", json={"email": email, "password": password})

    def session(self, token: str) -> requests.Response:
        return self.call("GET", "/v1/session", token=token)


def new_email(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:16]}@example.com"


class Tally:
    """Thread-safe counters for a report."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.samples: dict[str, list[str]] = {}

    def add(self, key: str, sample: str | None = None, n: int = 1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n
            if sample is not None:
                self.samples.setdefault(key, [])
                if len(self.samples[key]) < 5:
                    self.samples[key].append(sample)

    def get(self, key: str) -> int:
        with self.lock:
            return self.counts.get(key, 0)
