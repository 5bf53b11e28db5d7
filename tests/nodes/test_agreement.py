"""Scenario 1: agreement across nodes. A change made on one node is
honoured by the other two and by the balancer on the very next request;
single-use credentials and limits hold across nodes."""

from __future__ import annotations

import datetime
import subprocess
import threading

import pyotp
import pytest

from harness import PASSWORD, Api, new_email, psql


def everywhere(cluster, skip: int | None = None) -> list[tuple[str, Api]]:
    """The other nodes directly, and the balancer: where a change must show."""
    apis = [(n.name, Api(n.url)) for i, n in enumerate(cluster.nodes) if i != skip]
    apis.append(("haproxy", Api(cluster.lb.url)))
    return apis


def signed_up(api: Api, email: str | None = None) -> tuple[str, str]:
    email = email or new_email("agree")
    r = api.register(email)
    assert r.status_code == 201, r.text
    r = api.login(email)
    assert r.status_code == 200, r.text
    return email, r.json()["session_token"]


def login_token(api: Api, email: str, password: str = PASSWORD) -> str:
    r = api.login(email, password)
    assert r.status_code == 200, r.text
    return r.json()["session_token"]


def user_id(api: Api, token: str) -> str:
    r = api.session(token)
    assert r.status_code == 200, r.text
    return r.json()["user"]["id"]


def assert_dead(cluster, token: str, skip: int, what: str, checked: list):
    for name, api in everywhere(cluster, skip):
        r = api.session(token)
        assert r.status_code == 401, f"{what}: {name} still accepts the session: {r.status_code}"
        checked.append(name)


def enable_totp(api: Api, token: str) -> tuple[pyotp.TOTP, list[str]]:
    r = api.call("POST", "/v1/mfa/totp/enroll", token=token)
    assert r.status_code == 200, r.text
    totp = pyotp.TOTP(r.json()["secret"])
    r = api.call("POST", "/v1/mfa/totp/activate", token=token, json={"code": totp.now()})
    assert r.status_code == 200, r.text
    return totp, r.json()["backup_codes"]


# covers: ASVS-14.2.2
def test_logout_revocation_and_end_others_are_seen_by_every_node(cluster, report):
    a = Api(cluster.nodes[0].url)
    checked: list[str] = []

    # Nothing between client and node may keep a token: no-store survives the balancer.
    r = Api(cluster.lb.url).register(new_email("agree"))
    assert r.status_code == 201
    r = Api(cluster.lb.url).login(r.json()["user"]["email"])
    assert r.status_code == 200 and "no-store" in r.headers.get("Cache-Control", ""), r.headers

    # Logout on node 1.
    _, token = signed_up(a)
    r = a.call("POST", "/v1/logout", token=token)
    assert r.status_code == 204
    assert_dead(cluster, token, 0, "logout", checked)

    # Revoking one session by id on node 1.
    email, keep = signed_up(a)
    victim = login_token(Api(cluster.nodes[1].url), email)
    victim_id = Api(cluster.nodes[1].url).session(victim).json()["session"]["id"]
    r = a.call("DELETE", f"/v1/sessions/{victim_id}", token=keep)
    assert r.status_code == 204, r.text
    assert_dead(cluster, victim, 0, "session revocation", checked)

    # "End all other sessions" on node 1.
    others = [login_token(Api(n.url), email) for n in cluster.nodes]
    r = a.call("DELETE", "/v1/sessions", token=keep)
    assert r.status_code == 204, r.text
    for t in others:
        assert_dead(cluster, t, 0, "end other sessions", checked)
    for name, api in everywhere(cluster, 0):
        assert api.session(keep).status_code == 200, f"{name}: the current session must survive"
    report(checks=len(checked), result="every revoked token refused on the next request everywhere")


def test_password_change_is_seen_by_every_node(cluster, report):
    a = Api(cluster.nodes[0].url)
    email, token = signed_up(a)
    others = [login_token(Api(n.url), email) for n in cluster.nodes[1:]]
    new_password = "another long passphrase for nodes"
    r = a.call("POST", "/v1/password/change", token=token,
               json={"current_password": PASSWORD, "new_password": new_password})
    assert r.status_code == 204, r.text
    checked: list[str] = []
    for t in others:
        assert_dead(cluster, t, 0, "password change", checked)
    for name, api in everywhere(cluster, 0):
        assert api.login(email).status_code == 401, f"{name}: old password still works"
        assert api.login(email, new_password).status_code == 200, f"{name}: new password refused"
    report(checks=len(checked) + 2 * len(everywhere(cluster, 0)))


def test_admin_lock_and_mfa_reset_are_seen_by_every_node(cluster, report):
    a = Api(cluster.nodes[0].url)
    admin = Api(cluster.nodes[0].admin_url)
    checked: list[str] = []

    email, token = signed_up(a)
    uid = user_id(a, token)
    r = admin.call("POST", f"/admin/v1/users/{uid}/lock", admin=True)
    assert r.status_code == 204, r.text
    assert_dead(cluster, token, 0, "admin lock", checked)
    for name, api in everywhere(cluster, 0):
        r = api.login(email)
        assert r.status_code == 403 and r.json()["error"]["code"] == "account_locked", \
            f"{name}: a locked account logs in: {r.status_code} {r.text}"

    email, token = signed_up(a)
    uid = user_id(a, token)
    enable_totp(a, token)
    r = admin.call("DELETE", f"/admin/v1/users/{uid}/mfa", admin=True)
    assert r.status_code == 204, r.text
    for name, api in everywhere(cluster, 0):
        r = api.login(email)
        assert r.status_code == 200, r.text
        assert r.json()["session"]["mfa_pending"] is False, f"{name}: MFA still asked after the reset"
        t = r.json()["session_token"]
        r = api.call("GET", "/v1/mfa/backup-codes", token=t)
        assert r.status_code == 200 and r.json()["remaining"] == 0, f"{name}: {r.text}"
    report(checks=len(checked) + 3 * len(everywhere(cluster, 0)))


