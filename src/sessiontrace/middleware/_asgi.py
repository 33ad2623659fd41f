"""Pure ASGI middleware: each request's traces get the user and session from its headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .._context import _user_session
from .._runtime import count_internal_error, flush, settings
from .._tracing import _current_span
from ..bridges import check_names, enable
from ..bridges._base import enter_all, exit_all, registry
from ._config import (
    DEFAULT_ALLOWED_CHARS,
    REQUEST_KEY,
    TRACE_ID_HEADER,
    IdPolicy,
    RequestNode,
    Resolved,
    logger,
    outside_requests,
    reserve_trace_id,
    serving,
)
from ._trace import RequestTrace, route_of

__all__ = ["ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """Give every trace created while a request is served its user and session.

    Reads ``X-User-ID`` and ``X-Session-ID`` (and ``X-Request-ID`` into the
    traces' ``client_request_id``), sets them as the request's default for the
    whole request: the endpoint, its dependencies, a streamed body up to the last
    chunk, background tasks, sync endpoints in the thread pool and
    ``run_in_threadpool``. Both ids are set at entry (a value or ``None``) and
    restored in ``finally``, so nothing leaks into the next request. Lifespan and
    other scope types pass through with their messages untouched, except that
    queued traces are written before ``lifespan.shutdown.complete`` goes out
    (uvicorn ends the process by re-raising SIGTERM, so atexit would never run);
    websockets get the ids too.

    >>> app = FastAPI()
    >>> app.add_middleware(sessiontrace.ASGIMiddleware)
    >>> app.add_middleware(sessiontrace.ASGIMiddleware, trace_requests=True,
    ...                    exclude_paths=["/healthz"], user_id_hmac_key=SECRET)

    .. warning:: The ids are client input, kept for analytics. Anyone can send any
       ``X-User-ID``: never use them for authorization. To record the
       authenticated user instead, pass a ``resolver``.

    Options (keyword-only; checked here, a bad one raises ``ValueError`` or
    ``TypeError``):

    - ``user_header``, ``session_header``, ``request_id_header``: header names;
      ``None`` to ignore that header.
    - ``resolver``: ``resolver(scope) -> (user_id, session_id) | None``, sync or
      async, consulted before the headers: a non-``None`` id it returns wins,
      ``None`` falls back to the header. Its failures are logged, never raised.
    - ``max_length`` (250: the longest session id MLflow's OTLP ingest takes) and
      ``allowed_chars`` (letters, digits, ``-_.:@+=/~``): a value that is longer,
      has other characters, or comes several times (repeated header, or
      comma-joined) is invalid. Surrounding whitespace is
      stripped; an empty value counts as absent.
    - ``strict``: invalid values are dropped with a warning (default; the request
      continues anonymous) or, when ``True``, answered with ``400`` (websockets:
      closed with 1008). The raw value is never logged or echoed.
    - ``echo_session_id``: add the accepted session id to the response headers.
    - ``generate_session_id``: ``True`` or a ``() -> str`` callable; a request
      without a valid session id gets a new one, echoed in the response header so
      the client can send it back.
    - ``user_id_hmac_key``: store ``HMAC-SHA256(key, user_id)`` (``u-`` + 32 hex)
      instead of the user id: the same user still groups, the raw id is not kept.
    - ``exclude_paths``: paths served without any of this (``"/healthz"``;
      ``"/static/*"`` for a prefix).
    - ``echo_trace_id``: answer each HTTP request with an ``X-Trace-ID`` header naming
      the trace it produced, so a front end can post feedback on that turn
      (:func:`sessiontrace.feedback_app`). The id is reserved when the request comes
      in and taken by the first root trace the request starts, also when that trace
      starts inside a streamed body, after the headers went out; a background task or
      thread that starts another root later gets an id of its own. A request that
      starts no trace still gets the header (nothing is stored under that id).
      Browsers on another origin read it only when CORS exposes it
      (``Access-Control-Expose-Headers: X-Trace-ID``).
    - ``trace_requests``: make each HTTP request a trace root (method, route,
      status, duration, the response body up to ``max_body_bytes``), ending after
      the last body chunk or when the client disconnects; the app's traced
      functions become its children.
    - ``bridges``: other tracers whose traces get the ids too: ``"mlflow"``,
      ``"opentelemetry"``, ``"openinference"``, ``"openlayer"`` (see
      :mod:`sessiontrace.bridges`; enabled for the whole process).

    Mounted twice (e.g. on an app and on a sub-app), only the outer instance acts: it
    leaves its node in the scope under ``"sessiontrace.request"``, and an inner
    instance that finds it there passes the request on. Which request a context belongs
    to is never read from the context itself, since servers reuse contexts across a
    connection's requests (uvicorn does after a body over 64 KiB, and for pipelined
    requests); a request that finds an earlier request's ids or span in its context
    starts from neither.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_header: str | None = "X-User-ID",
        session_header: str | None = "X-Session-ID",
        request_id_header: str | None = "X-Request-ID",
        resolver: Callable[[Scope], Any] | None = None,
        max_length: int = 250,
        allowed_chars: str = DEFAULT_ALLOWED_CHARS,
        strict: bool = False,
        echo_session_id: bool = False,
        generate_session_id: bool | Callable[[], str] = False,
        user_id_hmac_key: bytes | str | None = None,
        exclude_paths: Iterable[str] = (),
        trace_requests: bool = False,
        max_body_bytes: int = 64 * 1024,
        echo_trace_id: bool = False,
        bridges: Iterable[str] = (),
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI callable, not {type(app).__name__}")
        self.app = app
        names = check_names(bridges)
        if names:
            enable(*names)
        policy = IdPolicy(
            user_header=user_header,
            session_header=session_header,
            request_id_header=request_id_header,
            resolver=resolver,
            max_length=max_length,
            allowed_chars=allowed_chars,
            strict=strict,
            echo_session_id=echo_session_id,
            generate_session_id=generate_session_id,
            user_id_hmac_key=user_id_hmac_key,
            exclude_paths=exclude_paths,
            trace_requests=trace_requests,
            max_body_bytes=max_body_bytes,
            echo_trace_id=echo_trace_id,
        )
        self._policy = policy
        # ASGI servers lower-case header names; one dict lookup per request header.
        wanted: dict[bytes, int] = {}
        for slot, name in enumerate(
            (policy.user_header, policy.session_header, policy.request_id_header)
        ):
            if name is not None:
                wanted.setdefault(name.lower().encode("latin-1"), slot)
        self._wanted = wanted
        self._max_length = policy.max_length
        self._valid = policy._valid
        # The common case (ids from headers, no option that needs more) takes a path
        # that allocates nothing per request beyond the ids and the context node.
        self._fast = policy.plain and policy.byte_table is not None
        self._hot = (
            wanted,
            policy.max_length,
            policy.byte_table or b"",
            policy.header_encoding,
            policy.excludes,
            policy.trace_requests,
        )
        self._names = (
            policy.user_header or "",
            policy.session_header or "",
            policy.request_id_header or "",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent = _user_session.get()
        # The fast path takes a clean context only: nothing set below the request (no
        # parent) and no current span. A context copied from an earlier request, one an
        # outer instance of ours set (see serving()) and every option that needs more
        # go the general way.
        if (
            not self._fast
            or parent.parent is not None
            or scope["type"] != "http"
            or _current_span.get() is not None
        ):
            await self._general(scope, receive, send)
            return
        wanted, maximum, table, encoding, excludes, trace = self._hot
        if excludes and self._policy.excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        # One pass over the headers, one dict lookup each; no allocation.
        user = session = request_id = None
        repeated = False
        for name, value in scope["headers"]:
            slot = wanted.get(name)
            if slot is None:
                continue
            if slot == 0:
                if user is not None:
                    repeated = True
                user = value
            elif slot == 1:
                if session is not None:
                    repeated = True
                session = value
            else:
                if request_id is not None:
                    repeated = True
                request_id = value
        # Accepted as is when, joined, they fit within one value's length cap and every
        # byte is allowed (a C-level translate through a 256-byte table); an empty
        # value is absent. Anything else (spaces, commas, long ids, repeated headers)
        # gets the full check, value by value, which logs why.
        joined = (user or b"") + (session or b"") + (request_id or b"")
        if (
            not repeated
            and len(joined) <= maximum
            and (not joined or joined.translate(table).isalpha())
        ):
            if user is not None:
                user = user.decode(encoding) or None
            if session is not None:
                session = session.decode(encoding) or None
            if request_id is not None:
                request_id = request_id.decode(encoding) or None
        else:
            user, session, request_id = self._checked(scope["headers"])
        node = RequestNode(user, session, parent, request_id)
        scope[REQUEST_KEY] = node
        token = _user_session.set(node)
        bridged = registry.scoped
        entered = enter_all(bridged, user, session) if bridged else None
        try:
            if trace:
                await self._traced(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            if entered:
                exit_all(entered)
            _user_session.reset(token)

    def _checked(self, headers: Any) -> tuple[str | None, str | None, str | None]:
        found, multi = self._scan(headers)
        policy = self._policy
        return (
            None if found[0] is None else policy.check(found[0], self._names[0], multi[0])[0],
            None if found[1] is None else policy.check(found[1], self._names[1], multi[1])[0],
            None if found[2] is None else policy.check(found[2], self._names[2], multi[2])[0],
        )

    def _scan(self, headers: Any) -> tuple[list[str | None], list[bool]]:
        found: list[str | None] = [None, None, None]
        multi = [False, False, False]
        wanted = self._wanted
        for name, value in headers:
            slot = wanted.get(name)
            if slot is not None:
                if found[slot] is not None:
                    multi[slot] = True
                found[slot] = value.decode("latin-1")
        return found, multi

    async def _general(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or serving(scope.get(REQUEST_KEY)):
            if kind == "lifespan":
                send = _flush_before_shutdown_complete(send)
            await self.app(scope, receive, send)
            return
        # Whatever the server's context holds (an earlier request's ids and span, when
        # it copied that request's context), this request starts from the value in
        # force outside every request and no current span: the resolver, an excluded
        # path and the app all see that, never another request's values.
        user_token = _user_session.set(outside_requests(_user_session.get()))
        span_token = _current_span.set(None)
        try:
            await self._serve(scope, receive, send, kind)
        finally:
            _current_span.reset(span_token)
            _user_session.reset(user_token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        policy = self._policy
        if policy.excludes and policy.excluded(scope["path"]):
            # As our own ids were (in _general), the bridges' are cleared: a reused
            # context may still hold an earlier request's.
            bridged = registry.scoped
            entered = enter_all(bridged, None, None) if bridged else None
            try:
                await self.app(scope, receive, send)
            finally:
                if entered:
                    exit_all(entered)
            return

        found, multi = self._scan(scope["headers"])

        resolved: Resolved | None = None
        if policy.plain:
            user, session, request_id = found
            # Websockets, or allowed characters beyond latin-1: a short value of
            # allowed characters passes; anything else gets the full check, which logs.
            maximum, valid = self._max_length, self._valid
            if user is not None and (multi[0] or len(user) > maximum or valid(user) is None):
                user = policy.check(user, policy.user_header or "", multi[0])[0]
            if session is not None and (
                multi[1] or len(session) > maximum or valid(session) is None
            ):
                session = policy.check(session, policy.session_header or "", multi[1])[0]
            if request_id is not None and (len(request_id) > maximum or valid(request_id) is None):
                request_id = policy.check(request_id, policy.request_id_header or "")[0]
        else:
            answer = None
            if policy.resolver is not None:
                answer = await self._resolve(scope)
            resolved = policy.finish(found[0], found[1], found[2], multi[0], multi[1], answer)
            if resolved.error is not None:
                await self._reject(kind, resolved.error, receive, send)
                return
            user, session, request_id = resolved.user_id, resolved.session_id, resolved.request_id
            if resolved.echo_session and session is not None:
                send = _echo(send, policy.echo_header, session)

        reserved = None
        if policy.echo_trace_id and kind == "http":
            reserved = reserve_trace_id()
            send = _echo_trace_id(send, reserved[0])
        node = RequestNode(user, session, _user_session.get(), request_id, reserved)
        scope[REQUEST_KEY] = node
        token = _user_session.set(node)
        bridged = registry.scoped
        entered = enter_all(bridged, user, session) if bridged else None
        try:
            if policy.trace_requests and kind == "http":
                await self._traced(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            if entered:
                exit_all(entered)
            _user_session.reset(token)

    async def _resolve(self, scope: Scope) -> Any:
        policy = self._policy
        answer = policy.call_resolver(scope)
        if policy.resolver_is_async and answer is not None:
            try:
                answer = await answer
            except Exception:
                logger.exception("sessiontrace: the id resolver failed; using the headers")
                count_internal_error("middleware_resolver")
                return None
        return answer

    async def _reject(self, kind: str, reason: str, receive: Receive, send: Send) -> None:
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        body = f"Bad Request: {reason}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            rt = RequestTrace(
                scope.get("method", "GET"),
                scope.get("path", ""),
                scope.get("scheme", "http"),
                self._policy.max_body_bytes,
            )
        except Exception:  # tracing must never cost the request
            count_internal_error("middleware_request_trace")
            await self.app(scope, receive, send)
            return

        async def traced_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                rt.add_body(message.get("body", b""))
                await send(message)
                if not message.get("more_body", False):
                    rt.route = route_of(scope)
                    rt.finish(None)
                return
            if kind == "http.response.start":
                rt.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        rt.content_type = value.decode("latin-1").lower()
            await send(message)

        async def traced_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not rt.done:
                rt.route = route_of(scope)
                rt.finish(None, disconnected=True)
            return message

        span_token = _current_span.set(rt.span)
        try:
            await self.app(scope, traced_receive, traced_send)
        except BaseException as exc:
            rt.route = route_of(scope)
            rt.finish(exc)
            raise
        finally:
            _current_span.reset(span_token)
        if not rt.done:
            rt.route = route_of(scope)
            rt.finish(None)


def _flush_before_shutdown_complete(send: Send) -> Send:
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the process dies by the
    # signal and atexit never runs: the traces still queued would be lost. The last
    # moment the app controls is its "shutdown complete" message.
    async def send_after_flush(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            try:
                flush(settings().shutdown_timeout)
            except Exception:
                count_internal_error("middleware_flush")
        await send(message)

    return send_after_flush


def _echo(send: Send, header_name: bytes, session_id: str) -> Send:
    try:
        header = (header_name, session_id.encode("latin-1"))
    except UnicodeEncodeError:  # not representable in a header: do not echo
        return send

    async def send_with_session(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" or kind == "websocket.accept":
            message = dict(message)
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return send_with_session


_TRACE_ID_NAME: bytes = TRACE_ID_HEADER.lower().encode("latin-1")


def _echo_trace_id(send: Send, trace_id: str) -> Send:
    header = (_TRACE_ID_NAME, trace_id.encode("latin-1"))

    async def send_with_trace_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            # The app's own X-Trace-ID (a proxy's, a framework's) is left as it is.
            if not any(name.lower() == _TRACE_ID_NAME for name, _ in headers):
                message = dict(message)
                message["headers"] = [*headers, header]
        await send(message)

    return send_with_trace_id
