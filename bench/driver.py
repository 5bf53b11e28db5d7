#!/usr/bin/env python3
"""The measuring half of bench/run.sh (which installs and builds first).

Runs castellan and the comparison targets on this machine, one after the
other, loads each with wrk, and prints the seven ratios of issue 17 with
medians over BENCH_ROUNDS rounds, plus p50/p99 of every phase. Writes
bench/results/latest.json (schema below) and latest.md.

Comparison targets (all started here, seeded with the same counts):
  bare        axum returning a fixed JSON body (the HTTP ceiling)
  minimal     axum + rusqlite on blocking threads, one indexed lookup of the
              token's SHA-256 (and the same through an sqlx PostgreSQL pool
              of castellan's default size)
  better-auth better-auth with its SQLite adapter (bench/better-auth)

JSON: {"date", "commit", "machine", "targets": [{"name", "backend", "rps",
"p50_ms", "p99_ms"}], "ratios": [{"name", "value", "target", "met"}],
"flood": [{"backend", "idle_p99_ms", "under_login_p99_ms"}]}

Environment (defaults in brackets):
  BENCH_BIN            castellan binary [target/release/castellan]
  BENCH_TARGETS_BIN    folder with bare, sqlite_check, pg_check [target/release]
  BENCH_HASH_COST      hash_cost example binary [target/release/examples/hash_cost]
  BENCH_USERS [20000]  users and sessions seeded for every target
  BENCH_SMALL [1000] BENCH_BIG [1000000]  session counts of target 6 (SQLite)
  BENCH_ROUNDS [3]  BENCH_DURATION [5]  BENCH_WARMUP [1]  seconds per round
  BENCH_CONNS [64]  BENCH_LOGIN_CONNS [16]  BENCH_WRK_THREADS [1]
  BENCH_SKIP ['']      any of: postgres betterauth big
  BENCH_JSON [bench/results/latest.json]  BENCH_MD [bench/results/latest.md]
  BENCH_LABEL [""]     a note printed with the results (e.g. "before")
  BENCH_COMMIT         the commit to report (default: git HEAD of this tree)
  BENCH_NICE [-10 as root, else 0]  niceness of servers, PostgreSQL and wrk
"""

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
E = os.environ
REL = os.path.join(E.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
BIN = E.get("BENCH_BIN", os.path.join(REL, "castellan"))
TARGETS_BIN = E.get("BENCH_TARGETS_BIN", REL)
HASH_COST = E.get("BENCH_HASH_COST", os.path.join(REL, "examples", "hash_cost"))
USERS = int(E.get("BENCH_USERS", "20000"))
SMALL = int(E.get("BENCH_SMALL", "1000"))
BIG = int(E.get("BENCH_BIG", "1000000"))
ROUNDS = int(E.get("BENCH_ROUNDS", "3"))
DURATION = int(E.get("BENCH_DURATION", "5"))
WARMUP = int(E.get("BENCH_WARMUP", "1"))
CONNS = int(E.get("BENCH_CONNS", "64"))
LOGIN_CONNS = int(E.get("BENCH_LOGIN_CONNS", "16"))
WRK_THREADS = int(E.get("BENCH_WRK_THREADS", "1"))
SKIP = set(E.get("BENCH_SKIP", "").split())
JSON_OUT = E.get("BENCH_JSON", os.path.join(BENCH, "results", "latest.json"))
MD_OUT = E.get("BENCH_MD", os.path.join(BENCH, "results", "latest.md"))
LABEL = E.get("BENCH_LABEL", "")
NICE = int(E.get("BENCH_NICE", "-10" if os.geteuid() == 0 else "0"))
PASSWORD = "ochre-lantern-quiet-harbor-7391"
SEED_EMAIL = "bench-seed@example.com"
SECRET = base64.b64encode(os.urandom(32)).decode()
CPUS = os.cpu_count() or 1
ARGON2_KIB = 19456
# Castellan's default pool size (db_max_connections = 0: 2 x CPUs + 1).
POOL = 2 * CPUS + 1

TMP = tempfile.mkdtemp(prefix="castellan-bench.")
PROCS = []
results = {}  # phase name -> {"backend", "rps", "p50_ms", "p99_ms", "rounds": [...], "peak_rss_mib"}


def log(msg):
    print(msg, flush=True)


def prio():
    return ["nice", "-n", str(NICE)] if NICE else []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(name, argv, env=None, cwd=None):
    out = open(os.path.join(TMP, name + ".log"), "ab")
    p = subprocess.Popen(prio() + argv, env={**E, **(env or {})}, cwd=cwd or TMP,
                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    p.name = name
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def wait_http(p, url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll() is not None:
            tail = open(os.path.join(TMP, p.name + ".log"), "rb").read()[-2000:].decode(errors="replace")
            sys.exit(f"{p.name} exited during start-up:\n{tail}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{p.name} did not answer {url} within {timeout}s")


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def server_pid(p):
    """The pid of the server itself (p runs it under `nice`, which execs)."""
    return p.pid


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def peak_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def parse_wrk(path):
    line = next((l for l in open(path) if l.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"wrk printed no result:\n{open(path).read()[-2000:]}")
    d = {}
    for kv in line[6:].split():
        k, _, v = kv.partition("=")
        d[k] = float(v)
    return d


def wrk(name, url, conns, secs, script, args, env=None):
    out = os.path.join(TMP, name + ".wrk")
    argv = prio() + ["wrk", f"-t{min(WRK_THREADS, conns)}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
                     "--latency", "-s", os.path.join(BENCH, "wrk", script), url, "--"] + [str(a) for a in args]
    with open(out, "w") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                env={**E, "BENCH_WRK_DIR": os.path.join(BENCH, "wrk"), **(env or {})}), out


def ok_rps(d):
    """Requests/s counting 2xx only when the script counted statuses."""
    codes = {k: v for k, v in d.items() if k.startswith("status_")}
    if not codes:
        return d["rps"]
    return sum(v for k, v in codes.items() if k.startswith("status_2")) / d["duration_s"]


def phase(name, backend, url, conns, script, args, env=None, pid=None, parallel=None):
    """Warm-up, then ROUNDS measured rounds; records medians under `name`.
    `parallel` = (name, url, conns, script, args, env): a second load run at
    the same time in every round (the login flood), recorded too."""
    rounds, prounds, peak = [], [], 0.0
    for r in range(-1, ROUNDS):
        secs = WARMUP if r < 0 else DURATION
        if secs <= 0:
            continue
        if pid and r >= 0:
            reset_peak(pid)
        procs = [wrk(f"{name}.{r}", url, conns, secs, script, args, env)]
        if parallel:
            pn, purl, pconns, pscript, pargs, penv = parallel
            procs.append(wrk(f"{pn}.{r}", purl, pconns, secs, pscript, pargs, penv))
        for p, _ in procs:
            p.wait()
        if r < 0:
            continue
        rounds.append(parse_wrk(procs[0][1]))
        if parallel:
            prounds.append(parse_wrk(procs[1][1]))
        if pid:
            peak = max(peak, peak_mib(pid))

    def record(n, rs, be):
        med = lambda k: statistics.median(x[k] for x in rs)
        results[n] = {
            "backend": be,
            "rps": statistics.median(ok_rps(x) for x in rs),
            "p50_ms": med("p50_ms"),
            "p99_ms": med("p99_ms"),
            "non2xx": sum(x.get("non2xx", 0) for x in rs),
            "errors": sum(x.get("socket_errors", 0) for x in rs),
            "rounds": [round(ok_rps(x), 1) for x in rs],
            "peak_rss_mib": round(peak, 1) if pid else None,
        }
        r = results[n]
        log(f"  {n:<34} {r['rps']:>10.1f}/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  rounds {r['rounds']}" + (f"  peak RSS {r['peak_rss_mib']} MiB" if pid else "")
            + (f"  non-2xx {int(r['non2xx'])}" if r["non2xx"] else ""))

    record(name, rounds, backend)
    if parallel:
        record(parallel[0], prounds, backend)


# ------------------------------------------------------------------ castellan
def castellan(tag, db_url, extra_env=None):
    port = free_port()
    data = os.path.join(TMP, tag)
    os.makedirs(data, exist_ok=True)
    env = {
        "CASTELLAN_SECRET_KEY": SECRET,
        "CASTELLAN_DATA_DIR": data,
        "CASTELLAN_MAIL_DIR": os.path.join(data, "mail"),
        "CASTELLAN_LISTEN": f"127.0.0.1:{port}",
        "CASTELLAN_DATABASE_URL": db_url,
        "CASTELLAN_LOG_FORMAT": "json",
        # All load comes from 127.0.0.1: lift the per-address login limit.
        "CASTELLAN_RATE_LOGIN_PER_IP": "1000000000/1m",
        **(extra_env or {}),
    }
    p = start(f"castellan-{tag}", [BIN, "serve"], env=env, cwd=data)
    base = f"http://127.0.0.1:{port}"
    wait_http(p, base + "/health/live")
    return p, base


def seed_castellan_sqlite(tag, n):
    """A SQLite castellan with n seeded users and sessions; returns (proc, base, tokens)."""
    db = os.path.join(TMP, f"{tag}.db")
    url = f"sqlite://{db}"
    p, base = castellan(tag, url)
    status, body = http("POST", base + "/v1/registration", {"email": SEED_EMAIL, "password": PASSWORD})
    if status != 201:
        sys.exit(f"registration returned {status}: {body[:300]!r}")
    stop(p)
    phc = sqlite3.connect(db).execute("SELECT password_hash FROM users WHERE email_key = ?",
                                      (SEED_EMAIL,)).fetchone()[0]
    tokens = os.path.join(TMP, f"{tag}.tokens")
    subprocess.run([sys.executable, os.path.join(BENCH, "seed.py"), "sqlite", db, "--hash", phc,
                    "--users", str(n), "--tokens", tokens], check=True, env={**E, "CASTELLAN_SECRET_KEY": SECRET})
    # Let the OS write the seeded pages back before measuring, so the
    # writeback of a large seed does not land in the measured phase.
    os.sync()
    p, base = castellan(tag, url)
    return p, base, tokens


def sample_tokens(path, k):
    """At most k tokens of a tokens file (wrk holds them all in memory)."""
    out = path + f".{k}"
    with open(path) as f, open(out, "w") as o:
        for i, line in enumerate(f):
            if i >= k:
                break
            o.write(line)
    return out


def verify(base, tokens, session_path="/v1/session"):
    tok = open(tokens).readline().strip()
    status, body = http("GET", base + session_path, headers={"Authorization": f"Bearer {tok}"})
    if status != 200:
        sys.exit(f"a seeded token got {status} from {base}{session_path}: {body[:300]!r}")


def castellan_phases(backend, p, base, tokens, refresh):
    pid = server_pid(p)
    login_args = [USERS, PASSWORD]
    refresh()
    phase(f"castellan_session_{backend}", backend, base + "/v1/session", CONNS, "session.lua", [tokens], pid=pid)
    phase(f"castellan_login_{backend}", backend, base + "/v1/login", LOGIN_CONNS, "login.lua", login_args, pid=pid)
    refresh()
    phase(f"castellan_session_under_login_{backend}", backend, base + "/v1/session", CONNS, "session.lua", [tokens],
          pid=pid, parallel=(f"castellan_login_under_session_{backend}", base + "/v1/login", LOGIN_CONNS,
                             "login.lua", login_args, None))


# ------------------------------------------------------------------ PostgreSQL
class Pg:
    def __init__(self):
        self.bin = self.find_bin()
        self.dir = tempfile.mkdtemp(prefix="castellan-bench-pg.")
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if subprocess.run(["getent", "passwd", "postgres"],
                                                     capture_output=True).returncode == 0 else None
            if self.user is None:
                sys.exit("run as a user other than root, or create the `postgres` user")
            shutil.chown(self.dir, self.user)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.run([f"{self.bin}/initdb", "-D", self.data, "-U", "bench", "--auth=trust", "-E", "UTF8", "--locale=C"])
        self.run([f"{self.bin}/pg_ctl", "-w", "-t", "60", "-D", self.data, "-l", os.path.join(self.dir, "pg.log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c ssl=off "
                        f"-c max_connections=200 -c fsync=off", "start"])
        for db in ("castellan", "minimal"):
            self.sql("postgres", f"CREATE DATABASE {db}")

    @staticmethod
    def find_bin():
        base = "/usr/lib/postgresql"
        versions = sorted(os.listdir(base), key=lambda v: int(v)) if os.path.isdir(base) else []
        if not versions:
            sys.exit("no PostgreSQL server binaries under /usr/lib/postgresql")
        return f"{base}/{versions[-1]}/bin"

    def run(self, argv, **kw):
        if self.user:
            argv = ["runuser", "-u", self.user, "--"] + argv
        return subprocess.run(prio() + argv, check=True, capture_output=True, cwd=self.dir, **kw)

    def url(self, db):
        return f"postgres://bench@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def sql(self, db, text):
        return subprocess.run([f"{self.bin}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                               str(self.port), "-U", "bench", "-d", db, "-Atc", text],
                              check=True, capture_output=True, text=True).stdout.strip()

    def stop(self):
        subprocess.run((["runuser", "-u", self.user, "--"] if self.user else [])
                       + [f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ main
def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{CPUS} CPUs ({model}), {mem} MiB RAM, shared with other work"


def commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def main():
    started = time.time()
    log(f"==> castellan benchmark {LABEL}: {USERS} users/sessions, {ROUNDS} rounds x {DURATION}s "
        f"(+{WARMUP}s warm-up), wrk {WRK_THREADS} thread(s), {CONNS} connections ({LOGIN_CONNS} for logins)")
    log(f"    binary {BIN}; temp {TMP}")

    # One Argon2id hash on one thread, in this run.
    out = subprocess.run(prio() + [HASH_COST, "20"], capture_output=True, text=True, check=True).stdout
    hash_ms = float(out.split("hash_median_ms=")[1].split()[0])
    ideal = CPUS / (hash_ms / 1000)
    log(f"  Argon2id median {hash_ms:.2f} ms on one thread: ideal {CPUS} / {hash_ms / 1000:.4f} s = {ideal:.1f} logins/s")

    # 1. The HTTP ceiling.
    p = start("bare", [os.path.join(TARGETS_BIN, "bare")], env={"BENCH_LISTEN": f"127.0.0.1:{(port := free_port())}"})
    wait_http(p, f"http://127.0.0.1:{port}/health/live")
    phase("bare_axum", None, f"http://127.0.0.1:{port}/health/live", CONNS, "health.lua", [])
    stop(p)

    # 2. Minimal rusqlite session check.
    port = free_port()
    mtok = os.path.join(TMP, "minimal-sqlite.tokens")
    p = start("minimal-sqlite", [os.path.join(TARGETS_BIN, "sqlite_check")],
              env={"BENCH_LISTEN": f"127.0.0.1:{port}", "BENCH_DB": os.path.join(TMP, "minimal.db"),
                   "BENCH_SEED": str(USERS), "BENCH_TOKENS": mtok})
    wait_http(p, f"http://127.0.0.1:{port}/v1/session", timeout=300)
    verify(f"http://127.0.0.1:{port}", mtok)
    phase("minimal_rusqlite_session", "sqlite", f"http://127.0.0.1:{port}/v1/session", CONNS, "session.lua", [mtok])
    stop(p)

    # 3. castellan on SQLite.
    log("==> castellan, SQLite")
    p, base, tokens = seed_castellan_sqlite("sqlite", USERS)
    db = os.path.join(TMP, "sqlite.db")

    def refresh_sqlite(db=db):
        c = sqlite3.connect(db, timeout=30)
        with c:
            c.execute("UPDATE sessions SET last_seen_at = ? WHERE user_agent = 'bench'", (int(time.time() * 1000),))
        c.close()

    verify(base, tokens)
    reset_peak(server_pid(p))
    phase("castellan_health", "sqlite", base + "/health/live", CONNS, "health.lua", [], pid=server_pid(p))
    castellan_phases("sqlite", p, base, tokens, refresh_sqlite)
    stop(p)

    # 4. better-auth on SQLite.
    if "betterauth" not in SKIP:
        log("==> better-auth, SQLite")
        port = free_port()
        btok = os.path.join(TMP, "better-auth.tokens")
        p = start("better-auth", ["node", os.path.join(BENCH, "better-auth", "server.mjs")],
                  env={"BA_PORT": str(port), "BA_DB": os.path.join(TMP, "better-auth.db"), "BA_SEED": str(USERS),
                       "BA_TOKENS": btok, "BA_PASSWORD": PASSWORD, "NODE_ENV": "production"},
                  cwd=os.path.join(BENCH, "better-auth"))
        bbase = f"http://127.0.0.1:{port}"
        wait_http(p, bbase + "/api/auth/ok", timeout=600)
        verify(bbase, btok, "/api/auth/get-session")
        phase("better_auth_get_session", "sqlite", bbase + "/api/auth/get-session", CONNS, "session.lua", [btok],
              env={"BENCH_SESSION_PATH": "/api/auth/get-session"})
        phase("better_auth_sign_in", "sqlite", bbase + "/api/auth/sign-in/email", LOGIN_CONNS, "login.lua",
              [USERS, PASSWORD], env={"BENCH_LOGIN_PATH": "/api/auth/sign-in/email"})
        stop(p)

    # 5. Target 6: 1,000 vs 1,000,000 sessions (castellan on SQLite).
    if "big" not in SKIP:
        log(f"==> castellan, SQLite, {SMALL:,} vs {BIG:,} sessions")
        for tag, n in (("small", SMALL), ("big", BIG)):
            p, base, tokens = seed_castellan_sqlite(tag, n)
            t = sample_tokens(tokens, 100_000)
            phase(f"castellan_session_{tag}", "sqlite", base + "/v1/session", CONNS, "session.lua", [t],
                  pid=server_pid(p))
            stop(p)
            for f in (os.path.join(TMP, f"{tag}.db"), tokens):
                try:
                    os.remove(f)
                except OSError:
                    pass

    # 6. PostgreSQL: the minimal sqlx check and castellan.
    if "postgres" not in SKIP:
        log("==> PostgreSQL")
        pg = Pg()
        try:
            port = free_port()
            ptok = os.path.join(TMP, "minimal-pg.tokens")
            p = start("minimal-pg", [os.path.join(TARGETS_BIN, "pg_check")],
                      env={"BENCH_LISTEN": f"127.0.0.1:{port}", "BENCH_DB": pg.url("minimal"),
                           "BENCH_POOL": str(POOL), "BENCH_SEED": str(USERS), "BENCH_TOKENS": ptok})
            wait_http(p, f"http://127.0.0.1:{port}/v1/session", timeout=300)
            verify(f"http://127.0.0.1:{port}", ptok)
            phase("minimal_sqlx_pg_session", "postgres", f"http://127.0.0.1:{port}/v1/session", CONNS,
                  "session.lua", [ptok])
            stop(p)

            p, base = castellan("postgres", pg.url("castellan"))
            status, body = http("POST", base + "/v1/registration", {"email": SEED_EMAIL, "password": PASSWORD})
            if status != 201:
                sys.exit(f"registration returned {status}: {body[:300]!r}")
            phc = pg.sql("castellan", f"SELECT password_hash FROM users WHERE email_key = '{SEED_EMAIL}'")
            csvdir = os.path.join(TMP, "pgcsv")
            os.makedirs(csvdir, exist_ok=True)
            tokens = os.path.join(TMP, "postgres.tokens")
            subprocess.run([sys.executable, os.path.join(BENCH, "seed.py"), "postgres", csvdir, "--hash", phc,
                            "--users", str(USERS), "--tokens", tokens], check=True,
                           env={**E, "CASTELLAN_SECRET_KEY": SECRET})
            pg.sql("castellan",
                   f"\\copy users (id, email, email_key, password_hash, email_verified, mfa_enabled, created_at, "
                   f"password_changed_at) FROM '{csvdir}/users.csv' WITH (FORMAT csv)")
            pg.sql("castellan",
                   f"\\copy sessions (id, token_hash, user_id, aal, mfa_pending, created_at, authenticated_at, "
                   f"last_seen_at, expires_at, user_agent, ip) FROM '{csvdir}/sessions.csv' WITH (FORMAT csv)")
            pg.sql("castellan", "ANALYZE")
            verify(base, tokens)

            def refresh_pg():
                pg.sql("castellan", "UPDATE sessions SET last_seen_at = now() WHERE user_agent = 'bench'")

            castellan_phases("postgres", p, base, tokens, refresh_pg)
            stop(p)
        finally:
            pg.stop()

    report(hash_ms, ideal, time.time() - started)


def report(hash_ms, ideal, elapsed):
    r = results
    ratios = []

    def ratio(name, num, den, target, higher_is_better=True, note=""):
        if num not in r or den not in r:
            return
        a, b = r[num], r[den]
        value = a["rps"] / b["rps"] if higher_is_better else a["p99_ms"] / b["p99_ms"]
        met = value >= target if higher_is_better else value <= target
        ratios.append({"name": name, "value": round(value, 4), "target": target, "met": met})

    ratio("1a. SQLite session / minimal rusqlite check", "castellan_session_sqlite", "minimal_rusqlite_session", 0.9)
    ratio("1b. SQLite session / bare axum", "castellan_session_sqlite", "bare_axum", 0.3)
    ratio("1c. /health/live / bare axum", "castellan_health", "bare_axum", 0.8)
    ratio("2. PostgreSQL session / minimal sqlx-postgres check", "castellan_session_postgres",
          "minimal_sqlx_pg_session", 1.0)
    ratio("3a. SQLite session / better-auth get-session", "castellan_session_sqlite", "better_auth_get_session", 25.0)
    ratio("3b. SQLite logins / better-auth sign-in", "castellan_login_sqlite", "better_auth_sign_in", 2.0)
    for be in ("sqlite", "postgres"):
        n = f"castellan_login_{be}"
        if n in r:
            v = r[n]["rps"] / ideal
            ratios.append({"name": f"4. {be} logins / (CPUs / one Argon2id hash)", "value": round(v, 4),
                           "target": 0.9, "met": v >= 0.9})
    for be in ("sqlite", "postgres"):
        ratio(f"5. {be} session p99 under login flood / idle", f"castellan_session_under_login_{be}",
              f"castellan_session_{be}", 2.0, higher_is_better=False)
    ratio(f"6. session p99 with {BIG:,} / {SMALL:,} sessions", "castellan_session_big", "castellan_session_small", 1.3,
          higher_is_better=False)
    bound = 64 + CPUS * ARGON2_KIB / 1024
    for be in ("sqlite", "postgres"):
        for kind, n in (("session load", f"castellan_session_{be}"), ("login load", f"castellan_login_{be}")):
            if n in r and r[n]["peak_rss_mib"]:
                v = r[n]["peak_rss_mib"] / bound
                ratios.append({"name": f"7. {be} peak RSS under {kind} / (64 MiB + {CPUS} x Argon2 memory)",
                               "value": round(v, 4), "target": 1.0, "met": v <= 1.0})

    targets = [{"name": k, "backend": v["backend"], "rps": round(v["rps"], 2), "p50_ms": round(v["p50_ms"], 3),
                "p99_ms": round(v["p99_ms"], 3)} for k, v in r.items()]
    flood = [{"backend": be, "idle_p99_ms": r[f"castellan_session_{be}"]["p99_ms"],
              "under_login_p99_ms": r[f"castellan_session_under_login_{be}"]["p99_ms"]}
             for be in ("sqlite", "postgres") if f"castellan_session_under_login_{be}" in r]
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": E.get("BENCH_COMMIT") or commit(), "machine": machine(),
           "targets": targets, "ratios": ratios, "flood": flood}
    os.makedirs(os.path.dirname(JSON_OUT), exist_ok=True)
    with open(JSON_OUT, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    md = [f"# castellan benchmark{(' (' + LABEL + ')') if LABEL else ''}", "",
          f"- date: {doc['date']}; commit: {doc['commit']}; machine: {doc['machine']}",
          f"- {USERS:,} users and sessions per target; {ROUNDS} rounds x {DURATION} s (+{WARMUP} s warm-up); "
          f"wrk {WRK_THREADS} thread(s), {CONNS} connections, {LOGIN_CONNS} for logins; medians of the rounds",
          f"- Argon2id (19456 KiB, t=2, p=1) median {hash_ms:.2f} ms on one thread: ideal {ideal:.1f} logins/s",
          f"- whole run {elapsed:.0f} s. Everything runs on one shared machine: the numbers are noisy.", "",
          "| phase | backend | requests/s (median) | p50 ms | p99 ms | rounds | peak RSS MiB |",
          "|---|---|---:|---:|---:|---|---:|"]
    for k, v in r.items():
        md.append(f"| {k} | {v['backend'] or '-'} | {v['rps']:,.1f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
                  f"{v['rounds']} | {v['peak_rss_mib'] or '-'} |")
    md += ["", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for x in ratios:
        op = "<=" if x["name"][0] in "567" else ">="
        md.append(f"| {x['name']} | {x['value']:.3f} | {op} {x['target']} | {'yes' if x['met'] else 'NO'} |")
    with open(MD_OUT, "w") as f:
        f.write("\n".join(md) + "\n")
    log("")
    log("\n".join(md))
    log(f"\nwrote {JSON_OUT} and {MD_OUT}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p)
        if E.get("BENCH_KEEP_TMP") != "1":
            shutil.rmtree(TMP, ignore_errors=True)