def fire_at_once(calls) -> list:
    """Runs the calls in threads released together; returns the responses."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        out[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_one_totp_code_sent_to_all_three_nodes_at_once_is_accepted_once(cluster, report):
    a = Api(cluster.nodes[0].url)
    email, token = signed_up(a)
    totp, _ = enable_totp(a, token)
    # The next step's code (accepted: one step of drift), unused so far.
    code = totp.at(datetime.datetime.now() + datetime.timedelta(seconds=30))
    nodes = [Api(n.url) for n in cluster.nodes]
    pending = [login_token(api, email) for api in nodes]
    answers = fire_at_once([
        (lambda api=api, t=t: api.call("POST", "/v1/login/mfa", token=t, json={"totp_code": code}))
        for api, t in zip(nodes, pending)
    ])
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) == 1, f"one TOTP code on three nodes: {statuses}"
    assert statuses.count(401) == 2, f"the replays are refused as wrong codes: {statuses}"
    report(sent=3, accepted=statuses.count(200), statuses=statuses)


def test_one_backup_code_sent_30_times_across_nodes_is_accepted_once(cluster, report):
    a = Api(cluster.nodes[0].url)
    email, token = signed_up(a)
    _, codes = enable_totp(a, token)
    nodes = [Api(n.url) for n in cluster.nodes]
    pending = [(nodes[i % 3], login_token(nodes[i % 3], email)) for i in range(30)]
    answers = fire_at_once([
        (lambda api=api, t=t: api.call("POST", "/v1/login/mfa", token=t,
                                       json={"backup_code": codes[0]}))
        for api, t in pending
    ])
    statuses = [r.status_code for r in answers]
    winners = [r for r in answers if r.status_code == 200]
    assert len(winners) == 1, f"one backup code 30 times: {sorted(statuses)}"
    assert all(s in (200, 401, 429) for s in statuses), sorted(statuses)
    t = winners[0].json()["session_token"]
    for name, api in everywhere(cluster):
        r = api.call("GET", "/v1/mfa/backup-codes", token=t)
        assert r.status_code == 200 and r.json()["remaining"] == 9, f"{name}: {r.text}"
    report(sent=30, accepted=1, other_statuses=sorted(set(statuses) - {200}), remaining_after=9)


def failures_until_backoff(apis: list[Api], email: str) -> int:
    """Wrong passwords, round robin over `apis`, until the first 429."""
    for n in range(1, 50):
        r = apis[(n - 1) % len(apis)].login(email, "wrong password for the nodes test")
        if r.status_code == 429:
            return n - 1
        assert r.status_code == 401, r.text
    raise AssertionError("no back-off after 49 failures")


def test_failed_logins_spread_over_nodes_back_off_after_the_same_number(cluster, report):
    a = Api(cluster.nodes[0].url)
    one, _ = signed_up(a)
    spread, _ = signed_up(a)
    on_one = failures_until_backoff([a], one)
    on_three = failures_until_backoff([Api(n.url) for n in cluster.nodes], spread)
    assert on_one == on_three, f"one node backs off after {on_one}, three after {on_three}"
    report(failures_before_backoff_one_node=on_one, failures_before_backoff_three_nodes=on_three)


def test_concurrent_events_on_three_nodes_leave_one_verified_chain_in_time_order(cluster, report):
    nodes = [Api(n.url) for n in cluster.nodes]
    emails = [signed_up(api)[0] for api in nodes]
    per_node = 40

    def hammer(api: Api, email: str):
        for i in range(per_node):
            # Alternate failures and successes: both are security events.
            api.login(email, PASSWORD if i % 2 else "wrong password for the nodes test")

    threads = [threading.Thread(target=hammer, args=(api, e)) for api, e in zip(nodes, emails)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    verify = cluster.audit_verify()
    assert verify.returncode == 0, f"audit verify: {verify.stdout}{verify.stderr}"

    inversions = psql(cluster.database_url,
                      "SELECT count(*) FROM security_events a JOIN security_events b "
                      "ON b.seq = a.seq + 1 WHERE b.at < a.at")
    assert inversions == "0", f"{inversions} events stored with an earlier time than the one before"
    total = int(psql(cluster.database_url, "SELECT count(*) FROM security_events"))

    # The admin query, newest first: time never goes up while seq goes down.
    for n in cluster.nodes:
        r = Api(n.admin_url).call("GET", "/admin/v1/audit?limit=1000", admin=True)
        assert r.status_code == 200, r.text
        ats = [e["at"] for e in r.json()["events"]]
        parsed = [datetime.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in ats]
        assert all(x >= y for x, y in zip(parsed, parsed[1:])), f"{n.name}: audit list not in time order"
    report(events=total, concurrent_writers=3, audit_verify="ok", time_inversions=0,
           verify_output=verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else "")
