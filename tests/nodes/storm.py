"""The client storm of the fault scenarios and the soak: worker threads
that register, log in, check the session, sometimes enable TOTP and
sometimes log out, all through one base URL (the balancer). Every request
is recorded with its time and outcome, and every 2xx that created state is
kept so the scenarios can check it is durable afterwards."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pyotp
import requests

from harness import PASSWORD, Api, new_email

# What a request must answer for the storm to count it as a success.
EXPECTED = {
    "register": 201,
    "login": 200,
    "session": 200,
    "enroll": 200,
    "activate": 200,
    "logout": 204,
}


@dataclass
class Record:
    kind: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    retry_after: str | None = None
    from_castellan: bool = True  # X-Request-Id present: castellan answered, not the balancer
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == EXPECTED[self.kind]


@dataclass
class Durable:
    """State a 2xx created, to check afterwards."""

    accounts: list = field(default_factory=list)  # emails whose registration got 201
    sessions: dict = field(default_factory=dict)  # token -> email, login 200 and not logged out
    activated: list = field(default_factory=list)  # emails whose activation got 200
    activation_tried: list = field(default_factory=list)  # emails whose activation was sent


class Storm:
    def __init__(self, base_url: str, workers: int = 4, mfa_every: int = 3, logout_every: int = 2,
                 pause: float = 0.0):
        self.base_url = base_url
        self.workers = workers
        self.mfa_every = mfa_every
        self.logout_every = logout_every
        self.pause = pause
        self.records: list[Record] = []
        self.durable = Durable()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- running

    def start(self):
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)

    def _send(self, api: Api, kind: str, method: str, path: str, **kw) -> requests.Response | None:
        started = time.monotonic()
        try:
            r = api.call(method, path, **kw)
        except requests.RequestException as e:
            rec = Record(kind, started, time.monotonic(), None, error=type(e).__name__)
            api.http.close()
            api.http = requests.Session()
            with self.lock:
                self.records.append(rec)
            return None
        rec = Record(kind, started, time.monotonic(), r.status_code,
                     retry_after=r.headers.get("Retry-After"),
                     from_castellan="X-Request-Id" in r.headers)
        if not rec.ok:
            rec.error = r.text[:200]
        with self.lock:
            self.records.append(rec)
        return r

    def _worker(self, index: int):
        api = Api(self.base_url)
        n = 0
        while not self.stopping.is_set():
            n += 1
            completed = self._journey(api, index, n)
            if self.pause:
                time.sleep(self.pause)
            if not completed:
                # Do not spin while the service is down.
                time.sleep(0.1)

    def _journey(self, api: Api, index: int, n: int) -> bool:
        email = new_email(f"storm{index}")
        r = self._send(api, "register", "POST", "/v1/registration",
                       json={"email": email, "password": PASSWORD})
        if r is None or r.status_code != 201:
            return False
        with self.lock:
            self.durable.accounts.append(email)
        r = self._send(api, "login", "POST", "/v1/login",
                       json={"email": email, "password": PASSWORD})
        if r is None or r.status_code != 200:
            return False
        token = r.json()["session_token"]
        with self.lock:
            self.durable.sessions[token] = email
        for _ in range(2):
            self._send(api, "session", "GET", "/v1/session", token=token)
        if n % self.mfa_every == 0:
            r = self._send(api, "enroll", "POST", "/v1/mfa/totp/enroll", token=token)
            if r is not None and r.status_code == 200:
                code = pyotp.TOTP(r.json()["secret"]).now()
                with self.lock:
                    self.durable.activation_tried.append(email)
                r = self._send(api, "activate", "POST", "/v1/mfa/totp/activate", token=token,
                               json={"code": code})
                if r is not None and r.status_code == 200:
                    with self.lock:
                        self.durable.activated.append(email)
        if n % self.logout_every == 0:
            with self.lock:
                # Whatever the answer, this token is no longer promised to work.
                self.durable.sessions.pop(token, None)
            self._send(api, "logout", "POST", "/v1/logout", token=token)
        return True

    # ---------------------------------------------------------------- results

    def failures(self) -> list[Record]:
        with self.lock:
            return [r for r in self.records if not r.ok]

    def summary(self) -> dict:
        with self.lock:
            records = list(self.records)
        by_kind: dict[str, int] = {}
        for r in records:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
        failed = [r for r in records if not r.ok]
        outcomes: dict[str, int] = {}
        for r in failed:
            key = f"{r.kind}:{r.status if r.status is not None else r.error}"
            outcomes[key] = outcomes.get(key, 0) + 1
        return {
            "requests": len(records),
            "by_kind": by_kind,
            "failed": len(failed),
            "failed_by_outcome": outcomes,
            "accounts_created": len(self.durable.accounts),
            "activations_ok": len(self.durable.activated),
        }
