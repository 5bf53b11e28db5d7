"""Schemathesis hooks for 40-schemathesis.sh: a real session for the fuzzer.

Without one, every route that takes a session answers 401 and its handler
is never reached. This auth provider logs in the fuzz account (registered
by the suite) and sends its token as `Authorization: Bearer`. The fuzzer
may end that session (logout, revocation); a 401 drops the cached token
and the next request logs in again.

Environment: CASTELLAN_TEST_FUZZ_BASE (http://127.0.0.1:PORT), CASTELLAN_TEST_FUZZ_EMAIL,
CASTELLAN_TEST_FUZZ_PASSWORD.
"""

import json
import os
import urllib.error
import urllib.request

import schemathesis


def _login():
    body = json.dumps(
        {
            "email": os.environ["CASTELLAN_TEST_FUZZ_EMAIL"],
            "password": os.environ["CASTELLAN_TEST_FUZZ_PASSWORD"],
        }
    ).encode()
    request = urllib.request.Request(
        os.environ["CASTELLAN_TEST_FUZZ_BASE"] + "/v1/login",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["session_token"]
    except (urllib.error.URLError, KeyError, ValueError):
        # Login refused (e.g. throttled after the fuzzer sent wrong
        # passwords): carry on without a session.
        return None


@schemathesis.auth(refresh_interval=600)
class CastellanSession:
    def get(self, case, ctx):
        return _login()

    def set(self, case, data, ctx):
        if data is None:
            return
        case.headers = dict(case.headers or {})
        case.headers["Authorization"] = f"Bearer {data}"
