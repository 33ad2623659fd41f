"""One connection, many requests: no request may see another request's ids or span.

Servers reuse contexts across a connection's requests. uvicorn starts the next request
on a keep-alive connection in a copy of the context its previous request left behind
once that request's body passed 64 KiB (reading resumes from inside the request task),
and parses pipelined requests from inside the previous request's task. Each test here
sends what a chat client sends (a long conversation with ids, then requests without
any, or with other ids) on one real connection, for every server, event loop and HTTP
parser we document, and checks what the endpoint saw *and* what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

import sessiontrace
from sessiontrace import ASGIMiddleware

from . import wsgi_apps
from .asgi_apps import make_app, record
from .servers import by_label, free_socket, gunicorn_server, stored, uvicorn_server

pytestmark = pytest.mark.slow

BODY = b'{"history": "' + b"x" * 100_000 + b'"}'  # a long conversation: over 64 KiB
BIG_IDS = "X-User-ID: big-user\r\nX-Session-ID: big-sess\r\n"
OTHER_IDS = "X-User-ID: other-user\r\nX-Session-ID: other-sess\r\n"

# (label, extra header lines) of the requests that follow the big one.
FOLLOWERS = [("anon-1", ""), ("anon-2", ""), ("other", OTHER_IDS), ("anon-3", "")]
EXPECTED = {
    "anon-1": (None, None),
    "anon-2": (None, None),
    "other": ("other-user", "other-sess"),
    "anon-3": (None, None),
}


# -- one raw connection -------------------------------------------------------------------


def big_request(path: str = "/chat") -> bytes:
    head = (
        f"POST {path}?label=big HTTP/1.1\r\nHost: test\r\n{BIG_IDS}"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


def small_request(label: str, headers: str) -> bytes:
    return f"GET /whoami?label={label} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()


def read_response(stream: Any) -> tuple[int, bytes]:
    """One HTTP/1.1 response off a buffered socket file (Content-Length or chunked)."""
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(stream.readline().split(b";")[0], 16)
            if size == 0:
                stream.readline()
                return status, body
            body += stream.read(size)
            stream.readline()
    return status, stream.read(int(headers["content-length"]))


def converse(base: str, *, pipelined: bool, big_path: str = "/chat") -> list[tuple[int, bytes]]:
    """The big request with ids, then FOLLOWERS, all on one connection."""
    host, port = base.removeprefix("http://").split(":")
    requests = [big_request(big_path)] + [small_request(*f) for f in FOLLOWERS]
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        stream = sock.makefile("rb")
        if pipelined:
            sock.sendall(b"".join(requests))
            return [read_response(stream) for _ in requests]
        answers = []
        for request in requests:
            sock.sendall(request)
            answers.append(read_response(stream))
        return answers


def check(
    answers: list[tuple[int, bytes]], *, trace_requests: bool, db: Path | None = None
) -> None:
    """What each endpoint saw, and what was stored, is its own request's."""
    assert [status for status, _ in answers] == [200] * 5, answers
    seen = [httpx.Response(200, content=body).json()["seen"] for _, body in answers]
    assert tuple(seen[0]) == ("big-user", "big-sess")
    assert {label: tuple(s) for (label, _), s in zip(FOLLOWERS, seen[1:], strict=True)} == EXPECTED

    rows = by_label(stored(db, expect=5))
    assert (rows["big"]["user"], rows["big"]["session"]) == ("big-user", "big-sess")
    for label, ids in EXPECTED.items():
        row = rows[label]
        assert (row["user"], row["session"]) == ids, label
        # Its own trace: never a child of the big request's span.
        assert row["trace_id"] != rows["big"]["trace_id"], label
        roots = [s for s in row["spans"] if s.parent_id is None]
        assert len(roots) == 1
        if trace_requests:
            assert roots[0].span_type == "HTTP" and roots[0].name == "GET /whoami", label
        else:
            assert roots[0] is row["span"], label


# -- ASGI -----------------------------------------------------------------------------------


def chat_app(**options: Any) -> FastAPI:
    """The test app plus a chat endpoint that reads its body inside a span of its own."""
    app = make_app()

    @app.post("/chat")
    async def chat(request: Request, label: str) -> dict[str, Any]:
        with sessiontrace.start_span("chat-turn"):
            body = await request.body()  # flow control resumes reading from in here
            return {"seen": record(label), "size": len(body)}

    if options.pop("twice", False):
        # The inner instance reads another header: had it acted, the ids would differ.
        return ASGIMiddleware(ASGIMiddleware(app, user_header="X-Other"), **options)  # type: ignore[return-value]
    app.add_middleware(ASGIMiddleware, **options)
    return app


def resolver_that_reports_a_leak(scope: Any) -> tuple[str, None] | None:
    """Falls back to the headers, unless it saw another request's ids (then says so)."""
    return None if sessiontrace.get_user_session_context() == (None, None) else ("LEAK", None)


# plain: the fast path; resolver: the general one (options that need more than headers);
# twice: wrapped twice, the outer instance acts and the inner one passes through.
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "trace_requests": {"trace_requests": True},
    "resolver": {"resolver": resolver_that_reports_a_leak},
    "twice": {"twice": True},
}


