"""Fixtures for the server: an in-process app, and real servers in a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.applications import Starlette
from starlette.types import ASGIApp

from sessiontrace.server import create_app

TOKEN = "test-token-0123456789abcdef"


class _SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGI transport is async-only; run it on a portal's event loop."""

    def __init__(self, app: ASGIApp, portal: BlockingPortal) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._inner.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=body, request=request
            )

        return self._portal.call(call)


@contextlib.contextmanager
def app_client(app: ASGIApp, base_url: str = "http://localhost") -> Iterator[httpx.Client]:
    """A plain ``httpx.Client`` talking to ``app`` in process (no sockets), inside the
    app's lifespan as a server runs it (its shutdown closes the app's stores)."""
    with start_blocking_portal() as portal:
        lifespan = contextlib.nullcontext()
        if isinstance(app, Starlette):
            lifespan = portal.wrap_async_context_manager(app.router.lifespan_context(app))
        with (
            lifespan,
            httpx.Client(transport=_SyncASGITransport(app, portal), base_url=base_url) as c,
        ):
            yield c


@pytest.fixture
def client(store_path: Path) -> Iterator[httpx.Client]:
    """The app on the test's own store, reached as http://localhost (a loopback name)."""
    with app_client(create_app()) as c:
        yield c


@pytest.fixture
def csrf_client(client: httpx.Client) -> httpx.Client:
    """A client that loaded a page first, so it holds the CSRF cookie and sends it back."""
    client.get("/sessions").raise_for_status()
    client.headers["X-CSRF-Token"] = client.cookies["sessiontrace_csrf"]
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m sessiontrace.server`` on 127.0.0.1, started and stopped by the test."""

    def __init__(self, db: str | Path, port: int, token: str | None = None) -> None:
        self.db, self.port, self.token = db, port, token
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
        args = [sys.executable, "-m", "sessiontrace.server", "--db", str(self.db)]
        args += ["--port", str(self.port)]
        if self.token:
            args += ["--token", self.token]
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited: {err}")
            try:
                httpx.get(f"{self.url}/static/app.js", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def server(db: str) -> Iterator[ServerProcess]:
    """The server on the test's store (``db``: the SQLite file or PostgreSQL database)."""
    srv = ServerProcess(db, free_port())
    srv.start()
    yield srv
    srv.stop()
