"""castellan's forward auth behind a real nginx (Debian) in front of a tiny
upstream: the browser talks only to nginx, which serves the app and proxies
castellan's pages on the same origin."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from castellan_harness import PASSWORD, Castellan, Pages, free_port, sign_out

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
{locations}
  }}
}}
"""


def docs_locations(castellan_port, upstream_port):
    """The server block's locations exactly as docs/proxies/nginx.conf has
    them, with the test's ports filled in."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "docs", "proxies", "nginx.conf")) as f:
        text = f.read()
    start = text.index("# --- locations start")
    end = text.index("# --- locations end")
    block = text[start:end]
    return (block.replace("127.0.0.1:8080", f"127.0.0.1:{castellan_port}")
                 .replace("127.0.0.1:3000", f"127.0.0.1:{upstream_port}"))


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self):
        seen = {k: v for k, v in self.headers.items() if k.lower().startswith("x-castellan-")}
        body = ("<!doctype html><html lang=en><title>app</title><main><h1>app</h1><pre id=seen>"
                + json.dumps(seen, sort_keys=True) + "</pre></main></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stack(backend):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx_port, castellan_port = free_port(), free_port()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    public = f"http://127.0.0.1:{nginx_port}"
    server = Castellan(backend, port=castellan_port, public_base_url=public,
                       env={"CASTELLAN_TRUSTED_PROXIES": "127.0.0.1/32"})
    folder = tempfile.mkdtemp(prefix="castellan-nginx-")
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=folder, port=nginx_port,
                                  locations=docs_locations(castellan_port, upstream.server_address[1])))
    proc = subprocess.Popen([nginx, "-c", conf, "-p", folder], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(public + "/ui/sign-in", timeout=1)
            break
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(open(os.path.join(folder, "error.log")).read())
            time.sleep(0.2)
    yield public, server
    proc.terminate()
    proc.wait(timeout=10)
    upstream.shutdown()
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def seen_headers(page):
    return json.loads(page.inner_text("#seen"))


def test_nginx_forward_auth(stack, browser, backend):
    public, server = stack
    ctx = browser.new_context(viewport={"width": 360, "height": 740})
    pages = Pages(ctx, f"nginx-{backend}")
    page = ctx.new_page()
    email = f"proxy-{backend}-{time.time_ns()}@example.com"
    page.goto(public + "/ui/sign-up")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    sign_out(page)

    # Unauthenticated: nginx sends the browser to castellan's sign-in page.
    page.goto(public + "/app/hello?x=1")
    assert page.url.startswith(public + "/ui/sign-in?return_to="), page.url
    pages.check(page, "proxy-sign-in", authenticated=False)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    # Back at the app, which received the identity headers.
    assert page.url == public + "/app/hello?x=1", page.url
    seen = seen_headers(page)
    assert seen["X-Castellan-Email"] == email
    assert seen["X-Castellan-Email-Verified"] == "false"
    assert seen["X-Castellan-Aal"] == "aal1"
    assert len(seen["X-Castellan-User-Id"]) == 36
    # A header the browser sends itself never reaches the app as identity.
    page.set_extra_http_headers({"X-Castellan-Email": "admin@example.com"})
    page.reload()
    assert seen_headers(page)["X-Castellan-Email"] == email
    page.set_extra_http_headers({})

    # aal2 required: the aal1 session is sent to the MFA step.
    page.goto(public + "/secure/area")
    assert page.url.startswith(public + "/ui/mfa?return_to="), page.url
    pages.check(page, "proxy-mfa-step", authenticated=True)
    assert "Set up an authenticator app" in page.inner_text("main")

    # After sign out the app refuses again.
    sign_out(page)
    page.goto(public + "/app/hello")
    assert page.url.startswith(public + "/ui/sign-in"), page.url
    r = ctx.request.get(public + "/app/hello", max_redirects=0)
    assert r.status == 302
    ctx.close()
