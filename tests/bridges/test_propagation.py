"""Downstream propagation across two real servers: service A (uvicorn) calls service B
(werkzeug) with httpx or requests; B's middleware continues A's user and session."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sessiontrace
from middleware.servers import uvicorn_server, werkzeug_server
from sessiontrace import ASGIMiddleware, WSGIMiddleware
from sessiontrace.propagation import httpx_event_hooks, mount_requests, outgoing_headers

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


def service_b(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(sessiontrace.get_user_session_context()).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def service_a(b_url: str) -> Starlette:
    async def via_httpx(req: Request) -> Response:
        with httpx.Client(event_hooks=httpx_event_hooks(hosts=["127.0.0.1"])) as client:
            return JSONResponse(client.get(b_url).json())

    async def via_httpx_async(req: Request) -> Response:
        hooks = httpx_event_hooks(async_client=True)
        async with httpx.AsyncClient(event_hooks=hooks) as client:
            return JSONResponse((await client.get(b_url)).json())

    def via_requests(req: Request) -> Response:  # sync: Starlette runs it in a thread
        with mount_requests(requests.Session()) as session:
            return JSONResponse(session.get(b_url).json())

    async def off(req: Request) -> Response:
        with httpx.Client() as client:
            return JSONResponse(client.get(b_url).json())

    async def other_host(req: Request) -> Response:
        with httpx.Client(event_hooks=httpx_event_hooks(hosts=["billing.internal"])) as client:
            return JSONResponse(client.get(b_url).json())

    async def app_set(req: Request) -> Response:
        with httpx.Client(event_hooks=httpx_event_hooks()) as client:
            return JSONResponse(client.get(b_url, headers={"X-User-ID": "chosen"}).json())

    return Starlette(
        routes=[
            Route("/httpx", via_httpx),
            Route("/httpx-async", via_httpx_async),
            Route("/requests", via_requests),
            Route("/off", off),
            Route("/other-host", other_host),
            Route("/app-set", app_set),
        ]
    )


def test_two_services_share_the_user_and_session() -> None:
    seen = {}
    with (
        werkzeug_server(WSGIMiddleware(service_b)) as b,
        uvicorn_server(ASGIMiddleware(service_a(b))) as a,
        httpx.Client() as client,
    ):
        for path in ("httpx", "httpx-async", "requests", "off", "other-host", "app-set"):
            seen[path] = client.get(f"{a}/{path}", headers=ID).json()
            seen[f"{path}-anon"] = client.get(f"{a}/{path}").json()
    both = ["user-1", "session-1"]
    assert seen == {
        "httpx": both,
        "httpx-anon": [None, None],
        "httpx-async": both,
        "httpx-async-anon": [None, None],
        "requests": both,
        "requests-anon": [None, None],
        "off": [None, None],  # off by default
        "off-anon": [None, None],
        "other-host": [None, None],  # not a host the client forwards to
        "other-host-anon": [None, None],
        "app-set": ["chosen", "session-1"],  # a header the app set wins
        "app-set-anon": ["chosen", None],
    }


def test_outgoing_headers() -> None:
    assert outgoing_headers() == {}
    with sessiontrace.user_session("u", "s"):
        assert outgoing_headers() == {"X-User-ID": "u", "X-Session-ID": "s"}
        assert outgoing_headers(user_header="X-Who") == {"X-Who": "u", "X-Session-ID": "s"}
    with pytest.raises(TypeError, match="list of host names"):
        httpx_event_hooks(hosts="example.com")
