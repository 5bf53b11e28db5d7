"""Starts castellan (the built binary) on SQLite or a fresh PostgreSQL
database, reads its file-transport mail, and checks pages the same way
everywhere: headers, markup rules, axe-core, 360 px layout, screenshots."""

import email
import email.policy
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from html.parser import HTMLParser

PASSWORD = "correct horse battery staple galaxy"
NEW_PASSWORD = "a completely different passphrase now"
SECRET_KEY = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0="
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir():
    base = os.environ.get("CASTELLAN_TEST_ARTIFACTS") or os.path.join(
        os.environ.get("CASTELLAN_TEST_REPORTS", os.path.join(REPO, "target", "test-reports")),
        "artifacts")
    path = os.path.join(base, "pages")
    os.makedirs(path, exist_ok=True)
    return path


def fresh_pg_url():
    """A new database on the suite's PostgreSQL cluster."""
    admin = os.environ.get("CASTELLAN_TEST_PG_URL")
    if not admin:
        raise RuntimeError("CASTELLAN_TEST_PG_URL is not set: run through scripts/test.sh")
    name = "pages_" + uuid.uuid4().hex[:16]
    psql = os.path.join(os.environ.get("CASTELLAN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")
    if not os.path.exists(psql):
        psql = shutil.which("psql") or psql
    subprocess.run([psql, "-q", "-v", "ON_ERROR_STOP=1", admin, "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    base, _, query = admin.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


class Castellan:
    """One castellan process with its own data directory."""

    def __init__(self, backend, env=None, port=None, public_base_url=None):
        self.backend = backend
        self.dir = tempfile.mkdtemp(prefix="castellan-pages-")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.public = public_base_url or self.url
        binary = os.environ.get("CASTELLAN_TEST_BIN") or os.path.join(REPO, "target", "debug", "castellan")
        vars = {
            "PATH": os.environ.get("PATH", ""),
            "CASTELLAN_LISTEN": f"127.0.0.1:{self.port}",
            "CASTELLAN_PUBLIC_BASE_URL": self.public,
            "CASTELLAN_DATA_DIR": os.path.join(self.dir, "data"),
            "CASTELLAN_MAIL_TRANSPORT": "file",
            "CASTELLAN_MAIL_DIR": os.path.join(self.dir, "mail"),
            "CASTELLAN_SECRET_KEY": SECRET_KEY,
            "CASTELLAN_ARGON2_MEMORY_KIB": "8192",
            "CASTELLAN_ARGON2_ITERATIONS": "1",
            "CASTELLAN_RATE_LOGIN_PER_IP": "10000/1m",
            "CASTELLAN_RATE_REGISTRATION_PER_IP": "10000/1m",
            "CASTELLAN_RATE_MFA_PER_IP": "10000/1m",
            "CASTELLAN_RATE_RESET_PER_IP": "10000/1m",
            "CASTELLAN_RATE_VERIFICATION_PER_IP": "10000/1m",
            "CASTELLAN_LOG_FORMAT": "json",
        }
        if backend == "postgres":
            vars["CASTELLAN_DATABASE_URL"] = fresh_pg_url()
        vars.update(env or {})
        self.log = open(os.path.join(self.dir, "castellan.log"), "wb")
        self.proc = subprocess.Popen([binary, "serve"], env=vars, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("castellan exited: " + self.log_text())
            try:
                urllib.request.urlopen(self.url + "/health/ready", timeout=1)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("castellan did not become ready")

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.dir, "castellan.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def mails(self):
        """Plain-text parts of the mails, oldest first."""
        files = sorted(glob.glob(os.path.join(self.dir, "mail", "*.eml")), key=os.path.getmtime)
        texts = []
        for path in files:
            with open(path, "rb") as f:
                msg = email.message_from_binary_file(f, policy=email.policy.default)
            part = msg.get_body(preferencelist=("plain",))
            texts.append(part.get_content() if part else "")
        return texts

    def mailed_link(self, path, after=0, timeout=10):
        """The newest mailed link to `path` (`/ui/password/reset`...)."""
        pattern = re.compile(re.escape(self.public + path) + r"\?token=[A-Za-z0-9_-]{43}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            mails = self.mails()
            for text in reversed(mails[after:]):
                m = pattern.search(text)
                if m:
                    return m.group(0)
            time.sleep(0.2)
        raise AssertionError(f"no mail with a link to {path}")


class Markup(HTMLParser):
    """Collects what the page rules look at."""

    def __init__(self):
        super().__init__()
        self.inputs, self.labels, self.forms, self.bad_tags = [], set(), [], []
        self.inline_scripts = 0
        self.style_attrs = 0
        self.event_attrs = []
        self._in_script_without_src = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("object", "embed", "applet", "iframe", "style", "base"):
            self.bad_tags.append(tag)
        if tag == "script":
            if not a.get("src"):
                self.inline_scripts += 1
        if "style" in a:
            self.style_attrs += 1
        self.event_attrs += [k for k in a if k.startswith("on")]
        if tag == "input":
            self.inputs.append(a)
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        if tag == "form":
            self.forms.append({"attrs": a, "inputs": []})
        if tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(a)


def check_markup(html, name):
    m = Markup()
    m.feed(html)
    assert not m.bad_tags, f"{name}: forbidden tags {m.bad_tags}"
    assert m.inline_scripts == 0, f"{name}: inline script"
    assert m.style_attrs == 0, f"{name}: inline style"
    assert not m.event_attrs, f"{name}: event handler attributes {m.event_attrs}"
    for i in m.inputs:
        kind = i.get("type", "text")
        if kind == "hidden" or "hidden" in i:
            continue
        assert i.get("id") in m.labels, f"{name}: input {i} has no label"
        assert i.get("autocomplete") != "off" or i.get("name") == "backup_code", f"{name}: autocomplete=off on {i}"
        if "password" in (i.get("name") or ""):
            assert kind == "password", f"{name}: password input without type=password: {i}"
            assert i.get("autocomplete") in ("current-password", "new-password"), f"{name}: {i}"
        if i.get("name") in ("totp_code", "code"):
            assert i.get("autocomplete") == "one-time-code", f"{name}: {i}"
        if i.get("name") == "email" or i.get("name") == "username":
            assert i.get("autocomplete") == "username", f"{name}: {i}"
    for f in m.forms:
        if (f["attrs"].get("method") or "get").lower() == "post":
            tokens = [i for i in f["inputs"] if i.get("name") == "csrf" and i.get("value")]
            assert tokens, f"{name}: a POST form without a CSRF token: {f['attrs']}"
    return m


def parse_csp(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def check_headers(headers, name, authenticated, allowed_origins=("https://app.example.com",)):
    h = {k.lower(): v for k, v in headers.items()}
    assert h.get("content-type", "").startswith("text/html"), f"{name}: {h.get('content-type')}"
    csp = parse_csp(h["content-security-policy"])
    assert csp.get("object-src") == ["'none'"], f"{name}: {csp}"
    assert csp.get("base-uri") == ["'none'"], f"{name}: {csp}"
    assert csp.get("frame-ancestors") == ["'none'"], f"{name}: {csp}"
    assert csp.get("default-src") == ["'none'"], f"{name}: {csp}"
    for directive in ("script-src", "style-src", "default-src", "img-src"):
        for source in csp.get(directive, []):
            assert source not in ("'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"), f"{name}: {directive} {source}"
            assert not source.startswith("http"), f"{name}: third-party source {source} in {directive}"
    for source in csp.get("form-action", []):
        assert source == "'self'" or source in allowed_origins, f"{name}: form-action {source}"
    assert h.get("referrer-policy") == "no-referrer", name
    assert h.get("cross-origin-opener-policy") == "same-origin", name
    assert h.get("x-content-type-options") == "nosniff", name
    if authenticated:
        assert "no-store" in h.get("cache-control", ""), f"{name}: cache-control {h.get('cache-control')}"
    assert "set-cookie" not in h or "cst_" not in h.get("set-cookie", "") or "HttpOnly" in h["set-cookie"]


AXE = None


def axe_source():
    global AXE
    if AXE is None:
        path = os.environ.get("CASTELLAN_AXE_JS") or os.path.expanduser(
            "~/.cache/castellan-tests/axe/node_modules/axe-core/axe.min.js")
        with open(path, encoding="utf-8") as f:
            AXE = f.read()
    return AXE


def run_axe(page, name):
    # Evaluated over the DevTools protocol, which the page's CSP does not
    # govern: the pages themselves allow no inline or injected script.
    result = page.evaluate(axe_source() + "\n;axe.run(document, {resultTypes: ['violations']})"
                           ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
                           " nodes: v.nodes.map(n => n.target.join(' '))})))")
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    with open(os.path.join(artifacts_dir(), f"{name}.axe.json"), "w") as f:
        json.dump(result, f, indent=1)
    assert not bad, f"{name}: axe violations {bad}"
    return result


class Pages:
    """Checks every page a test visits: headers, markup, axe, width, screenshot."""

    def __init__(self, context, backend, allowed_origins=("https://app.example.com",)):
        self.backend = backend
        self.allowed = allowed_origins
        self.last_document = {}
        self.requests = []
        self.seen = []
        context.on("request", lambda r: self.requests.append(r.url))
        context.on("response", self._response)

    def _response(self, resp):
        if resp.request.resource_type == "document" and resp.request.frame.parent_frame is None:
            self.last_document[id(resp.frame.page)] = resp

    def check(self, page, name, authenticated):
        page.wait_for_load_state("load")
        resp = self.last_document[id(page)]
        check_headers(resp.all_headers(), name, authenticated, self.allowed)
        check_markup(resp.text(), name)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= page.viewport_size["width"], f"{name}: {width}px wide at {page.viewport_size['width']}px"
        run_axe(page, f"{self.backend}-{name}")
        if authenticated:
            # ASVS-7.4.4: a visible sign-out that posts with the CSRF token.
            out = page.locator("form[action='/ui/sign-out'] button").first
            assert out.is_visible(), f"{name}: no visible sign-out"
            token = page.locator("form[action='/ui/sign-out'] input[name=csrf]").first.get_attribute("value")
            assert token, f"{name}: sign-out without CSRF token"
        folder = artifacts_dir()
        page.screenshot(path=os.path.join(folder, f"{self.backend}-{name}-360.png"), full_page=True)
        size = page.viewport_size
        page.set_viewport_size({"width": 1024, "height": 800})
        page.screenshot(path=os.path.join(folder, f"{self.backend}-{name}.png"), full_page=True)
        page.set_viewport_size(size)
        self.seen.append(name)


def sign_out(page):
    """Signs out through the page's button and waits for the signed-out page.

    The sign-out response carries Clear-Site-Data; navigating on before it
    has loaded lets Chromium clear cookies the next page sets (its CSRF
    cookie), which made a later form post fail now and then."""
    with page.expect_navigation():
        page.click("#sign-out")
    page.wait_for_load_state("load")
    assert "You are signed out." in page.inner_text("main"), page.url
