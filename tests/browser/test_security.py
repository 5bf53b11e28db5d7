"""Attacks on the hosted pages: CSRF, open redirects, injected user agents,
server-side validation, static-file traversal, cross-site posts, HTML
errors; plus source checks for what no request can show."""

import glob
import http.client
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from castellan_harness import PASSWORD, REPO, check_headers, check_markup, free_port

HOSTILE = [
    "https://evil.test",
    "https://evil.test/ui/account",
    "//evil.test",
    "//evil.test/",
    "/\\evil.test",
    "\\\\evil.test",
    "https:evil.test",
    "https:/evil.test",
    "http:\\\\evil.test",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "%2F%2Fevil.test",
    "%2f%2fevil.test",
    "https%3A%2F%2Fevil.test",
    "https://app.example.com@evil.test/",
    "https://app.example.com.evil.test/",
    "https://evil.test#https://app.example.com",
    " //evil.test",
    "/\t/evil.test",
]


def csrf_of(html):
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_up_and_in(context, base, email):
    page = context.new_page()
    page.goto(base + "/ui/sign-up")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    assert page.url == base + "/ui/account", page.url
    return page


def post_form(context, url, form, accept="text/html"):
    return context.request.post(url, form=form, headers={"Accept": accept}, max_redirects=0)


def can_sign_in(browser, base, email, password):
    """Whether the sign-in form accepts these credentials, asked over HTTP
    in a context of its own (no page: closing a page there hung Chromium
    twice under load, and the answer is the server's alone)."""
    ctx = browser.new_context()
    try:
        token = csrf_of(ctx.request.get(base + "/ui/sign-in").text())
        r = ctx.request.post(base + "/ui/sign-in", max_redirects=0,
                             form={"csrf": token, "email": email, "password": password})
        assert r.status in (200, 303, 400, 401, 429), r.status
        return r.status == 303 and r.headers["location"] == "/ui/account"
    finally:
        ctx.close()


def test_csrf_missing_or_wrong_gets_403_page_and_changes_nothing(server, browser, backend):
    base = server.url
    email = f"csrf-{backend}-{time.time_ns()}@example.com"
    ctx = browser.new_context()
    page = sign_up_and_in(ctx, base, email)
    real = csrf_of(page.content())
    other_ctx = browser.new_context()
    other_token = csrf_of(sign_up_and_in(other_ctx, base, "other-" + email).content())
    for label, token in [("missing", None), ("wrong", "x" * 43), ("another session's", other_token)]:
        form = {"current_password": PASSWORD, "new_password": "an entirely new passphrase here"}
        if token is not None:
            form["csrf"] = token
        r = post_form(ctx, base + "/ui/account/password", form)
        assert r.status == 403, (label, r.status)
        assert r.headers["content-type"].startswith("text/html"), label
        assert "CSRF" in r.text(), label
        check_headers(r.headers, f"csrf-403-{label}", authenticated=False)
        r = post_form(ctx, base + "/ui/account/sessions/end-others", {} if token is None else {"csrf": token})
        assert r.status == 403, label
    # Signed-out forms too: sign up without the cookie's token.
    r = post_form(ctx, base + "/ui/sign-up", {"email": "new-" + email, "password": PASSWORD})
    assert r.status == 403
    r = post_form(ctx, base + "/ui/sign-up", {"email": "new-" + email, "password": PASSWORD, "csrf": "y" * 43})
    assert r.status == 403
    # Nothing changed: the old password still works, the new account does not exist.
    assert can_sign_in(browser, base, email, PASSWORD)
    assert not can_sign_in(browser, base, "new-" + email, PASSWORD)
    # The real token works (the test can tell the difference).
    r = post_form(ctx, base + "/ui/account/sessions/end-others", {"csrf": real})
    assert r.status in (200, 303), r.status
    for c in (ctx, other_ctx):
        c.close()


