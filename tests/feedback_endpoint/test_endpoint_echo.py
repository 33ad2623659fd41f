"""``echo_trace_id=True``: every response names the trace its request produced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import sessiontrace

from .apps import asgi_app, traces_by_label, wsgi_app
from .servers import ASGI_SERVERS, WSGI_SERVERS, serve

IDS = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


def _app(server: str, **middleware: Any) -> Any:
    return (
        asgi_app(middleware=middleware)
        if server in ASGI_SERVERS or server == "hypercorn-trio"
        else wsgi_app(middleware=middleware)
    )


@pytest.mark.parametrize("server", [*ASGI_SERVERS, "hypercorn-trio", *WSGI_SERVERS])
def test_a_normal_and_a_streamed_response_name_their_traces(server: str) -> None:
    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=IDS) as client:
        normal = client.get("/chat", params={"label": "normal"})
        with client.stream("GET", "/stream", params={"label": "streamed"}) as streamed:
            # The header is out before the trace starts inside the body.
            header = streamed.headers["X-Trace-ID"]
            body = streamed.read()
        quiet = client.get("/quiet")
    assert normal.status_code == 200 and b"answer to streamed" in body
    traces = traces_by_label()
    assert normal.headers["X-Trace-ID"] == traces["normal"]["trace_id"]
    assert header == traces["streamed"]["trace_id"]
    for label in ("normal", "streamed"):
        assert (traces[label]["user"], traces[label]["session"]) == ("user-1", "session-1")
        assert traces[label]["trace_id"].startswith("tr-")
        assert len(traces[label]["trace_id"]) == 35
    # A request that starts no trace still gets a (fresh) id; nothing is stored under it.
    assert quiet.headers["X-Trace-ID"].startswith("tr-")
    assert sessiontrace.get_trace(quiet.headers["X-Trace-ID"]) is None
    assert len({normal.headers["X-Trace-ID"], header, quiet.headers["X-Trace-ID"]}) == 3


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_the_app_s_own_header_is_left_alone(server: str) -> None:
    with serve(_app(server), server) as base:
        response = httpx.get(f"{base}/own-header", params={"label": "own"}, headers=IDS)
    assert response.headers.get_list("X-Trace-ID") == ["the-app-s-own"]


def test_the_first_root_trace_takes_the_id_and_a_background_task_gets_its_own() -> None:
    with serve(asgi_app(), "uvicorn") as base, httpx.Client(base_url=base, headers=IDS) as client:
        twice = client.get("/twice", params={"label": "twice"})
        background = client.get("/background", params={"label": "bg"})
        sync = client.get("/sync-chat", params={"label": "sync"})
    traces = traces_by_label()
    assert twice.headers["X-Trace-ID"] == traces["twice-first"]["trace_id"]
    assert traces["twice-second"]["trace_id"] != traces["twice-first"]["trace_id"]
    assert background.headers["X-Trace-ID"] == traces["bg"]["trace_id"]
    assert traces["bg-background"]["trace_id"] != traces["bg"]["trace_id"]
    assert traces["bg-background"]["user"] == "user-1"
    assert sync.headers["X-Trace-ID"] == traces["sync"]["trace_id"]  # a threadpool endpoint


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_with_trace_requests_the_header_names_the_request_trace(server: str) -> None:
    with serve(_app(server, trace_requests=True), server) as base:
        response = httpx.get(f"{base}/chat", params={"label": "req"}, headers=IDS)
    traces = traces_by_label()
    assert response.headers["X-Trace-ID"] == traces["req"]["trace_id"]
    assert traces["req"]["root"].startswith("GET /chat")


@pytest.mark.parametrize("server", ["hypercorn", "waitress"])
def test_concurrent_requests_each_get_their_own_trace(server: str) -> None:
    labels = [f"c{i}" for i in range(24)]
    with serve(_app(server), server) as base:

        def ask(label: str) -> tuple[str, str]:
            path = "/stream" if int(label[1:]) % 2 else "/chat"
            headers = {"X-User-ID": f"user-{label}"}
            r = httpx.get(f"{base}{path}", params={"label": label}, headers=headers)
            return label, r.headers["X-Trace-ID"]

        with ThreadPoolExecutor(8) as pool:
            answers = dict(pool.map(ask, labels))
    traces = traces_by_label()
    for label in labels:
        assert answers[label] == traces[label]["trace_id"]
        assert traces[label]["user"] == f"user-{label}"


def test_off_by_default_and_checked() -> None:
    with serve(asgi_app(middleware={"echo_trace_id": False}), "uvicorn") as base:
        response = httpx.get(f"{base}/chat", params={"label": "off"})
    assert "X-Trace-ID" not in response.headers
    with pytest.raises(TypeError, match="echo_trace_id"):
        sessiontrace.ASGIMiddleware(asgi_app(), echo_trace_id="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="echo_trace_id"):
        sessiontrace.WSGIMiddleware(wsgi_app(), echo_trace_id=1)  # type: ignore[arg-type]


def test_a_reservation_outside_requests_is_never_taken() -> None:
    # Traces started outside any request (a script, a worker) get ids of their own.
    with sessiontrace.user_session(user_id="u"):
        sessiontrace.trace(lambda: None)()
    assert sessiontrace.get_last_active_trace_id() is not None
