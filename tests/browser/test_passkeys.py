"""Passkeys in headless Chromium with its virtual authenticator (DevTools
protocol WebAuthn domain): a passkey is added on the account page, the
person signs out, and signs in with the passkey alone, on SQLite and on
PostgreSQL. castellan runs on http://localhost, a secure context whose
host can be the WebAuthn relying-party id (an IP address cannot)."""

import time

import pytest

from castellan_harness import PASSWORD, Castellan, free_port, sign_out


@pytest.fixture(scope="module")
def server(backend):
    port = free_port()
    c = Castellan(backend, port=port, public_base_url=f"http://localhost:{port}")
    c.url = f"http://localhost:{port}"
    yield c
    c.stop()


def virtual_authenticator(context, page):
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})
    return cdp, added["authenticatorId"]


def test_passkey_added_on_the_account_page_signs_in_alone(server, browser, backend):
    context = browser.new_context()
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)
    base = server.url
    user = f"passkey-{backend}-{int(time.time() * 1000)}@example.com"

    page.goto(base + "/ui/sign-up")
    page.fill("#email", user)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    assert page.url == base + "/ui/account"

    # The section appears (JavaScript on) and lists no passkey yet.
    page.wait_for_selector("#passkeys:not([hidden])")
    page.fill("#passkey-name", "Test laptop")
    page.click("#passkey-add")
    page.wait_for_selector("#passkey-list li .passkey-name")
    assert page.inner_text("#passkey-list .passkey-name") == "Test laptop"
    assert "added" in page.inner_text("#passkey-status")
    creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(creds) == 1 and creds[0]["isResidentCredential"], creds
    assert any("A passkey was added" in m for m in server.mails())

    # Sign out, then sign in with the passkey alone (no email, no password),
    # first through the email field's autofill: the page starts a conditional
    # request at once, and the virtual authenticator (which simulates the
    # person's presence) answers it, so the page signs in without a click.
    sign_out(page)
    page.goto(base + "/ui/sign-in")
    page.wait_for_url(base + "/ui/account")
    assert_passkey_session(page, user)

    # Then through the button, in a browser without conditional mediation.
    sign_out(page)
    page.add_init_script("PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);")
    page.goto(base + "/ui/sign-in")
    page.wait_for_selector("#passkey-sign-in:not([hidden])")
    assert page.get_attribute("#email", "autocomplete") == "username"
    assert page.input_value("#password") == ""
    page.click("#passkey-sign-in-button")
    page.wait_for_url(base + "/ui/account")
    assert_passkey_session(page, user)
    context.close()


def assert_passkey_session(page, user):
    assert user in page.inner_text("main")
    session = page.evaluate("() => fetch('/v1/session').then(r => r.json())")
    assert session["session"]["aal"] == "aal2", session
    assert session["user"]["email"] == user
