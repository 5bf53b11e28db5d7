import os
import sys

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.dirname(__file__))
from castellan_harness import CHROMIUM_ARGS, Castellan  # noqa: E402


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("CASTELLAN_CHROMIUM", "/usr/bin/chromium"),
                              args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def server(backend):
    c = Castellan(backend, env={"CASTELLAN_UI_RETURN_ORIGINS": "https://app.example.com"})
    yield c
    c.stop()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 360, "height": 740})
    yield ctx
    ctx.close()
