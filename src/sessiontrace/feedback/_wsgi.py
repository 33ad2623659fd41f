"""The feedback endpoint as a WSGI app: mount it under the middleware."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .._context import get_user_session_context
from .._runtime import count_internal_error
from ..middleware._config import REQUEST_KEY
from ._core import (
    FeedbackOptions,
    Handler,
    Reply,
    error,
    parse_post,
    parse_query,
    precheck,
    reason,
    too_large,
    warn_unmounted,
)

__all__ = ["FeedbackWSGIApp", "feedback_wsgi_app"]

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]

logger = logging.getLogger("sessiontrace.feedback")

_CHUNK = 64 * 1024


class FeedbackWSGIApp:
    """See :func:`feedback_wsgi_app`."""

    def __init__(self, options: FeedbackOptions) -> None:
        self.options = options
        self.handler = Handler(options)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self._answer(environ)
        except Exception as exc:  # never the host app's failure
            count_internal_error("feedback_endpoint")
            logger.warning("sessiontrace: the feedback endpoint failed (%s)", type(exc).__name__)
            reply = error(500, "internal_error", "the feedback could not be handled")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(reply.body))),
            ("Cache-Control", "no-store"),
            *reply.headers,
        ]
        start_response(f"{reply.status} {reason(reply.status)}", headers)
        return [reply.body]

    def _answer(self, environ: Environ) -> Reply:
        options = self.options
        method = environ.get("REQUEST_METHOD", "GET")
        length = environ.get("CONTENT_LENGTH") or None
        terminated = bool(environ.get("wsgi.input_terminated"))
        refused = precheck(
            options,
            method,
            environ.get("PATH_INFO", ""),
            environ.get("CONTENT_TYPE") or None,
            length,
            terminated,
        )
        if refused is not None:
            return refused
        if REQUEST_KEY not in environ:
            warn_unmounted()
        user, session = get_user_session_context()
        if method == "POST":
            body = _read(environ["wsgi.input"], None if length is None else int(length), options)
            if body is None:
                return too_large(options)
            parsed = parse_post(options, body)
            if isinstance(parsed, Reply):
                return parsed
            return self.handler.post(parsed, user, session)
        # PEP 3333: the query string arrives as latin-1 text of the raw bytes.
        raw = environ.get("QUERY_STRING", "").encode("latin-1", "replace")
        query = parse_query(options, method, raw)
        if isinstance(query, Reply):
            return query
        answer = self.handler.get if method == "GET" else self.handler.delete
        return answer(query, user, session)


def _read(stream: Any, length: int | None, options: FeedbackOptions) -> bytes | None:
    """The body, at most ``max_body_bytes`` of it; ``None`` when there is more."""
    limit = options.max_body_bytes
    want = limit + 1 if length is None else length  # precheck: length <= limit
    parts: list[bytes] = []
    got = 0
    while got < want:
        chunk = stream.read(min(_CHUNK, want - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    if got > limit:
        return None
    return b"".join(parts)


def feedback_wsgi_app(**options: Any) -> FeedbackWSGIApp:
    """The WSGI twin of :func:`sessiontrace.feedback_app`, with the same options.

    Mount it inside an app wrapped by :class:`sessiontrace.WSGIMiddleware`:

    >>> from werkzeug.middleware.dispatcher import DispatcherMiddleware
    >>> flask_app.wsgi_app = sessiontrace.WSGIMiddleware(
    ...     DispatcherMiddleware(flask_app.wsgi_app,
    ...                          {"/feedback": sessiontrace.feedback_wsgi_app()}),
    ...     echo_trace_id=True)

    A body without ``Content-Length`` is read only when the server marks the input as
    terminated (``wsgi.input_terminated``, e.g. for chunked uploads); otherwise 411.
    """
    return FeedbackWSGIApp(FeedbackOptions(**options))
