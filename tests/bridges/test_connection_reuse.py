"""A keep-alive connection whose first request has a body over 64 KiB: uvicorn starts
the next request in a copy of that request's context. No bridge may carry its ids on."""

from __future__ import annotations

import json
import socket

import pytest
from openinference.semconv.trace import SpanAttributes
from openlayer.lib.tracing.context import UserSessionContext
from opentelemetry.context import get_value
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sessiontrace
from middleware.servers import uvicorn_server
from middleware.test_connection_reuse import read_response
from sessiontrace import ASGIMiddleware

pytestmark = pytest.mark.slow

BODY = b"x" * 100_000


async def seen(req: Request) -> Response:
    await req.body()
    return JSONResponse(
        {
            "ours": list(sessiontrace.get_user_session_context()),
            "openlayer": [UserSessionContext.get_user_id(), UserSessionContext.get_session_id()],
            "openinference": [
                get_value(SpanAttributes.USER_ID),
                get_value(SpanAttributes.SESSION_ID),
            ],
        }
    )


def _request(headers: dict[str, str], body: bytes, path: str = "/") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_after_a_big_body_the_next_requests_start_clean(http: str, pipelined: bool) -> None:
    app = ASGIMiddleware(
        Starlette(
            routes=[Route("/", seen, methods=["POST"]), Route("/healthz", seen, methods=["POST"])]
        ),
        bridges=["openlayer", "openinference"],
        exclude_paths=["/healthz"],
    )
    ids = {"X-User-ID": "big-user", "X-Session-ID": "big-sess"}
    other = {"X-User-ID": "other-user", "X-Session-ID": "other-sess"}
    requests = [_request(ids, BODY)]
    requests.append(_request(ids, b"{}", "/healthz"))  # excluded: no ids, none carried on
    requests += [_request(h, b"{}") for h in ({}, other, {})]
    with uvicorn_server(app, http=http) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            stream = sock.makefile("rb")
            answers = []
            if pipelined:
                sock.sendall(b"".join(requests))
                answers = [read_response(stream) for _ in requests]
            else:
                for request in requests:
                    sock.sendall(request)
                    answers.append(read_response(stream))
            stream.close()
    first, *then = (json.loads(body) for _, body in answers)
    assert first == {k: ["big-user", "big-sess"] for k in ("ours", "openlayer", "openinference")}
    expected = [[None, None], [None, None], ["other-user", "other-sess"], [None, None]]
    for bridge in ("ours", "openlayer", "openinference"):
        assert [r[bridge] for r in then] == expected, bridge
