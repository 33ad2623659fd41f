"""WSGIMiddleware under werkzeug's threaded server and gunicorn (gthread) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import sessiontrace
from sessiontrace import WSGIMiddleware

from .servers import by_label, gunicorn_server, stored, werkzeug_server
from .wsgi_apps import AppError, make_app

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


def ids(row: dict[str, Any]) -> tuple[str | None, str | None]:
    return row["user"], row["session"]


PATHS = ["/whoami", "/stream", "/stream-untraced", "/stream-with-context", "/on-close"]


def _labels_for(path: str, label: str) -> list[str]:
    if path == "/stream-with-context":
        return [f"{label}-0", f"{label}-1"]
    if path.startswith("/stream"):
        return [f"{label}-{k}" for k in range(3)]
    if path == "/on-close":
        return [f"{label}-close"]
    return [label]


def _labels(i: int) -> list[str]:
    return _labels_for(PATHS[i % len(PATHS)], f"L{i}")


def _send_concurrently(base: str, n: int) -> None:
    def headers(i: int) -> dict[str, str]:
        if i % 5 == 0:
            return {}
        return {"X-User-ID": f"user-{i}", "X-Session-ID": f"session-{i}", "X-Request-ID": f"r-{i}"}

    with httpx.Client(base_url=base, timeout=30) as client:

        def one(i: int) -> None:
            r = client.get(PATHS[i % len(PATHS)], params={"label": f"L{i}"}, headers=headers(i))
            assert r.status_code == 200, r.text

        with ThreadPoolExecutor(12) as pool:
            list(pool.map(one, range(n)))


def _check_no_cross_talk(rows: dict[str, dict[str, Any]], n: int) -> None:
    total = 0
    for i in range(n):
        want = (f"user-{i}", f"session-{i}", f"r-{i}") if i % 5 else (None, None, None)
        for label in _labels(i):
            row = rows[label]
            assert (row["user"], row["session"], row["request_id"]) == want, label
            total += 1
    assert len(rows) == total


# -- isolation under real servers -----------------------------------------------------


@pytest.mark.parametrize("trace_requests", [False, True])
def test_werkzeug_concurrent_requests_never_cross(trace_requests: bool) -> None:
    n = 100
    with werkzeug_server(make_app(trace_requests=trace_requests)) as base:
        _send_concurrently(base, n)
    _check_no_cross_talk(by_label(stored()), n)


@pytest.mark.parametrize("trace_requests", [False, True])
def test_gunicorn_gthread_concurrent_requests_never_cross(
    tmp_path: Path, trace_requests: bool
) -> None:
    n = 100
    db = tmp_path / "gunicorn.db"
    env = {"TEST_TRACE_REQUESTS": "1" if trace_requests else "0"}
    with gunicorn_server("wsgi_apps:app", db, threads=4, env=env) as base:
        _send_concurrently(base, n)
        expected = sum(len(_labels(i)) for i in range(n))
        rows = stored(db, expect=n if trace_requests else expected)
    _check_no_cross_talk(by_label(rows), n)


def test_gunicorn_reused_worker_thread_and_connection_inherit_nothing(tmp_path: Path) -> None:
    db = tmp_path / "gunicorn.db"
    threads = []
    with gunicorn_server("wsgi_apps:app", db, threads=1) as base:
        with httpx.Client(base_url=base, limits=httpx.Limits(max_connections=1)) as client:
            for i in range(8):
                r = client.get(
                    "/whoami", params={"label": f"L{i}"}, headers=ID if i % 2 == 0 else {}
                )
                body = r.json()
                assert body["seen"] == (["user-1", "session-1"] if i % 2 == 0 else [None, None])
                threads.append(body["thread"])
                r = client.get("/stream", params={"label": f"S{i}"}, headers=ID if i % 2 else {})
                assert r.status_code == 200
        rows = by_label(stored(db, expect=16))
    assert len(set(threads)) == 1  # one worker thread served every request
    for i in range(8):
        assert ids(rows[f"L{i}"]) == (("user-1", "session-1") if i % 2 == 0 else (None, None))
        for k in range(3):
            assert ids(rows[f"S{i}-{k}"]) == (("user-1", "session-1") if i % 2 else (None, None))


def test_gunicorn_streamed_flask_generator_records_the_user(tmp_path: Path) -> None:
    db = tmp_path / "gunicorn.db"
    with gunicorn_server("wsgi_apps:app", db, env={"TEST_TRACE_REQUESTS": "1"}) as base:
        r = httpx.get(f"{base}/stream", params={"label": "g"}, headers=ID)
        rows = stored(db, expect=1)
    assert r.text == "chunk 0\nchunk 1\nchunk 2\n"
    (row,) = rows
    assert (row["name"], ids(row)) == ("GET /stream", ("user-1", "session-1"))
    assert [s.name for s in row["spans"]] == [
        "GET /stream",
        "generate",
        "record",
        "record",
        "record",
    ]
    assert row["spans"][0].outputs == r.text


@pytest.mark.parametrize("path", PATHS)
def test_werkzeug_streams_and_close_callbacks_see_the_ids(path: str) -> None:
    with werkzeug_server(make_app()) as base, httpx.Client(base_url=base) as client:
        assert client.get(path, params={"label": "A"}, headers=ID).status_code == 200
        assert client.get(path, params={"label": "B"}).status_code == 200
    # werkzeug calls close() after the client has the response, so a close callback's
    # trace can still be on its way: wait for every label (a missing one fails below).
    wanted = [*_labels_for(path, "A"), *_labels_for(path, "B")]
    deadline = time.monotonic() + 10
    rows = by_label(stored())
    while not all(label in rows for label in wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = by_label(stored())
    for label in _labels_for(path, "A"):
        assert ids(rows[label]) == ("user-1", "session-1")
    for label in _labels_for(path, "B"):
        assert ids(rows[label]) == (None, None)


def test_threads_get_the_ids_only_through_the_helpers() -> None:
    with werkzeug_server(make_app()) as base:
        httpx.get(f"{base}/threads", params={"label": "T"}, headers=ID)
    rows = by_label(stored())
    assert ids(rows["T-raw"]) == (None, None)
    assert ids(rows["T-wrapped"]) == ("user-1", "session-1")
    assert ids(rows["T-pool"]) == ("user-1", "session-1")


# -- the response iterable, driven directly ---------------------------------------------


def _environ(**headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def _recording_app(events: list[Any]) -> Callable[..., Any]:
    @sessiontrace.trace
    def record(label: str) -> list[str | None]:
        return list(sessiontrace.get_user_session_context())

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            for i in range(2):
                events.append(("chunk", i, record(f"chunk-{i}")))
                yield b"x"

        def close(self) -> None:
            events.append(("close", record("close")))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        events.append(("call", record("call")))
        return Body()

    return app


@pytest.mark.parametrize("trace_requests", [False, True])
def test_body_iterated_and_closed_from_another_thread_sees_the_ids(trace_requests: bool) -> None:
    events: list[Any] = []
    mw = WSGIMiddleware(_recording_app(events), trace_requests=trace_requests)
    body = mw(_environ(X_USER_ID="u1", X_SESSION_ID="s1"), _start_response)
    assert sessiontrace.get_user_session_context() == (None, None)  # not left on this thread

    def consume() -> None:
        for _ in body:
            assert sessiontrace.get_user_session_context() == (None, None)  # between chunks
        body.close()  # type: ignore[attr-defined]
        assert sessiontrace.get_user_session_context() == (None, None)

    t = threading.Thread(target=consume)
    t.start()
    t.join()
    u = ["u1", "s1"]
    assert events == [("call", u), ("chunk", 0, u), ("chunk", 1, u), ("close", u)]
    rows = stored()
    if trace_requests:
        (row,) = rows
        assert [s.name for s in row["spans"]] == ["GET /", "record", "record", "record", "record"]
        assert row["spans"][0].outputs == "xx"
    else:
        assert [ids(r) for r in rows] == [("u1", "s1")] * 4


def test_app_exceptions_pass_through_unchanged_and_reset_the_context() -> None:
    error = AppError("at call")

    def raises_at_call(environ: Any, start_response: Any) -> Any:
        raise error

    later = AppError("while iterating")

    def raises_in_body(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            yield b"a"
            raise later

        return body()

    for trace_requests in (False, True):
        mw = WSGIMiddleware(raises_at_call, trace_requests=trace_requests)
        with pytest.raises(AppError) as info:
            mw(_environ(X_USER_ID="u1"), _start_response)
        assert info.value is error
        assert sessiontrace.get_user_session_context() == (None, None)
        body = iter(
            WSGIMiddleware(raises_in_body, trace_requests=trace_requests)(
                _environ(X_USER_ID="u1"), _start_response
            )
        )
        assert next(body) == b"a"
        with pytest.raises(AppError) as info:
            next(body)
        assert info.value is later
        assert sessiontrace.get_user_session_context() == (None, None)
    rows = stored()
    assert [(r["state"], r["user"]) for r in rows] == [("ERROR", "u1"), ("ERROR", "u1")]


def test_materialised_body_is_returned_as_is() -> None:
    body = [b"hello"]
    mw = WSGIMiddleware(lambda environ, start_response: body)
    assert mw(_environ(), _start_response) is body


def test_flask_500_is_an_error_request_trace_under_werkzeug() -> None:
    with werkzeug_server(make_app(trace_requests=True)) as base:
        assert httpx.get(f"{base}/boom", params={"label": "b"}, headers=ID).status_code == 500
    (row,) = stored()
    assert (row["name"], row["state"], ids(row)) == ("GET /boom", "ERROR", ("user-1", "session-1"))
    assert row["spans"][0].attributes["http.status_code"] == 500


# -- request traces ---------------------------------------------------------------------


def test_request_trace_has_flask_route_status_and_children() -> None:
    with werkzeug_server(make_app(trace_requests=True)) as base:
        r = httpx.get(f"{base}/items/5", headers={**ID, "X-Request-ID": "req-5"})
    (row,) = stored()
    root, child = row["spans"]
    assert (row["name"], row["request_id"], ids(row)) == (
        "GET /items/<int:item_id>",
        "req-5",
        ("user-1", "session-1"),
    )
    assert root.attributes["http.route"] == "/items/<int:item_id>"
    assert root.attributes["http.status_code"] == 200
    assert root.outputs == r.json() == {"item": 5, "seen": ["user-1", "session-1"]}
    assert child.parent_id == root.span_id


def test_request_trace_ends_when_the_client_goes_away() -> None:
    with werkzeug_server(make_app(trace_requests=True)) as base:
        url = urlsplit(base)
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.sendall(b"GET /slow-stream HTTP/1.1\r\nHost: x\r\nX-User-ID: user-1\r\n\r\n")
            sock.recv(4096)
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not rows and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = stored()
    (row,) = rows
    root = row["spans"][0]
    assert root.attributes["http.client_disconnected"] is True
    assert row["user"] == "user-1"
    assert root.duration_ms is not None and root.duration_ms < 3000  # the full stream is 4 s


# -- headers and options ----------------------------------------------------------------

BAD = [
    ("too long", [("X-User-ID", "a" * 251)], "too long"),
    ("chars", [("X-User-ID", "<b>SECRET</b>")], "disallowed characters"),
    ("latin-1", [("X-User-ID", "SECRÉT".encode("latin-1"))], "disallowed characters"),
    ("comma", [("X-User-ID", "SECRET-a,SECRET-b")], "multiple values"),
    ("repeated", [("X-User-ID", "SECRET-a"), ("X-User-ID", "SECRET-b")], "multiple values"),
]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    with werkzeug_server(make_app()) as lenient, werkzeug_server(make_app(strict=True)) as strict:
        yield lenient, strict


@pytest.mark.parametrize(("case", "headers", "reason"), BAD)
def test_bad_headers_dropped_or_rejected_and_never_logged(
    servers: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
    case: str,
    headers: list[tuple[str, Any]],
    reason: str,
) -> None:
    lenient, strict = servers
    caplog.set_level(logging.WARNING, logger="sessiontrace.middleware")
    sent = [*headers, ("X-Session-ID", "session-1")]
    r = httpx.get(f"{lenient}/whoami", params={"label": case}, headers=sent)
    assert r.json()["seen"] == [None, "session-1"]
    assert ids(by_label(stored())[case]) == (None, "session-1")
    messages = [rec.getMessage() for rec in caplog.records if rec.name.startswith("sessiontrace")]
    assert len(messages) == 1 and reason in messages[0] and "X-User-ID" in messages[0]
    assert "SECRET" not in messages[0] and "aaa" not in messages[0]
    r = httpx.get(f"{strict}/whoami", params={"label": f"{case}-strict"}, headers=headers)
    assert r.status_code == 400
    assert r.text == f"Bad Request: invalid X-User-ID header: {reason}\n"
    assert f"{case}-strict" not in by_label(stored())


def test_options_echo_generate_hmac_exclude_and_resolver() -> None:
    key = "a-secret-key-of-enough-length"
    app = make_app(
        generate_session_id=lambda: "gen-1",
        user_id_hmac_key=key,
        exclude_paths=["/__ping__", "/items/*"],
        resolver=lambda environ: (environ.get("REMOTE_USER"), None),
    )
    with werkzeug_server(app) as base, httpx.Client(base_url=base) as client:
        generated = client.get("/whoami", params={"label": "g"}, headers={"X-User-ID": "u"})
        client.get("/items/1", headers=ID)
    with werkzeug_server(make_app(echo_session_id=True)) as base:
        echoed = httpx.get(f"{base}/whoami", params={"label": "e"}, headers=ID)
    assert generated.headers["x-session-id"] == "gen-1"
    assert echoed.headers["x-session-id"] == "session-1"
    rows = by_label(stored())
    pseudonym = "u-" + hmac.new(key.encode(), b"u", hashlib.sha256).hexdigest()[:32]
    assert ids(rows["g"]) == (pseudonym, "gen-1")
    assert ids(rows["item-1"]) == (None, None)  # excluded
    assert ids(rows["e"]) == ("user-1", "session-1")


def test_wsgi_resolver_wins_over_headers_and_failures_are_contained() -> None:
    def resolver(environ: dict[str, Any]) -> tuple[str | None, str | None]:
        if environ.get("HTTP_AUTHORIZATION") == "boom":
            raise RuntimeError("resolver bug")
        return environ.get("HTTP_AUTHORIZATION"), None

    with (
        werkzeug_server(make_app(resolver=resolver)) as base,
        httpx.Client(base_url=base) as client,
    ):
        client.get("/whoami", params={"label": "a"}, headers={**ID, "Authorization": "alice"})
        client.get("/whoami", params={"label": "b"}, headers={**ID, "Authorization": "boom"})
    rows = by_label(stored())
    assert ids(rows["a"]) == ("alice", "session-1")
    assert ids(rows["b"]) == ("user-1", "session-1")


def test_async_resolver_is_refused_for_wsgi() -> None:
    async def resolver(environ: Any) -> None: ...

    with pytest.raises(TypeError):
        WSGIMiddleware(lambda e, s: [], resolver=resolver)


def test_mounted_twice_acts_once() -> None:
    app = make_app(trace_requests=True)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, user_header="X-Other", trace_requests=True)  # type: ignore[method-assign]
    with werkzeug_server(app) as base:
        httpx.get(f"{base}/whoami", params={"label": "m"}, headers={**ID, "X-Other": "o"})
    (row,) = stored()
    assert ids(row) == ("o", "session-1")  # the outer instance's options
    assert [s.span_type for s in row["spans"]] == ["HTTP", "UNKNOWN"]