# covers: ASVS-3.7.2
def test_return_to_never_leaves_the_allow_list(server, browser, backend):
    base = server.url
    email = f"redirect-{backend}-{time.time_ns()}@example.com"
    ctx = browser.new_context()
    # Not waited for: a plain page.close() hung Chromium now and then under
    # load (twice in this test module); the context goes at the end.
    sign_up_and_in(ctx, base, email).close(run_before_unload=True)
    ctx.clear_cookies()
    page = ctx.new_page()
    page.goto(base + "/ui/sign-in")
    token = csrf_of(page.content())
    for value in HOSTILE:
        # Through the page's own hidden field: a hostile value never gets there.
        page.goto(base + "/ui/sign-in?return_to=" + urllib.parse.quote(value, safe=""))
        assert 'name="return_to"' not in page.content(), value
        # Posted directly: the redirect goes to the default page.
        r = post_form(ctx, base + "/ui/sign-in",
                      {"email": email, "password": PASSWORD, "csrf": token, "return_to": value})
        assert r.status == 303, (value, r.status)
        assert r.headers["location"] == "/ui/account", (value, r.headers["location"])
        ctx.clear_cookies(name="__Host-castellan_session")
    # Raw encodings in the query string are decoded once, never twice.
    for raw in ["%2F%2Fevil.test", "%252F%252Fevil.test", "%5C%5Cevil.test", "https%3A%2F%2Fevil.test"]:
        page.goto(base + "/ui/sign-in?return_to=" + raw)
        assert 'name="return_to"' not in page.content(), raw
    # The browser ends on castellan for a hostile value...
    page.goto(base + "/ui/sign-in?return_to=" + urllib.parse.quote("//evil.test/x", safe=""))
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    assert page.url == base + "/ui/account"
    # ...while allowed targets are kept (the test can fail).
    ctx.clear_cookies(name="__Host-castellan_session")
    for good in ["/ui/account?x=1", "https://app.example.com/after"]:
        r = post_form(ctx, base + "/ui/sign-in",
                      {"email": email, "password": PASSWORD, "csrf": token, "return_to": good})
        assert r.headers["location"] == good
        ctx.clear_cookies(name="__Host-castellan_session")
    # Forward auth builds return_to only from allowed origins.
    for host, expect in [("evil.test", False), ("app.example.com", True)]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request("GET", "/v1/forward-auth?redirect=1", headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": host, "X-Forwarded-Uri": "/x"})
        r = conn.getresponse()
        r.read()
        assert r.status == 302
        loc = r.getheader("location")
        assert loc.startswith(base + "/ui/sign-in"), loc
        assert ("return_to=" in loc) == expect, loc
        conn.close()
    ctx.close()


PAYLOAD = '"><img src=x onerror=alert(1)>{{7*7}}${7*7}<%= 7*7 %>'


# covers: ASVS-1.2.1, ASVS-1.3.7, ASVS-3.2.2
def test_injected_user_agent_shows_as_text(server, browser, backend):
    base = server.url
    email = f"ua-{backend}-{time.time_ns()}@example.com"
    ctx = browser.new_context(user_agent=PAYLOAD)
    dialogs = []
    ctx.on("page", lambda p: p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss())))
    page = sign_up_and_in(ctx, base, email)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(base + "/ui/account")
    time.sleep(0.5)
    assert PAYLOAD in page.inner_text(".sessions"), "the user agent is shown literally"
    assert page.locator(".sessions img").count() == 0
    assert dialogs == []
    source = ctx.request.get(base + "/ui/account").text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in source or "&#60;img" in source
    assert "<img src=x" not in source
    assert "{{7*7}}" in page.inner_text(".sessions") and "${7*7}" in page.inner_text(".sessions")
    ctx.close()