@contextlib.contextmanager
def hypercorn_server(app: Any, loop: str) -> Iterator[str]:
    """Serve with hypercorn on an asyncio or uvloop loop in a thread; yields the base URL."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    stop = threading.Event()

    async def main() -> None:
        done = asyncio.Event()

        async def trigger() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.02)
            done.set()

        watcher = asyncio.ensure_future(trigger())
        await serve(app, config, shutdown_trigger=done.wait)  # type: ignore[arg-type]
        await watcher

    def run() -> None:
        if loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert thread.is_alive() and time.monotonic() < deadline, "hypercorn did not start"
            time.sleep(0.02)
    try:
        yield base
    finally:
        stop.set()
        thread.join(15)


SERVERS = [
    ("uvicorn", "asyncio", "h11"),
    ("uvicorn", "asyncio", "httptools"),
    ("uvicorn", "uvloop", "h11"),
    ("uvicorn", "uvloop", "httptools"),
    ("hypercorn", "asyncio", "h11"),
    ("hypercorn", "uvloop", "h11"),
]


@contextlib.contextmanager
def asgi_server(app: Any, server: str, loop: str, http: str) -> Iterator[str]:
    if server == "uvicorn":
        with uvicorn_server(app, loop=loop, http=http) as base:
            yield base
    else:
        with hypercorn_server(app, loop) as base:
            yield base


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("pipelined", [False, True], ids=["keep-alive", "pipelined"])
@pytest.mark.parametrize(("server", "loop", "http"), SERVERS, ids=["-".join(s) for s in SERVERS])
def test_asgi_requests_on_one_connection_keep_their_own_ids(
    server: str, loop: str, http: str, pipelined: bool, option: str
) -> None:
    with asgi_server(chat_app(**dict(OPTIONS[option])), server, loop, http) as base:
        answers = converse(base, pipelined=pipelined)
    check(answers, trace_requests=option == "trace_requests")


def test_uvicorn_reset_contextvars_is_not_needed_but_harmless() -> None:
    with uvicorn_server(chat_app(), loop="asyncio", http="h11", reset_contextvars=True) as base:
        answers = converse(base, pipelined=True)
    check(answers, trace_requests=False)


def test_an_excluded_path_after_a_big_request_sees_no_ids() -> None:
    app = make_app()

    @app.post("/chat")
    async def chat(request: Request, label: str) -> dict[str, Any]:
        await request.body()
        return {"seen": record(label)}

    app.add_middleware(ASGIMiddleware, exclude_paths=["/healthz"])
    with uvicorn_server(app, loop="asyncio", http="h11") as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            stream = sock.makefile("rb")
            sock.sendall(big_request())
            assert read_response(stream)[0] == 200
            sock.sendall(b"GET /healthz?label=health HTTP/1.1\r\nHost: test\r\n\r\n")
            status, body = read_response(stream)
    assert status == 200
    assert httpx.Response(200, content=body).json()["seen"] == [None, None]
    rows = by_label(stored(expect=2))
    assert (rows["health"]["user"], rows["health"]["session"]) == (None, None)


# -- WSGI -----------------------------------------------------------------------------------


@contextlib.contextmanager
def waitress_server(app: Any) -> Iterator[str]:
    """waitress (keep-alive, pipelining) with one worker thread, so every request of a
    connection runs on the same thread and in the same thread context."""
    import waitress.server
    from waitress.channel import HTTPChannel

    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Let the worker finish what it serves, stop it, then the server's loop.
        dispatcher = server.task_dispatcher
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            dispatcher.queue
            or dispatcher.active_count
            or any(isinstance(c, HTTPChannel) for c in list(server._map.values()))
        ):
            time.sleep(0.01)
        dispatcher.shutdown(timeout=5)
        # Close the sockets on the server's own thread, between two select() calls:
        # closed from here while that select() waits on them, it fails with EBADF.
        server.trigger.pull_trigger(server.close)
        thread.join(15)
        assert not thread.is_alive(), "waitress did not stop"


@pytest.mark.parametrize("trace_requests", [False, True])
@pytest.mark.parametrize("pipelined", [False, True], ids=["keep-alive", "pipelined"])
def test_wsgi_requests_on_one_connection_keep_their_own_ids(
    pipelined: bool, trace_requests: bool
) -> None:
    app = wsgi_apps.make_app(trace_requests=trace_requests)
    with waitress_server(app) as base:
        answers = converse(base, pipelined=pipelined)
    check(answers, trace_requests=trace_requests)


@pytest.mark.parametrize("trace_requests", [False, True])
def test_gunicorn_keep_alive_connection_keeps_each_requests_ids(
    tmp_path: Path, trace_requests: bool
) -> None:
    db = tmp_path / "gunicorn.db"
    env = {"TEST_TRACE_REQUESTS": "1" if trace_requests else "0"}
    with gunicorn_server("wsgi_apps:app", db, threads=1, env=env) as base:
        answers = converse(base, pipelined=False)
    check(answers, trace_requests=trace_requests, db=db)


@pytest.mark.parametrize("trace_requests", [False, True])
def test_gunicorn_thread_reused_after_a_span_left_open_starts_clean(
    tmp_path: Path, trace_requests: bool
) -> None:
    """An app that leaves a span open taints its worker thread's context; the next
    request on that thread (one gthread worker thread) must not become its child."""
    db = tmp_path / "gunicorn.db"
    env = {"TEST_TRACE_REQUESTS": "1" if trace_requests else "0"}
    headers = {"X-User-ID": "big-user", "X-Session-ID": "big-sess"}
    with (
        gunicorn_server("wsgi_apps:app", db, threads=1, env=env) as base,
        httpx.Client(base_url=base) as client,
    ):
        client.post("/chat?label=big", content=BODY, headers=headers)
        client.get("/leave-span-open", params={"label": "open"}, headers=headers)
        for label in ("anon-1", "anon-2"):
            r = client.get("/whoami", params={"label": label})
            assert r.json()["seen"] == [None, None]
    rows = by_label(stored(db, expect=3 + trace_requests))
    for label in ("anon-1", "anon-2"):
        assert (rows[label]["user"], rows[label]["session"]) == (None, None), label
        assert rows[label]["trace_id"] != rows["big"]["trace_id"]
