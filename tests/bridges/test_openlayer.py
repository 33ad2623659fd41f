"""The Openlayer bridge: Openlayer's real tracer reads the user and session at the end
of a trace's root step, here in the last chunk of a streamed body, on real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, request
from openlayer.lib.tracing import context as ol_context
from openlayer.lib.tracing import tracer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import sessiontrace.bridges
from middleware.servers import uvicorn_server, werkzeug_server
from sessiontrace import ASGIMiddleware, WSGIMiddleware

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What Openlayer would upload (its own post-processing), instead of uploading it."""
    rows: list[dict[str, Any]] = []

    def capture(trace: Any, *args: Any) -> None:
        row, _ = tracer.post_process_trace(trace)
        rows.append(row)

    monkeypatch.setattr(tracer, "_publish", True)
    monkeypatch.setitem(tracer._tracer_config, "background_publish_enabled", False)
    monkeypatch.setattr(tracer, "_upload_and_publish_trace", capture)
    return rows


@tracer.trace()
def answer(label: str) -> str:
    return label


def chunks(label: str) -> Iterator[str]:
    yield "a\n"
    yield "b\n"
    yield answer(label)  # a trace whose root step ends in the last chunk


def starlette_app() -> Starlette:
    async def endpoint(req: Request) -> Response:
        return PlainTextResponse(answer(req.query_params["label"]))

    async def stream(req: Request) -> Response:
        return StreamingResponse(chunks(req.query_params["label"]))

    return Starlette(routes=[Route("/endpoint", endpoint), Route("/stream", stream)])


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/endpoint")
    def endpoint() -> str:
        return answer(request.args["label"])

    @app.get("/stream")
    def stream() -> Any:
        return app.response_class(chunks(request.args["label"]), mimetype="text/plain")

    return app


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_streamed_and_plain_traces_get_the_ids(published: list[dict[str, Any]], kind: str) -> None:
    if kind == "asgi":
        server = uvicorn_server(ASGIMiddleware(starlette_app(), bridges=["openlayer"]))
    else:
        server = werkzeug_server(WSGIMiddleware(flask_app().wsgi_app, bridges=["openlayer"]))
    with server as base, httpx.Client() as client:
        for path in ("endpoint", "stream"):
            client.get(f"{base}/{path}", params={"label": f"{path}-id"}, headers=ID)
            client.get(f"{base}/{path}", params={"label": f"{path}-anon"})
    got = {row["output"]: (row.get("session_id"), row.get("user_id")) for row in published}
    assert got == {
        "endpoint-id": ("session-1", "user-1"),
        "endpoint-anon": (None, None),
        "stream-id": ("session-1", "user-1"),
        "stream-anon": (None, None),
    }


def test_an_outer_value_comes_back(published: list[dict[str, Any]]) -> None:
    sessiontrace.bridges.enable("openlayer")
    bridge = sessiontrace.bridges._base.registry.enabled["openlayer"]
    user_token = ol_context._user_id_context.set("outer-user")
    try:
        token = bridge.enter("inner-user", None)
        assert ol_context.UserSessionContext.get_user_id() == "inner-user"
        assert ol_context.UserSessionContext.get_session_id() is None
        bridge.exit(token)
        assert ol_context.UserSessionContext.get_user_id() == "outer-user"
    finally:
        ol_context._user_id_context.reset(user_token)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_concurrent_keep_alive_requests_never_mix(
    published: list[dict[str, Any]], kind: str
) -> None:
    import concurrent.futures

    if kind == "asgi":
        server = uvicorn_server(ASGIMiddleware(starlette_app(), bridges=["openlayer"]))
    else:
        server = werkzeug_server(WSGIMiddleware(flask_app().wsgi_app, bridges=["openlayer"]))

    def call(base: str, i: int) -> None:
        headers = {"X-User-ID": f"u{i}", "X-Session-ID": f"s{i}"} if i % 3 else {}
        with httpx.Client() as client:
            for j in range(3):
                client.get(f"{base}/stream", params={"label": f"{i}.{j}"}, headers=headers)

    with server as base, concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call(base, i), range(16)))
    assert len(published) == 48
    for row in published:
        i = int(row["output"].split(".")[0])
        expected = (f"s{i}", f"u{i}") if i % 3 else (None, None)
        assert (row.get("session_id"), row.get("user_id")) == expected, row["output"]
