"""Browser tests: Debian's Chromium driven by Playwright against a real server on 127.0.0.1.

Playwright's own browser builds are never downloaded. ``make test`` installs
``/usr/bin/chromium`` when it is missing; under ``CI=true`` a missing browser is a
failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SESSIONTRACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium; `make test` does it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in
# the main thread until it stops, and asyncio.run() in later test folders would fail.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


def launch(pw: Any, **options: Any) -> Any:
    """Chromium with a fresh --user-data-dir (what a persistent context is for)."""
    profile = tempfile.mkdtemp(prefix="sessiontrace-chromium-")
    context = pw.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
        **options,
    )
    context.on("close", lambda _: shutil.rmtree(profile, ignore_errors=True))
    return context


@pytest.fixture(scope="package")
def browser(playwright: Any) -> Iterator[Any]:
    context = launch(playwright)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="package")
def browser_without_csp(playwright: Any) -> Iterator[Any]:
    """Ignores the server's CSP, to prove escaping alone keeps payloads inert."""
    context = launch(playwright, bypass_csp=True)
    try:
        yield context
    finally:
        context.close()


def _page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    page.js_errors = errors
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _page(browser)


@pytest.fixture
def page_without_csp(browser_without_csp: Any) -> Iterator[Any]:
    yield from _page(browser_without_csp)


@pytest.fixture
def live_server(store_path: Path) -> Iterator[LiveServer]:
    from sessiontrace.server import create_app

    with LiveServer(create_app(db=store_path)) as srv:
        yield srv


@pytest.fixture
def seeded(store_path: Path) -> list[str]:
    from .seed import seed

    return seed()
