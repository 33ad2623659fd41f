"""WSGI middleware: the request's ids live until the response iterable is done."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .._context import UserSession, _user_session
from .._runtime import count_internal_error
from .._tracing import LiveSpan, _current_span
from ..bridges import check_names, enable
from ..bridges._base import Bridge, enter_all, exit_all, registry
from ._config import (
    DEFAULT_ALLOWED_CHARS,
    REQUEST_KEY,
    TRACE_ID_HEADER,
    IdPolicy,
    RequestNode,
    outside_requests,
    reserve_trace_id,
    serving,
)
from ._trace import RequestTrace

__all__ = ["WSGIMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _environ_key(header: str | None) -> str | None:
    return None if header is None else "HTTP_" + header.upper().replace("-", "_")


class WSGIMiddleware:
    """Give every trace created while a request is served its user and session.

    The WSGI twin of :class:`ASGIMiddleware`, with the same options (``resolver``
    receives the WSGI ``environ``). The ids are set when the app is called and
    re-entered around every ``next()`` of the response iterable and around its
    ``close()``, so a streamed body (a Flask generator, ``stream_with_context``) and
    ``call_on_close`` callbacks see them too, whichever thread the server iterates
    from, and they are gone from the worker thread between requests.

    >>> flask_app.wsgi_app = sessiontrace.WSGIMiddleware(flask_app.wsgi_app)

    .. warning:: The ids are client input, kept for analytics. Anyone can send any
       ``X-User-ID``: never use them for authorization.

    WSGI servers join a repeated header with commas, so a repeated id header is
    seen (and rejected) as a comma-joined value. Wrapping the body means the
    server cannot use ``wsgi.file_wrapper``'s sendfile for it.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        user_header: str | None = "X-User-ID",
        session_header: str | None = "X-Session-ID",
        request_id_header: str | None = "X-Request-ID",
        resolver: Callable[[Environ], Any] | None = None,
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
            raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
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
        if policy.resolver_is_async:
            raise TypeError("a WSGI resolver must be a plain function, not async")
        self._policy = policy
        self._user_key = _environ_key(policy.user_header)
        self._session_key = _environ_key(policy.session_header)
        self._request_key = _environ_key(policy.request_id_header)
        self._echo_name = policy.session_header or "X-Session-ID"
        self._fast = policy.plain
        self._ok = re.compile(f"[{re.escape(allowed_chars)}]{{1,{policy.max_length}}}").fullmatch
        self._names = (
            policy.user_header or "",
            policy.session_header or "",
            policy.request_id_header or "",
        )
        self._excludes = policy.excludes
        self._trace = policy.trace_requests

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        parent = _user_session.get()
        # The fast path takes a clean context only (see ASGIMiddleware.__call__).
        if not self._fast or parent.parent is not None or _current_span.get() is not None:
            return self._general(environ, start_response)
        if self._excludes and self._policy.excluded(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        # Accepted as is when short and of allowed characters only (one regex each);
        # anything else goes through the full check, which logs why.
        ok = self._ok
        user = environ.get(self._user_key)  # type: ignore[arg-type]
        if user is not None and ok(user) is None:
            user = self._policy.check(user, self._names[0])[0]
        session = environ.get(self._session_key)  # type: ignore[arg-type]
        if session is not None and ok(session) is None:
            session = self._policy.check(session, self._names[1])[0]
        request_id = environ.get(self._request_key)  # type: ignore[arg-type]
        if request_id is not None and ok(request_id) is None:
            request_id = self._policy.check(request_id, self._names[2])[0]
        return self._serve(
            environ, start_response, RequestNode(user, session, parent, request_id), self._trace
        )

    def _general(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if serving(environ.get(REQUEST_KEY)):
            return self.app(environ, start_response)
        # As in ASGIMiddleware._general: never another request's ids or span, even when
        # the thread's context still holds them (an app that left a span open, a server
        # that runs requests in copied contexts).
        clear_span = _current_span.get() is not None
        parent = _user_session.get()
        base = outside_requests(parent)
        user_token = _user_session.set(base)
        span_token = _current_span.set(None)
        try:
            return self._resolve_and_serve(
                environ, start_response, clear_span, clear_span or base is not parent
            )
        finally:
            _current_span.reset(span_token)
            _user_session.reset(user_token)

    def _resolve_and_serve(
        self, environ: Environ, start_response: StartResponse, clear_span: bool, dirty: bool
    ) -> Iterable[bytes]:
        policy = self._policy
        if policy.excludes and policy.excluded(environ.get("PATH_INFO", "")):
            iterable = self.app(environ, start_response)
            # Untouched as before, unless the body must be kept from a dirty context.
            return _ScopedResponse(iterable, _user_session.get(), True) if dirty else iterable

        user = environ.get(self._user_key) if self._user_key else None
        session = environ.get(self._session_key) if self._session_key else None
        request_id = environ.get(self._request_key) if self._request_key else None
        answer = policy.call_resolver(environ) if policy.resolver is not None else None
        resolved = policy.finish(user, session, request_id, False, False, answer)
        if resolved.error is not None:
            body = f"Bad Request: {resolved.error}\n".encode()
            start_response(
                "400 Bad Request",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if resolved.echo_session and resolved.session_id is not None:
            start_response = _echo(start_response, self._echo_name, resolved.session_id)

        reserved = None
        if policy.echo_trace_id:
            reserved = reserve_trace_id()
            start_response = _echo_trace_id(start_response, reserved[0])
        node = RequestNode(
            resolved.user_id,
            resolved.session_id,
            _user_session.get(),
            resolved.request_id,
            reserved,
        )
        return self._serve(environ, start_response, node, policy.trace_requests, clear_span)

    def _serve(
        self,
        environ: Environ,
        start_response: StartResponse,
        node: RequestNode,
        traced: bool,
        clear_span: bool = False,
    ) -> Iterable[bytes]:
        """Run the app with ``node`` as the request context; the body keeps it until closed.

        ``clear_span``: the server's context had a current span at entry, so the body is
        iterated without it too.
        """
        environ[REQUEST_KEY] = node
        token = _user_session.set(node)
        bridged = registry.scoped
        entered = enter_all(bridged, node.user_id, node.session_id) if bridged else None
        try:
            if traced:
                iterable = self._traced(environ, start_response, node)
            else:
                iterable = self.app(environ, start_response)
        finally:
            if entered:
                exit_all(entered)
            _user_session.reset(token)
        if type(iterable) is list or type(iterable) is tuple:
            return iterable  # already materialised: nothing runs while it is sent
        if not traced:
            iterable = _ScopedResponse(iterable, node, clear_span)
        chunked = registry.chunked if bridged else ()
        return _BridgedResponse(iterable, node, chunked) if chunked else iterable

    def _traced(
        self, environ: Environ, start_response: StartResponse, node: UserSession
    ) -> Iterable[bytes]:
        try:
            rt = RequestTrace(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                environ.get("wsgi.url_scheme", "http"),
                self._policy.max_body_bytes,
            )
        except Exception:  # tracing must never cost the request
            count_internal_error("middleware_request_trace")
            return _ScopedResponse(self.app(environ, start_response), node)

        def traced_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                rt.status = int(status.split(" ", 1)[0])
                for name, value in headers:
                    if name.lower() == "content-type":
                        rt.content_type = value.lower()
                rt.route = _flask_route(environ)
            except Exception:
                count_internal_error("middleware_request_trace")
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        span_token = _current_span.set(rt.span)
        try:
            iterable = self.app(environ, traced_start_response)
        except BaseException as exc:
            rt.finish(exc)
            raise
        finally:
            _current_span.reset(span_token)
        return _TracedResponse(iterable, node, rt)


_END: Any = object()


class _ScopedResponse:
    """The app's response iterable, run inside the request's context, chunk by chunk.

    With ``clear_span``, also without a current span (the server's context had one).
    Iterating gives a generator: its end costs no Python-level StopIteration.
    """

    __slots__ = ("_clear_span", "_iterable", "_node")

    def __init__(
        self, iterable: Iterable[bytes], node: UserSession, clear_span: bool = False
    ) -> None:
        self._iterable = iterable
        self._node = node
        self._clear_span = clear_span

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        node = self._node
        clear = self._clear_span
        token = _user_session.set(node)
        span_token = _current_span.set(None) if clear else None
        try:
            iterator = iter(self._iterable)
        finally:
            if span_token is not None:
                _current_span.reset(span_token)
            _user_session.reset(token)
        while True:
            token = _user_session.set(node)
            span_token = _current_span.set(None) if clear else None
            try:
                chunk = next(iterator, _END)
            finally:
                if span_token is not None:
                    _current_span.reset(span_token)
                _user_session.reset(token)
            if chunk is _END:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            token = _user_session.set(self._node)
            span_token = _current_span.set(None) if self._clear_span else None
            try:
                close()
            finally:
                if span_token is not None:
                    _current_span.reset(span_token)
                _user_session.reset(token)


class _BridgedResponse:
    """The body with the bridges entered around every chunk and ``close()``.

    It wraps ``_ScopedResponse``/``_TracedResponse``; the ids come from ``node``.
    """

    __slots__ = ("_bridges", "_iterable", "_node")

    def __init__(
        self, iterable: Iterable[bytes], node: UserSession, bridges: tuple[Bridge, ...]
    ) -> None:
        self._iterable = iterable
        self._node = node
        self._bridges = bridges

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        node, bridges = self._node, self._bridges
        entered = enter_all(bridges, node.user_id, node.session_id)
        try:
            iterator = iter(self._iterable)
        finally:
            exit_all(entered)
        while True:
            entered = enter_all(bridges, node.user_id, node.session_id)
            try:
                chunk = next(iterator, _END)
            finally:
                exit_all(entered)
            if chunk is _END:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            entered = enter_all(self._bridges, self._node.user_id, self._node.session_id)
            try:
                close()
            finally:
                exit_all(entered)


class _TracedResponse:
    """Like ``_ScopedResponse``, with the request span current and ended at the end."""

    __slots__ = ("_iterable", "_iterator", "_node", "_span", "_trace")

    def __init__(self, iterable: Iterable[bytes], node: UserSession, rt: RequestTrace) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._node = node
        self._trace = rt
        self._span: LiveSpan = rt.span

    def __iter__(self) -> _TracedResponse:
        return self

    def __next__(self) -> bytes:
        token = _user_session.set(self._node)
        span_token = _current_span.set(self._span)
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._iterable)
            chunk = next(iterator)
        except StopIteration:
            self._trace.finish(None)
            raise
        except BaseException as exc:
            self._trace.finish(exc)
            raise
        finally:
            _current_span.reset(span_token)
            _user_session.reset(token)
        self._trace.add_body(chunk)
        return chunk

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        rt = self._trace
        token = _user_session.set(self._node)
        span_token = _current_span.set(self._span)
        try:
            if close is not None:
                close()
        except BaseException as exc:
            rt.finish(exc)
            raise
        finally:
            _current_span.reset(span_token)
            _user_session.reset(token)
            # Closed before the end: the client went away or the server gave up.
            if not rt.done:
                rt.finish(None, disconnected=True)


def _echo(start_response: StartResponse, name: str, session_id: str) -> StartResponse:
    def start_response_with_session(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        headers = [*headers, (name, session_id)]
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return start_response_with_session


def _echo_trace_id(start_response: StartResponse, trace_id: str) -> StartResponse:
    wanted = TRACE_ID_HEADER.lower()

    def start_response_with_trace_id(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        # The app's own X-Trace-ID (a proxy's, a framework's) is left as it is.
        if not any(name.lower() == wanted for name, _ in headers):
            headers = [*headers, (TRACE_ID_HEADER, trace_id)]
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return start_response_with_trace_id


def _flask_route(environ: Environ) -> str | None:
    """The matched URL rule (``/chat/<id>``) while a werkzeug/Flask request is bound."""
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    route = getattr(rule, "rule", None)
    return route if isinstance(route, str) else None
