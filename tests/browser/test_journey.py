"""The whole journey of a person through the hosted pages, in headless
Chromium, on SQLite and on PostgreSQL. Every page on the way is checked
(headers, markup, axe-core, 360 px, a visible sign-out when signed in) and
photographed into the artifacts folder."""

import os
import time

import pyotp
import pytest

from castellan_harness import NEW_PASSWORD, PASSWORD, Castellan, Pages, artifacts_dir, sign_out


@pytest.fixture(scope="module")
def server(backend):
    # A 1 s re-authentication window: every sensitive action goes through
    # the confirmation page first.
    c = Castellan(backend, env={"CASTELLAN_REAUTH_WINDOW": "1s"})
    yield c
    c.stop()


def fresh_totp_code(secret, used):
    """A code of a time step not used yet (castellan refuses replays)."""
    totp = pyotp.TOTP(secret)
    while True:
        code = totp.now()
        step = int(time.time()) // 30
        if step not in used:
            used.add(step)
            return code
        time.sleep(30 - time.time() % 30 + 0.2)


def storage_is_empty(page):
    return page.evaluate(
        "async () => ({local: localStorage.length, session: sessionStorage.length,"
        " idb: (indexedDB.databases ? (await indexedDB.databases()).length : 0)})")


# covers: ASVS-6.2.6, ASVS-6.2.7, N63B-08, ASVS-7.4.4, ASVS-14.2.3, ASVS-14.3.3
def test_journey(server, browser, backend):
    ctx = browser.new_context(viewport={"width": 360, "height": 740})
    pages = Pages(ctx, backend)
    page = ctx.new_page()
    user = f"journey-{backend}-{int(time.time())}@example.com"
    base = server.url
    used_steps = set()

    # Sign up (the show-password switch reveals and hides the text).
    page.goto(base + "/ui/sign-up")
    pages.check(page, "sign-up", authenticated=False)
    page.fill("#email", user)
    page.fill("#password", PASSWORD)
    assert page.get_attribute("#password", "type") == "password"
    page.check("#password-show")
    assert page.get_attribute("#password", "type") == "text"
    page.uncheck("#password-show")
    assert page.get_attribute("#password", "type") == "password"
    # Pasting is allowed: a paste event is not cancelled and inserts text.
    page.fill("#password", "")
    page.focus("#password")
    cancelled = page.evaluate(
        "() => { const e = new ClipboardEvent('paste', {cancelable: true, bubbles: true,"
        " clipboardData: new DataTransfer()}); return !document.getElementById('password').dispatchEvent(e); }")
    assert cancelled is False
    page.keyboard.insert_text(PASSWORD)
    assert page.input_value("#password") == PASSWORD
    page.click("main button[type=submit]")
    assert page.url == base + "/ui/account"
    pages.check(page, "account", authenticated=True)

    # Verify the email address from the mailed link.
    mails_before = len(server.mails())
    page.click("text=Send me a verification link")
    assert "verify" in page.inner_text(".notice")
    link = server.mailed_link("/ui/email/verify", after=mails_before)
    page.goto(link)
    assert page.url == base + "/ui/email/verify", "the token leaves the address bar"
    pages.check(page, "verify", authenticated=False)
    page.click("main button[type=submit]")
    assert "verified" in page.inner_text("main")
    pages.check(page, "verified", authenticated=False)
    page.goto(base + "/ui/account")
    assert page.locator(".badge", has_text="verified").count() == 1

    # Enable TOTP: the window has passed, so the password is asked first.
    time.sleep(1.2)
    page.click("text=Set up an authenticator app")
    pages.check(page, "confirm", authenticated=True)
    page.fill("#password", PASSWORD)
    page.click("main form button[type=submit]")
    pages.check(page, "totp-enroll", authenticated=True)
    secret = page.inner_text("#totp-secret").strip()
    assert page.locator("img.qr").get_attribute("src").startswith("data:image/svg+xml;base64,")
    page.fill("#code", fresh_totp_code(secret, used_steps))
    page.click("main form button[type=submit]")
    pages.check(page, "backup-codes", authenticated=True)
    codes = [c.strip() for c in page.locator("#backup-codes code").all_inner_texts()]
    assert len(codes) == 10
    with page.expect_download() as dl:
        page.click("button:has-text('Download')")
    saved = os.path.join(artifacts_dir(), f"{backend}-backup-codes.txt")
    dl.value.save_as(saved)
    with open(saved) as f:
        text = f.read()
    assert all(c in text for c in codes)
    assert page.locator("[data-print]").is_visible()
    # Nothing sensitive in browser storage; only castellan's two cookies.
    assert storage_is_empty(page) == {"local": 0, "session": 0, "idb": 0}
    names = sorted(c["name"] for c in ctx.cookies())
    assert names == ["__Host-castellan_csrf", "__Host-castellan_session"], names
    for c in ctx.cookies():
        assert c["httpOnly"] and c["secure"]

    # Sign out, then in again with TOTP.
    page.goto(base + "/ui/account")
    sign_out(page)
    pages.check(page, "signed-out", authenticated=False)
    assert [c["name"] for c in ctx.cookies() if c["name"] == "__Host-castellan_session"] == []
    page.goto(base + "/ui/sign-in")
    pages.check(page, "sign-in", authenticated=False)
    page.fill("#email", user)
    page.fill("#password", PASSWORD)
    page.click("main form button[type=submit]")
    assert page.url.startswith(base + "/ui/mfa")
    pages.check(page, "mfa", authenticated=False)
    page.fill("#totp_code", fresh_totp_code(secret, used_steps))
    page.click("main form button[type=submit]")
    assert page.url == base + "/ui/account"

    # Sign in elsewhere with a backup code.
    other_ctx = pages_ctx = ctx.browser.new_context(viewport={"width": 360, "height": 740})
    other_pages = Pages(pages_ctx, backend)
    other = other_ctx.new_page()
    other.goto(base + "/ui/sign-in")
    other.fill("#email", user)
    other.fill("#password", PASSWORD)
    other.click("main form button[type=submit]")
    other.click("text=Use a backup code instead")
    other.fill("#backup_code", codes[0])
    other.click("text=Use backup code")
    assert "9 backup codes left" in other.inner_text("main")
    other_pages.check(other, "backup-used", authenticated=True)
    other.click("text=Continue")
    assert other.url == base + "/ui/account"

    # End that other session from the first browser (confirm with a backup code).
    time.sleep(1.2)
    page.goto(base + "/ui/account")
    assert page.locator(".sessions li").count() == 2
    page.click("text=End this session")
    assert page.url.endswith("/ui/account/sessions/end")
    page.fill("#password", PASSWORD)
    page.fill("#backup_code", codes[1])
    page.click("main form button[type=submit]")
    assert "session was ended" in page.inner_text(".notice")
    assert page.locator(".sessions li").count() == 1
    other.goto(base + "/ui/account")
    assert other.url.startswith(base + "/ui/sign-in"), "the ended session is refused"

    # Forgot password, mailed link, new password: every session ends.
    mails_before = len(server.mails())
    other.goto(base + "/ui/password/forgot")
    other_pages.check(other, "forgot", authenticated=False)
    other.fill("#email", user)
    other.click("main form button[type=submit]")
    other_pages.check(other, "forgot-sent", authenticated=False)
    link = server.mailed_link("/ui/password/reset", after=mails_before)
    other.goto(link)
    assert other.url == base + "/ui/password/reset", "the token leaves the address bar"
    other_pages.check(other, "reset", authenticated=False)
    other.fill("#new_password", NEW_PASSWORD)
    other.click("main form button[type=submit]")
    assert "new password is set" in other.inner_text("main")
    other_pages.check(other, "reset-done", authenticated=False)
    page.goto(base + "/ui/account")
    assert page.url.startswith(base + "/ui/sign-in"), "old sessions are gone"

    # The new password works, and MFA still applies.
    page.fill("#email", user)
    page.fill("#password", NEW_PASSWORD)
    page.click("main form button[type=submit]")
    assert page.url.startswith(base + "/ui/mfa")
    page.fill("#totp_code", fresh_totp_code(secret, used_steps))
    page.click("main form button[type=submit]")
    assert page.url == base + "/ui/account"
    assert "8 of 10 backup codes left" in page.inner_text("#backup-count")

    # Every request went to castellan itself (or stayed inside the page).
    for url in pages.requests + other_pages.requests:
        assert url.startswith(base + "/") or url.startswith("data:") or url.startswith("blob:"), url
    other_ctx.close()
    ctx.close()
