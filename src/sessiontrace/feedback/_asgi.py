"""The feedback endpoint as a raw ASGI app (no framework): mount it under the middleware."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, TypeVar

from .._context import get_user_session_context
from .._runtime import count_internal_error
from ..middleware._config import REQUEST_KEY
from ._core import (
    FeedbackOptions,
    Handler,
    Reply,
    Submission,
    error,
    parse_post,
    parse_query,
    precheck,
    too_large,
    warn_unmounted,
)

__all__ = ["FeedbackApp", "feedback_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

T = TypeVar("T")

logger = logging.getLogger("sessiontrace.feedback")


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking store call off the event loop (asyncio, or trio under hypercorn)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio (hypercorn -k trio), the other loop ASGI runs on
        trio: Any = importlib.import_module("trio")
        result: T = await trio.to_thread.run_sync(fn)
        return result
    return await loop.run_in_executor(None, fn)


def _route_path(scope: Scope) -> str:
    """The path below the mount point, whether the framework trims ``path`` or not."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class FeedbackApp:
    """See :func:`feedback_app`."""

    def __init__(self, options: FeedbackOptions) -> None:
        self.options = options
        self.handler = Handler(options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":  # served on its own: nothing to start or stop
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            reply = await self._answer(scope, receive)
        except Exception as exc:  # never the host app's failure
            count_internal_error("feedback_endpoint")
            logger.warning("sessiontrace: the feedback endpoint failed (%s)", type(exc).__name__)
            reply = error(500, "internal_error", "the feedback could not be handled")
        if reply is None:  # the client went away
            return
        await _send_reply(send, reply)

    async def _answer(self, scope: Scope, receive: Receive) -> Reply | None:
        options = self.options
        method: str = scope.get("method", "GET")
        content_type = content_length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        refused = precheck(options, method, _route_path(scope), content_type, content_length, True)
        if refused is not None:
            return refused
        if REQUEST_KEY not in scope:
            warn_unmounted()
        user, session = get_user_session_context()
        handler = self.handler
        if method == "POST":
            body = bytearray()
            limit = options.max_body_bytes
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                if len(body) > limit:
                    return too_large(options)
                if not message.get("more_body", False):
                    break
            parsed: Submission | Reply = parse_post(options, bytes(body))
            if isinstance(parsed, Reply):
                return parsed
            return await _in_thread(partial(handler.post, parsed, user, session))
        query = parse_query(options, method, scope.get("query_string", b""))
        if isinstance(query, Reply):
            return query
        answer = handler.get if method == "GET" else handler.delete
        return await _in_thread(partial(answer, query, user, session))


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(reply.body)).encode("latin-1")),
        (b"cache-control", b"no-store"),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def feedback_app(**options: Any) -> FeedbackApp:
    """An ASGI app that takes the app's users' feedback on the traces they produced.

    Mount it inside an app wrapped by :class:`sessiontrace.ASGIMiddleware` (usually
    with ``echo_trace_id=True``, so the front end learns each response's trace id):

    >>> app.add_middleware(sessiontrace.ASGIMiddleware, echo_trace_id=True)
    >>> app.mount("/feedback", sessiontrace.feedback_app())

    ``POST`` a JSON body ``{"trace_id": ..., "name": "thumbs_up", "value": false,
    "comment": "wrong answer"}`` (``comment`` and ``span_id`` optional): stored as a
    ``HUMAN`` :class:`~sessiontrace.Feedback` whose source id is the request's user,
    one value per user, name and trace (a second post replaces it). ``GET
    ?trace_id=...`` returns the requester's own values, ``DELETE
    ?trace_id=...&name=...`` retracts them. See :class:`sessiontrace.feedback._core.Handler`
    for who may post on which trace (401/403), and the README for every answer.

    Options (keyword-only; a bad one raises ``ValueError`` or ``TypeError``):

    - ``names``: name -> accepted values: ``bool``, ``int``, ``float``, ``str``,
      ``range(1, 6)`` (integers), ``(0.0, 1.0)`` (numbers in a range) or a set of
      strings; default ``{"thumbs_up": bool, "rating": range(1, 6)}``.
    - ``max_body_bytes`` (16 KiB), ``max_comment_length`` (2000 characters),
      ``max_value_length`` (200 characters, for ``str`` values).
    - ``require_user`` (``True``): without a user id the answer is 401; ``False``
      lets a requester with only a session id post (one value per session).
    - ``check_session`` (``True``): a trace recorded in a session takes feedback only
      from that session.
    - ``allow_unowned_traces`` (``False``): whether traces with neither user nor session
      take feedback from anyone.
    - ``flush_timeout`` (2 s): how long an unknown trace id waits for the queued
      traces to be written before the answer is 404.

    .. warning:: The 403 check is as strong as the ids: from the default headers
       anyone can claim any user. Give the middleware a ``resolver`` returning the
       signed-in user (and session), and ``user_header=None`` so that a client's
       header is never the fallback, and the check means something.
    """
    return FeedbackApp(FeedbackOptions(**options))
