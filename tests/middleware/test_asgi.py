"""ASGIMiddleware under a real uvicorn on 127.0.0.1; every check reads the stored traces."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

import sessiontrace
from sessiontrace import ASGIMiddleware, _runtime

from .asgi_apps import AppError, make_app, record
from .servers import HERE, by_label, free_port, stored, uvicorn_server

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


def app_with(**options: Any) -> FastAPI:
    app = make_app()
    app.add_middleware(ASGIMiddleware, **options)
    return app


def ids(row: dict[str, Any]) -> tuple[str | None, str | None]:
    return row["user"], row["session"]


# -- isolation ----------------------------------------------------------------------------


@pytest.mark.parametrize("trace_requests", [False, True])
def test_concurrent_requests_with_distinct_headers_never_cross(trace_requests: bool) -> None:
    n = 150
    paths = ["/whoami", "/sync", "/stream", "/stream-sync", "/background"]

    def headers(i: int) -> dict[str, str]:
        if i % 5 == 0:
            return {}  # anonymous requests mixed in
        return {"X-User-ID": f"user-{i}", "X-Session-ID": f"session-{i}", "X-Request-ID": f"r-{i}"}

    async def main(base: str) -> None:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

            async def one(i: int) -> None:
                r = await client.get(
                    paths[i % len(paths)], params={"label": f"L{i}"}, headers=headers(i)
                )
                assert r.status_code == 200, r.text

            await asyncio.gather(*(one(i) for i in range(n)))

    with uvicorn_server(app_with(trace_requests=trace_requests)) as base:
        asyncio.run(main(base))
        time.sleep(0.1)  # the last background tasks
    rows = by_label(stored())
    expected_labels = 0
    for i in range(n):
        path = paths[i % len(paths)]
        if path.startswith("/stream"):
            labels = [f"L{i}-{k}" for k in range(3)]
        elif path == "/background":
            labels = [f"L{i}-async-task", f"L{i}-sync-task"]
        else:
            labels = [f"L{i}"]
        want = (f"user-{i}", f"session-{i}", f"r-{i}") if i % 5 else (None, None, None)
        for label in labels:
            row = rows[label]
            assert (row["user"], row["session"], row["request_id"]) == want, label
        expected_labels += len(labels)
    assert len(rows) == expected_labels


@pytest.mark.parametrize("path", ["/whoami", "/sync", "/stream", "/stream-sync"])
def test_anonymous_request_after_identified_one_on_same_connection_inherits_nothing(
    path: str,
) -> None:
    one_connection = httpx.Limits(max_connections=1)
    with (
        uvicorn_server(app_with()) as base,
        httpx.Client(base_url=base, limits=one_connection) as client,
    ):
        for i in range(4):
            headers = {**ID, "X-Request-ID": f"r{i}"} if i % 2 == 0 else {}
            r = client.get(path, params={"label": f"L{i}"}, headers=headers)
            assert r.status_code == 200
            r = client.get("/whoami", params={"label": f"after{i}"})
            assert r.json() == {"seen": [None, None]}
    rows = by_label(stored())
    for i in range(4):
        label = f"L{i}-0" if path.startswith("/stream") else f"L{i}"
        want = ("user-1", "session-1", f"r{i}") if i % 2 == 0 else (None, None, None)
        assert (rows[label]["user"], rows[label]["session"], rows[label]["request_id"]) == want
        assert ids(rows[f"after{i}"]) == (None, None)
        assert rows[f"after{i}"]["request_id"] is None


def test_sync_endpoint_on_reused_pool_thread_inherits_nothing() -> None:
    threads = []
    with uvicorn_server(app_with()) as base, httpx.Client(base_url=base) as client:
        for i in range(10):
            r = client.get("/sync", params={"label": f"L{i}"}, headers=ID if i % 2 == 0 else {})
            seen = r.json()
            assert seen["seen"] == (["user-1", "session-1"] if i % 2 == 0 else [None, None])
            threads.append(seen["thread"])
    assert len(set(threads)) < len(threads), "the pool never reused a thread; test proves nothing"
    rows = by_label(stored())
    for i in range(10):
        assert ids(rows[f"L{i}"]) == (("user-1", "session-1") if i % 2 == 0 else (None, None))


# -- what reaches streamed bodies, background tasks and threads -------------------------


@pytest.mark.parametrize("path", ["/stream", "/stream-sync"])
def test_streamed_body_keeps_the_ids_until_the_last_chunk(path: str) -> None:
    with uvicorn_server(app_with()) as base:
        r = httpx.get(f"{base}{path}", params={"label": "S"}, headers=ID)
    assert r.text == "chunk 0\nchunk 1\nchunk 2\n"
    rows = by_label(stored())
    assert [ids(rows[f"S-{i}"]) for i in range(3)] == [("user-1", "session-1")] * 3


def test_sse_traced_async_generator_and_code_after_it_record_the_user() -> None:
    with uvicorn_server(app_with()) as base:
        r = httpx.get(f"{base}/sse", params={"label": "E"}, headers=ID)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text == "data: token0\n\ndata: token1\n\ndata: token2\n\n"
    rows = stored()
    generate = [row for row in rows if row["name"] == "generate"]
    assert len(generate) == 1
    assert ids(generate[0]) == ("user-1", "session-1")
    assert generate[0]["spans"][0].outputs == r.text
    assert ids(by_label(rows)["E-after"]) == ("user-1", "session-1")


def test_background_tasks_see_the_ids() -> None:
    with uvicorn_server(app_with()) as base:
        assert httpx.get(f"{base}/background", params={"label": "B"}, headers=ID).json() == {
            "ok": "B"
        }
        time.sleep(0.1)
    rows = by_label(stored())
    assert ids(rows["B-async-task"]) == ("user-1", "session-1")
    assert ids(rows["B-sync-task"]) == ("user-1", "session-1")


def test_what_reaches_thread_pools_and_threads() -> None:
    with uvicorn_server(app_with()) as base:
        seen = httpx.get(f"{base}/threads", params={"label": "T"}, headers=ID).json()
    carried = ["user-1", "session-1"]
    assert seen == {
        "run_in_threadpool": carried,
        "context_pool": carried,
        "plain_pool": [None, None],  # a plain executor does not carry context...
        "plain_pool_wrapped": carried,  # ...unless the task is wrapped
        "run_in_executor": carried,
    }
    rows = by_label(stored())
    assert ids(rows["T-raw_thread"]) == (None, None)  # documented: use the helpers
    assert ids(rows["T-wrapped_thread"]) == ("user-1", "session-1")
    for name in ("run_in_threadpool", "context_pool", "plain_pool_wrapped"):
        assert ids(rows[f"T-{name}"]) == ("user-1", "session-1"), name


def test_per_trace_override_changes_that_trace_only() -> None:
    with uvicorn_server(app_with()) as base:
        r = httpx.get(f"{base}/override", params={"label": "o"}, headers=ID)
    assert r.json() == {"seen": ["user-1", "session-1"]}  # the request default is intact
    rows = stored()
    (other,) = [row for row in rows if row["name"] == "record_as_someone_else"]
    assert ids(other) == ("different_user_123", "session-1")
    assert ids(by_label(rows)["o"]) == ("user-1", "session-1")


# -- exceptions ---------------------------------------------------------------------------


def test_app_exception_reaches_the_server_unchanged_and_context_is_reset() -> None:
    error = AppError("original")
    seen_inside: list[tuple[str | None, str | None]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen_inside.append(sessiontrace.get_user_session_context())
        raise error

    async def main(mw: Any) -> tuple[BaseException | None, tuple[str | None, str | None]]:
        scope = {"type": "http", "path": "/", "method": "GET", "headers": [(b"x-user-id", b"u")]}
        try:
            await mw(scope, None, None)
        except AppError as exc:
            return exc, sessiontrace.get_user_session_context()
        return None, sessiontrace.get_user_session_context()

    for trace_requests in (False, True):
        caught, after = asyncio.run(main(ASGIMiddleware(app, trace_requests=trace_requests)))
        assert caught is error
        assert after == (None, None)
    assert seen_inside == [("u", None), ("u", None)]
    rows = stored()
    assert len(rows) == 1  # the request trace
    assert rows[0]["state"] == "ERROR"
    assert rows[0]["user"] == "u"
    root = rows[0]["spans"][0]
    assert root.events[0].attributes["exception.type"] == "AppError"


def test_exception_under_uvicorn_gives_500_and_an_error_request_trace() -> None:
    with uvicorn_server(app_with(trace_requests=True)) as base:
        r = httpx.get(f"{base}/boom", params={"label": "X"}, headers=ID)
    assert r.status_code == 500
    (row,) = stored()
    assert (row["name"], row["state"], ids(row)) == ("GET /boom", "ERROR", ("user-1", "session-1"))
    assert [s.name for s in row["spans"]] == ["GET /boom", "record"]


# -- bad headers ------------------------------------------------------------------------

# (case, headers as sent, user id stored by default, reason logged or None)
HEADER_CASES: list[tuple[str, list[tuple[str, bytes]], str | None, str | None]] = [
    ("max length", [("X-User-ID", b"a" * 250)], "a" * 250, None),
    ("too long", [("X-User-ID", b"a" * 251)], None, "too long"),
    ("empty", [("X-User-ID", b"")], None, None),
    ("space inside", [("X-User-ID", b"user 7")], None, "disallowed characters"),
    ("markup", [("X-User-ID", b"<script>SECRET</script>")], None, "disallowed characters"),
    ("quote", [("X-User-ID", b'"SECRET"')], None, "disallowed characters"),
    ("tab", [("X-User-ID", b"SECRET\tx")], None, "disallowed characters"),
    ("latin-1", [("X-User-ID", "SECRÉT".encode("latin-1"))], None, "disallowed characters"),
    ("utf-8", [("X-User-ID", "SECRET-ü".encode())], None, "disallowed characters"),
    ("comma-joined", [("X-User-ID", b"SECRET-a,SECRET-b")], None, "multiple values"),
    ("repeated", [("X-User-ID", b"SECRET-a"), ("X-User-ID", b"SECRET-b")], None, "multiple values"),
    (
        "repeated equal",
        [("X-User-ID", b"SECRET"), ("X-User-ID", b"SECRET")],
        None,
        "multiple values",
    ),
]


@pytest.fixture(scope="module")
def lenient_server() -> Any:
    with uvicorn_server(app_with()) as base:
        yield base


@pytest.fixture(scope="module")
def strict_server() -> Any:
    with uvicorn_server(app_with(strict=True)) as base:
        yield base


@pytest.mark.parametrize(("case", "headers", "stored_user", "reason"), HEADER_CASES)
def test_bad_header_is_dropped_with_a_warning_that_never_shows_the_value(
    lenient_server: str,
    caplog: pytest.LogCaptureFixture,
    case: str,
    headers: list[tuple[str, bytes]],
    stored_user: str | None,
    reason: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="sessiontrace.middleware")
    r = httpx.get(
        f"{lenient_server}/whoami",
        params={"label": case},
        headers=[*headers, ("X-Session-ID", b"session-1")],
    )
    assert r.status_code == 200
    row = by_label(stored())[case]
    assert ids(row) == (stored_user, "session-1")
    messages = [rec.getMessage() for rec in caplog.records if rec.name.startswith("sessiontrace")]
    if reason is None:
        assert messages == []
    else:
        assert len(messages) == 1
        assert "X-User-ID" in messages[0] and reason in messages[0]
    assert not any("SECRET" in m or "aaaa" in m for m in messages)


@pytest.mark.parametrize(("case", "headers", "stored_user", "reason"), HEADER_CASES)
def test_strict_mode_answers_400_without_echoing_the_value(
    strict_server: str,
    case: str,
    headers: list[tuple[str, bytes]],
    stored_user: str | None,
    reason: str | None,
) -> None:
    r = httpx.get(f"{strict_server}/whoami", params={"label": case}, headers=headers)
    rows = by_label(stored())
    if reason is None:
        assert r.status_code == 200
        assert rows[case]["user"] == stored_user
    else:
        assert r.status_code == 400
        assert r.text == f"Bad Request: invalid X-User-ID header: {reason}\n"
        assert case not in rows  # the app never ran


def test_surrounding_whitespace_is_stripped_when_a_server_passes_it() -> None:
    # h11 strips it already; other servers or proxies may not.
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(sessiontrace.get_user_session_context())

    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"x-user-id", b"  user-7 "), (b"x-session-id", b"\ts-1")],
    }
    asyncio.run(ASGIMiddleware(app)(scope, None, None))  # type: ignore[arg-type]
    assert seen == [("user-7", "s-1")]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Session-ID": "a" * 300},
        {"X-Request-ID": "bad id"},
        {"X-Session-ID": "s1, s2"},
    ],
)
def test_strict_mode_checks_session_and_request_id_too(
    strict_server: str, headers: dict[str, str]
) -> None:
    assert (
        httpx.get(f"{strict_server}/whoami", params={"label": "x"}, headers=headers).status_code
        == 400
    )


def test_invalid_request_id_is_dropped_but_the_user_is_kept() -> None:
    with uvicorn_server(app_with()) as base:
        httpx.get(f"{base}/whoami", params={"label": "x"}, headers={**ID, "X-Request-ID": "a b"})
    row = by_label(stored())["x"]
    assert (row["user"], row["request_id"]) == ("user-1", None)


# -- BaseHTTPMiddleware next to ours ---------------------------------------------------


@pytest.mark.parametrize("ours_outside", [True, False])
def test_base_http_middleware_stacked_before_or_after(ours_outside: bool) -> None:
    class Recorder(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Response:
            record(f"{request.query_params['label']}-basehttp")
            response = await call_next(request)
            response.headers["x-recorder"] = "1"
            return response

    app = make_app()
    if ours_outside:  # add_middleware puts the last one added outermost
        app.add_middleware(Recorder)
        app.add_middleware(ASGIMiddleware)
    else:
        app.add_middleware(ASGIMiddleware)
        app.add_middleware(Recorder)
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as client:
        for path in ("/whoami", "/sync", "/stream", "/background"):
            r = client.get(path, params={"label": path[1:]}, headers=ID)
            assert r.status_code == 200
            assert r.headers["x-recorder"] == "1"
        time.sleep(0.1)
    rows = by_label(stored())
    for label in ("whoami", "sync", "stream-0", "stream-2", "background-async-task"):
        assert ids(rows[label]) == ("user-1", "session-1"), label
    for path in ("whoami", "sync", "stream", "background"):
        # Outside ours, the BaseHTTPMiddleware runs before the ids are set.
        want = ("user-1", "session-1") if ours_outside else (None, None)
        assert ids(rows[f"{path}-basehttp"]) == want


# -- websocket and lifespan -------------------------------------------------------------


def test_websocket_gets_the_ids_and_echo() -> None:
    with uvicorn_server(app_with(echo_session_id=True)) as base:
        url = base.replace("http", "ws") + "/ws"
        with websockets.sync.client.connect(url, additional_headers=ID) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-session-id"] == "session-1"
            ws.send("ws-1")
            assert ws.recv(timeout=5) == '{"seen":["user-1","session-1"]}'
        with websockets.sync.client.connect(url) as ws:
            ws.send("ws-anon")
            assert ws.recv(timeout=5) == '{"seen":[null,null]}'
    rows = by_label(stored())
    assert ids(rows["ws-1"]) == ("user-1", "session-1")
    assert ids(rows["ws-anon"]) == (None, None)


def test_websocket_with_bad_header_in_strict_mode_is_refused() -> None:
    with uvicorn_server(app_with(strict=True)) as base:
        url = base.replace("http", "ws") + "/ws"
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            websockets.sync.client.connect(url, additional_headers={"X-User-ID": "a b"})
        assert info.value.response.status_code == 403
    assert stored() == []


def test_websocket_is_not_a_request_trace() -> None:
    with (
        uvicorn_server(app_with(trace_requests=True)) as base,
        websockets.sync.client.connect(
            base.replace("http", "ws") + "/ws", additional_headers=ID
        ) as ws,
    ):
        ws.send("w")
        ws.recv(timeout=5)
    (row,) = stored()
    assert (row["name"], ids(row)) == ("record", ("user-1", "session-1"))


def test_lifespan_runs_through_untouched() -> None:
    app = make_app(lifespan_label="life")
    app.add_middleware(ASGIMiddleware, trace_requests=True)
    with uvicorn_server(app, lifespan="on") as base:
        assert httpx.get(f"{base}/whoami", params={"label": "req"}, headers=ID).status_code == 200
    rows = by_label(stored())
    assert ids(rows["life-startup"]) == (None, None)
    assert ids(rows["life-shutdown"]) == (None, None)
    assert ids(rows["req"]) == ("user-1", "session-1")


def test_other_scope_types_pass_through_and_shutdown_flushes_first(store_path: Path) -> None:
    seen: list[Any] = []
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive))
        await receive()
        record("during-lifespan")
        complete = {"type": "lifespan.shutdown.complete"}
        await send(complete)
        seen.append(complete)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    async def receive() -> Any:
        return {"type": "lifespan.shutdown"}

    async def send(message: Any) -> None:
        # The trace finished just before must already be in the store.
        store = _runtime.get_store()
        sent.append(
            (message, [t.data.spans[0].inputs for t in store.load_traces(store.list_trace_ids())])
        )

    # Nothing is written by the timer during this test: only a flush writes.
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}", flush_interval=600)
    asyncio.run(ASGIMiddleware(app, trace_requests=True)(scope, receive, send))
    assert seen[0] == (scope, receive)
    assert seen[0][0] is scope and scope == {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert sent == [(seen[1], [{"label": "during-lifespan"}])]
    assert sent[0][0] is seen[1]


def test_sigterm_under_uvicorn_loses_no_trace(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    port = free_port()
    env = {
        **os.environ,
        "SESSIONTRACE_TRACKING_URI": f"sqlite:///{db}",
        "SESSIONTRACE_FLUSH_INTERVAL": "600",  # only a flush writes
        "PYTHONPATH": str(HERE),
    }
    cmd = [sys.executable, "-m", "uvicorn", "asgi_apps:app", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, cwd=HERE, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/whoami", params={"label": "ready"}, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        for i in range(20):
            httpx.get(f"{base}/whoami", params={"label": f"s{i}"}, headers=ID)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    rows = by_label(stored(db))
    assert len(rows) == 21
    assert all(ids(rows[f"s{i}"]) == ("user-1", "session-1") for i in range(20))


# -- mounted twice ------------------------------------------------------------------------


def test_mounted_twice_acts_once() -> None:
    inner = make_app()
    inner.add_middleware(ASGIMiddleware, user_header="X-Other-User", trace_requests=True)
    outer = FastAPI(routes=[Mount("/sub", app=inner)])
    outer.add_middleware(ASGIMiddleware, trace_requests=True)
    wrapped = ASGIMiddleware(ASGIMiddleware(make_app(), trace_requests=True), trace_requests=True)
    with uvicorn_server(outer) as base:
        httpx.get(f"{base}/sub/whoami", params={"label": "m"}, headers={**ID, "X-Other-User": "x"})
    with uvicorn_server(wrapped) as base:
        httpx.get(f"{base}/whoami", params={"label": "w"}, headers=ID)
    rows = stored()
    assert len(rows) == 2
    for row in rows:
        assert ids(row) == ("user-1", "session-1")
        assert [s.span_type for s in row["spans"]].count("HTTP") == 1


def test_an_app_called_again_with_the_same_scope_gets_its_ids_again() -> None:
    """The mounted-twice mark lives as long as the call: a wrapper that retries the
    app with the same scope (a fallback, a retry on error) gets a fresh decision."""

    class CallTwice:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            await self.app(scope, receive, lambda message: asyncio.sleep(0))
            await self.app(scope, receive, send)

    app = CallTwice(ASGIMiddleware(make_app()))
    with uvicorn_server(app) as base:
        httpx.get(f"{base}/whoami", params={"label": "r"}, headers=ID)
    rows = [row for row in stored() if row["name"] == "record"]
    assert len(rows) == 2
    assert all(ids(row) == ("user-1", "session-1") for row in rows)


# -- request traces -----------------------------------------------------------------------


def test_request_trace_has_route_status_request_id_and_children() -> None:
    with uvicorn_server(app_with(trace_requests=True)) as base:
        r = httpx.get(f"{base}/items/7", headers={**ID, "X-Request-ID": "req-7"})
        assert httpx.get(f"{base}/nope").status_code == 404
    assert r.json() == {"item": 7, "seen": ["user-1", "session-1"]}
    item, missing = stored()
    root, child = item["spans"]
    assert (item["name"], item["state"], item["request_id"]) == (
        "GET /items/{item_id}",
        "OK",
        "req-7",
    )
    assert ids(item) == ("user-1", "session-1")
    assert root.attributes["http.route"] == "/items/{item_id}"
    assert root.attributes["http.status_code"] == 200
    assert root.attributes["http.target"] == "/items/7"
    assert root.inputs == {"method": "GET", "path": "/items/7"}
    assert root.outputs == {"item": 7, "seen": ["user-1", "session-1"]}
    assert (child.name, child.parent_id) == ("record", root.span_id)
    assert (missing["name"], missing["state"]) == ("GET /nope", "OK")
    assert missing["spans"][0].attributes["http.status_code"] == 404


def test_request_trace_collects_the_stream_and_ends_after_the_last_chunk() -> None:
    with uvicorn_server(app_with(trace_requests=True, max_body_bytes=12)) as base:
        httpx.get(f"{base}/stream", params={"label": "s"}, headers=ID)
    with uvicorn_server(app_with(trace_requests=True)) as base:
        body = httpx.get(f"{base}/stream", params={"label": "t"}, headers=ID).text
    truncated, full = stored()
    assert full["spans"][0].outputs == body == "chunk 0\nchunk 1\nchunk 2\n"
    assert [s.name for s in full["spans"]] == ["GET /stream", "record", "record", "record"]
    root = full["spans"][0]
    assert all(s.end_time_ns <= root.end_time_ns for s in full["spans"])
    assert truncated["spans"][0].outputs == "chunk 0\nchun"
    assert truncated["spans"][0].attributes["http.response_truncated"] is True
    assert truncated["spans"][0].attributes["http.response_bytes"] == len(body)


def test_request_trace_ends_when_the_client_disconnects() -> None:
    with uvicorn_server(app_with(trace_requests=True)) as base:
        start = time.monotonic()
        with httpx.stream("GET", f"{base}/slow-stream", params={"label": "d"}, headers=ID) as r:
            lines = r.iter_lines()
            assert next(lines) == "chunk 0"
            assert next(lines) == "chunk 1"
        rows = stored(expect=1)
        deadline = time.monotonic() + 5
        while not rows and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = stored()
    (row,) = rows
    root = row["spans"][0]
    assert root.attributes["http.client_disconnected"] is True
    assert ids(row) == ("user-1", "session-1")
    # The full stream would take 4 s; the trace ended at the disconnect.
    assert (root.end_time_ns - root.start_time_ns) / 1e9 < time.monotonic() - start < 3


def test_server_error_status_makes_the_request_trace_an_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"down"})

    with uvicorn_server(ASGIMiddleware(app, trace_requests=True)) as base:
        assert httpx.get(f"{base}/x").status_code == 503
    (row,) = stored()
    assert (row["name"], row["state"]) == ("GET /x", "ERROR")


# -- options ------------------------------------------------------------------------------


def test_echo_and_generated_session_ids() -> None:
    counter = iter(range(100))
    with uvicorn_server(app_with(echo_session_id=True)) as base:
        echoed = httpx.get(f"{base}/whoami", params={"label": "e"}, headers=ID)
        not_echoed = httpx.get(f"{base}/whoami", params={"label": "n"})
    with uvicorn_server(
        app_with(generate_session_id=lambda: f"gen-{next(counter)}", echo_session_id=False)
    ) as base:
        generated = httpx.get(f"{base}/whoami", params={"label": "g"}, headers={"X-User-ID": "u"})
        kept = httpx.get(f"{base}/whoami", params={"label": "k"}, headers=ID)
        bad = httpx.get(f"{base}/whoami", params={"label": "b"}, headers={"X-Session-ID": "a b"})
    with uvicorn_server(app_with(generate_session_id=True)) as base:
        random_id = httpx.get(f"{base}/whoami", params={"label": "r"})
    assert echoed.headers["x-session-id"] == "session-1"
    assert "x-session-id" not in not_echoed.headers
    assert generated.headers["x-session-id"] == "gen-0"  # a generated id is always echoed
    assert "x-session-id" not in kept.headers
    assert bad.headers["x-session-id"] == "gen-1"
    assert len(random_id.headers["x-session-id"]) == 32
    rows = by_label(stored())
    assert ids(rows["g"]) == ("u", "gen-0")
    assert ids(rows["k"]) == ("user-1", "session-1")
    assert ids(rows["b"]) == (None, "gen-1")
    assert rows["r"]["session"] == random_id.headers["x-session-id"]


def test_user_ids_pseudonymised_with_keyed_hmac() -> None:
    key = b"k" * 32
    with uvicorn_server(app_with(user_id_hmac_key=key)) as base:
        httpx.get(f"{base}/whoami", params={"label": "a"}, headers=ID)
        httpx.get(f"{base}/whoami", params={"label": "b"}, headers=ID)
        httpx.get(f"{base}/whoami", params={"label": "c"}, headers={"X-User-ID": "user-2"})
    rows = by_label(stored())
    want = "u-" + hmac.new(key, b"user-1", hashlib.sha256).hexdigest()[:32]
    assert rows["a"]["user"] == rows["b"]["user"] == want
    assert rows["c"]["user"] not in (want, "user-2")
    assert rows["a"]["session"] == "session-1"  # only user ids are pseudonymised


def test_excluded_paths_are_served_without_ids_or_request_traces() -> None:
    with uvicorn_server(
        app_with(trace_requests=True, exclude_paths=["/healthz", "/items/*"])
    ) as base:
        httpx.get(f"{base}/healthz", params={"label": "h"}, headers=ID)
        httpx.get(f"{base}/items/3", headers=ID)
        httpx.get(f"{base}/whoami", params={"label": "w"}, headers=ID)
    rows = by_label(stored())
    assert ids(rows["h"]) == (None, None) and rows["h"]["name"] == "record"
    assert ids(rows["item-3"]) == (None, None) and rows["item-3"]["name"] == "record"
    assert ids(rows["w"]) == ("user-1", "session-1") and rows["w"]["name"] == "GET /whoami"


def _auth_user(scope: Any) -> tuple[str | None, str | None] | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode().removeprefix("Bearer "), None
    return None


async def _async_auth_user(scope: Any) -> tuple[str | None, str | None] | None:
    await asyncio.sleep(0)
    return _auth_user(scope)


def _broken(scope: Any) -> Any:
    raise RuntimeError("resolver bug")


@pytest.mark.parametrize(
    ("resolver", "user_for_authorized"),
    [
        (_auth_user, "alice"),
        (_async_auth_user, "alice"),
        (_broken, "user-1"),
        (lambda s: 42, "user-1"),
    ],
)
def test_resolver_comes_before_headers_and_never_breaks_the_request(
    resolver: Callable[[Any], Any], user_for_authorized: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sessiontrace.middleware")
    with uvicorn_server(app_with(resolver=resolver)) as base:
        a = httpx.get(
            f"{base}/whoami", params={"label": "a"}, headers={**ID, "Authorization": "Bearer alice"}
        )
        b = httpx.get(f"{base}/whoami", params={"label": "b"}, headers=ID)
    assert a.status_code == b.status_code == 200
    rows = by_label(stored())
    assert ids(rows["a"]) == (user_for_authorized, "session-1")
    assert ids(rows["b"]) == ("user-1", "session-1")
    if resolver is _broken:
        assert sessiontrace.get_stats()["internal_errors"]["middleware_resolver"] == 2


def test_resolver_only_ignores_headers() -> None:
    with uvicorn_server(
        app_with(resolver=_auth_user, user_header=None, session_header=None)
    ) as base:
        httpx.get(
            f"{base}/whoami", params={"label": "a"}, headers={**ID, "Authorization": "Bearer al"}
        )
        httpx.get(f"{base}/whoami", params={"label": "b"}, headers=ID)
    rows = by_label(stored())
    assert ids(rows["a"]) == ("al", None)
    assert ids(rows["b"]) == (None, None)


def test_custom_header_names_and_allowed_characters() -> None:
    with uvicorn_server(
        app_with(user_header="X-Account", session_header="X-Conversation", allowed_chars="abc,")
    ) as base:
        httpx.get(
            f"{base}/whoami",
            params={"label": "a"},
            headers={"X-Account": "a,b", "X-Conversation": "cab", "X-User-ID": "ignored"},
        )
        httpx.get(f"{base}/whoami", params={"label": "b"}, headers={"X-Account": "abd"})
    rows = by_label(stored())
    assert ids(rows["a"]) == ("a,b", "cab")  # a comma is allowed when listed
    assert ids(rows["b"]) == (None, None)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_length": 0}, ValueError),
        ({"max_length": "10"}, TypeError),
        ({"max_length": True}, TypeError),
        ({"allowed_chars": ""}, ValueError),
        ({"allowed_chars": "ab c"}, ValueError),
        ({"allowed_chars": 5}, TypeError),
        ({"user_header": "X User"}, ValueError),
        ({"user_header": 3}, TypeError),
        ({"user_header": None, "session_header": None}, ValueError),
        ({"session_header": "x-user-id"}, ValueError),
        ({"resolver": "not callable"}, TypeError),
        ({"strict": "yes"}, TypeError),
        ({"echo_session_id": 1}, TypeError),
        ({"generate_session_id": "yes"}, TypeError),
        ({"user_id_hmac_key": b"short"}, ValueError),
        ({"user_id_hmac_key": 12345}, TypeError),
        ({"exclude_paths": "/healthz"}, TypeError),
        ({"exclude_paths": ["healthz"]}, ValueError),
        ({"trace_requests": "yes"}, TypeError),
        ({"max_body_bytes": -1}, ValueError),
    ],
)
def test_bad_configuration_fails_at_construction(options: dict[str, Any], error: type) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(error):
        ASGIMiddleware(app, **options)
    with pytest.raises(error):
        sessiontrace.WSGIMiddleware(lambda e, s: [], **options)


def test_not_an_app_fails_at_construction() -> None:
    with pytest.raises(TypeError):
        ASGIMiddleware(None)  # type: ignore[arg-type]


def test_public_names() -> None:
    assert sessiontrace.ASGIMiddleware is sessiontrace.middleware.ASGIMiddleware
    assert sessiontrace.WSGIMiddleware is sessiontrace.middleware.WSGIMiddleware
    assert {"ASGIMiddleware", "WSGIMiddleware"} <= set(sessiontrace.__all__)
    assert sessiontrace.__all__ == sorted(sessiontrace.__all__)


def test_a_flood_of_bad_headers_logs_one_warning_per_kind(
    lenient_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessiontrace.middleware")
    with httpx.Client() as client:
        for i in range(40):
            r = client.get(
                f"{lenient_server}/whoami",
                params={"label": f"flood-{i}"},
                headers={"X-User-ID": "bad value!", "X-Session-ID": "x" * 300},
            )
            assert r.status_code == 200
    messages = [rec.getMessage() for rec in caplog.records if rec.name.startswith("sessiontrace")]
    assert len(messages) == 2  # one for the user header's characters, one for the length
    rows = by_label(stored())
    assert all(ids(rows[f"flood-{i}"]) == (None, None) for i in range(40))