# covers: ASVS-1.2.3
def test_json_carries_hostile_user_agents_exactly(server):
    ua = '"}</script><script>alert(1)</script>\u2028'
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    email = f"json-{time.time_ns()}@example.com"
    body = json.dumps({"email": email, "password": PASSWORD})
    conn.request("POST", "/v1/registration", body=body, headers={"Content-Type": "application/json"})
    assert conn.getresponse().read() and True
    conn.putrequest("POST", "/v1/login")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("User-Agent", ua.encode("utf-8"))
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body.encode())
    r = conn.getresponse()
    token = json.loads(r.read())["session_token"]
    conn.request("GET", "/v1/sessions", headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    sessions = json.loads(r.read())["sessions"]
    assert sessions[0]["user_agent"] == ua
    conn.close()


# covers: ASVS-2.2.2
def test_server_validates_what_the_browser_would_block(server, browser):
    base = server.url
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(base + "/ui/sign-up")
    token = csrf_of(page.content())
    email = f"short-{time.time_ns()}@example.com"
    # The page says minlength; posting around it is refused by the server.
    assert page.get_attribute("#password", "minlength") == "15"
    r = post_form(ctx, base + "/ui/sign-up", {"email": email, "password": "short", "csrf": token})
    assert r.status == 400
    assert 'id="password-error"' in r.text()
    r = post_form(ctx, base + "/ui/sign-up", {"email": "not-an-email", "password": PASSWORD, "csrf": token})
    assert r.status == 400 and 'id="email-error"' in r.text()
    r = post_form(ctx, base + "/ui/sign-in", {"email": email, "password": "x" * 5000, "csrf": token})
    assert r.status == 400
    r = post_form(ctx, base + "/ui/password/reset", {"new_password": "short", "csrf": token})
    assert r.status == 400
    # The JSON API refuses the same.
    r = ctx.request.post(base + "/v1/registration", data={"email": email, "password": "short"})
    assert r.status == 400 and r.json()["error"]["code"] == "weak_password"
    # And no account was created.
    r = ctx.request.post(base + "/v1/registration", data={"email": email, "password": PASSWORD})
    assert r.status == 201
    ctx.close()


def raw_get(port, path, accept="*/*"):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.putheader("Accept", accept)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


# covers: ASVS-13.2.5, ASVS-13.4.3
def test_static_files_have_no_listing_and_no_traversal(server):
    status, headers, body = raw_get(server.port, "/ui/static/castellan.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    for path in ["/ui/static/", "/ui/static", "/static/", "/assets/", "/ui/", "/static",
                 "/ui/static/../../etc/passwd", "/static/../../etc/passwd",
                 "/ui/static/..%2f..%2f..%2fetc%2fpasswd", "/ui/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 "/ui/static/..%252f..%252fetc%252fpasswd", "/ui/static/castellan.css/../../../etc/passwd",
                 "/ui/static/..\\..\\etc\\passwd", "/ui/static/Cargo.toml", "/ui/static/%2e%2e/Cargo.toml",
                 "/ui/static/castellan.css%00.txt", "/templates/_base.html", "/ui/static/.."]:
        status, _, body = raw_get(server.port, path)
        assert status in (303, 404), (path, status)
        assert b"root:" not in body and b"[package]" not in body and b"{% block" not in body, path
        if path.startswith("/ui/static/") or path.startswith("/static") or path.startswith("/assets"):
            assert status == 404, (path, status)
    # Nothing in the pages' code reads files at run time.
    for path in glob.glob(os.path.join(REPO, "src", "http", "pages", "*.rs")):
        text = open(path).read()
        for banned in ("std::fs", "tokio::fs", "File::open", "read_to_string", "ServeDir"):
            assert banned not in text, (path, banned)


def test_html_errors_for_html_requests_json_for_api(server):
    status, headers, body = raw_get(server.port, "/ui/nope", accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert status == 404 and headers["content-type"].startswith("text/html")
    check_headers(headers, "404", authenticated=False)
    check_markup(body.decode(), "404")
    status, headers, body = raw_get(server.port, "/ui/nope", accept="application/json")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, headers, body = raw_get(server.port, "/v1/session", accept="text/html")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"


class Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        page = (f'<!doctype html><form id="f" method="post" action="{self.target}">'
                '<input name="current_password" value="x"><input name="new_password" value="y"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


# covers: ASVS-3.3.2
def test_cross_site_form_post_arrives_without_the_session(server, browser, backend):
    base = server.url
    ctx = browser.new_context()
    page = sign_up_and_in(ctx, base, f"samesite-{backend}-{time.time_ns()}@example.com")
    cookie = [c for c in ctx.cookies() if c["name"] == "__Host-castellan_session"][0]
    assert cookie["sameSite"] in ("Lax", "Strict")
    Attacker.target = base + "/ui/account/password"
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Attacker)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        # `localhost` and `127.0.0.1` are different sites.
        with page.expect_navigation(url=re.compile(r".*/ui/sign-in.*")):
            page.goto(f"http://localhost:{port}/")
        # Unauthenticated: sent to sign-in, not to the CSRF refusal.
        assert page.url.startswith(base + "/ui/sign-in"), page.url
        page.goto(base + "/ui/account")
        assert page.url == base + "/ui/account", "the session itself is still alive"
    finally:
        httpd.shutdown()
    ctx.close()


def source_files(pattern):
    return [p for p in glob.glob(os.path.join(REPO, pattern), recursive=True) if os.path.isfile(p)]


# covers: ASVS-1.1.2, ASVS-1.3.2, ASVS-1.3.7, ASVS-3.2.2, ASVS-15.3.6
def test_sources_escape_output_and_ship_no_dangerous_script():
    templates = source_files("templates/*.html")
    assert len(templates) >= 10
    for path in templates:
        text = open(path).read()
        assert not re.search(r"\|\s*safe\b", text), f"{path}: raw output filter"
        assert "escape(" not in text and "|e(\"none\")" not in text, path
        assert "<script>" not in text and "<style" not in text and " style=" not in text, path
        assert not re.search(r"\son[a-z]+=", text), f"{path}: inline handler"
    rust = source_files("src/**/*.rs")
    for path in rust:
        text = open(path).read()
        for banned in ("render_str", "add_raw_template", "PreEscaped", "MarkupDisplay", "filters::Safe",
                       "escape = \"none\"", "Html(format!"):
            assert banned not in text, f"{path}: {banned}"
        if "#[derive(Template)]" in text:
            # Every template is a file compiled at build time (never `source = ...`).
            assert "source =" not in text, path
            assert text.count("#[template(path = ") == text.count("#[derive(Template)]"), path
    assert not os.path.exists(os.path.join(REPO, "askama.toml")), "escaping configuration must stay default"
    scripts = source_files("static/*.js")
    assert scripts, "the shipped script is checked"
    for path in scripts:
        text = open(path).read()
        code = re.sub(r"//[^\n]*", "", text)
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                       "new Function", "__proto__", "JSON.parse", "Object.assign", "prototype",
                       "setTimeout(\"", "setInterval(\"", "setTimeout('", "setInterval('"):
            assert banned not in code, f"{path}: {banned}"


# covers: ASVS-3.4.3, ASVS-3.7.1, ASVS-1.3.2, ASVS-3.4.8
def test_every_page_has_strict_headers_and_no_plugins(server, browser, backend):
    base = server.url
    ctx = browser.new_context()
    page = ctx.new_page()
    signed_out = ["/ui/sign-in", "/ui/sign-up", "/ui/password/forgot", "/ui/password/reset",
                  "/ui/email/verify", "/ui/nope"]
    for path in signed_out:
        resp = page.goto(base + path)
        check_headers(resp.all_headers(), path, authenticated=False)
        check_markup(resp.text(), path)
    sign_up_and_in(ctx, base, f"headers-{backend}-{time.time_ns()}@example.com")
    for path in ["/ui/account", "/ui/mfa", "/ui/account?done=password"]:
        resp = page.goto(base + path)
        assert resp.url.startswith(base + "/ui/"), resp.url
        check_headers(resp.all_headers(), path, authenticated=True)
        check_markup(resp.text(), path)
        csp = resp.all_headers()["content-security-policy"]
        assert "unsafe-eval" not in csp and "unsafe-inline" not in csp
        for tag in ("<object", "<embed", "<applet"):
            assert tag not in resp.text().lower()
    # A page reached by a form post (the TOTP set-up) too.
    with page.expect_response(lambda r: r.url.endswith("/ui/account/totp")) as info:
        page.click("text=Set up an authenticator app")
    check_headers(info.value.all_headers(), "totp", authenticated=True)
    check_markup(info.value.text(), "totp")
    ctx.close()
