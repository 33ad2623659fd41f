"""The Starlette application: pages, the JSON API behind them, and remote ingest.

Every page is the same small HTML shell plus ``app.js``, which reads the page's
data from the JSON API; ids travel in query strings (``/session?id=...``) so any
character is safe in them. Reads go through the package's search and analytics
functions on the process's configured store; ingest writes through a store of its
own, one batch at a time, and answers only once the batch is committed, so an
exporter that got a 2xx never needs to send it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _runtime
from .._analytics import (
    daily_activity,
    feedback_over_time,
    get_session_summary,
    list_sessions,
    list_users,
    metadata_breakdown,
    model_breakdown,
    session_flow,
    user_report,
)
from .._config import parse_tracking_uri, redact_uri
from .._entities import Trace
from .._pipeline import RetryableExportError
from .._search import FilterSyntaxError, search_traces
from .._serialize import dumps
from .._store import TraceNotFoundError, open_location
from .._store._base import Store
from .._store._rows import llm_totals
from ..llm._pricing import price_items
from ._body import BodyTooLarge, read_body
from ._ingest import IngestError, parse_batch
from ._otlp import otlp_traces_endpoint
from ._security import LOOPBACK_HOSTS, SESSION_COOKIE, Auth, SecurityMiddleware

logger = logging.getLogger("sessiontrace")

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).parent / "static"
PAGES = (
    "/",
    "/traces",
    "/trace",
    "/sessions",
    "/session",
    "/users",
    "/user",
    "/versions",
    "/models",
)
_MAX_RESULTS = 500


def _load_orjson() -> Callable[[Any], bytes] | None:
    try:
        import orjson
    except ImportError:
        return None
    encode, option = orjson.dumps, orjson.OPT_NON_STR_KEYS
    return lambda content: encode(content, option=option)


_orjson_dumps = _load_orjson()


class JSON(Response):
    media_type = "application/json"

    def __init__(
        self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(content, status_code, headers)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        # Starlette's version scans the headers for each default it may add; ours are known.
        raw = _json_headers(self.body)
        for name, value in (headers or {}).items():
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self.raw_headers = raw

    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


def _json_bytes(content: Any) -> bytes:
    # orjson straight to bytes when installed (the ``fast`` extra); anything it
    # refuses (a lone surrogate, an odd type) goes through the forgiving encoder.
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(content)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return dumps(content).encode("utf-8", "replace")


def _error(message: str, status: int, **extra: Any) -> JSON:
    return JSON({"error": message, **extra}, status_code=status)


class _Params:
    """A query string's parameters, as Starlette's ``QueryParams`` reads them
    (``parse_qsl`` with blank values kept; ``get`` gives the last value).

    The readers take this instead of a ``Request``: strings without escapes (the
    usual ``?id=session-42``) are split directly, about a tenth of ``parse_qsl``'s
    time; anything with ``%`` or ``+`` goes through ``parse_qsl``.
    """

    __slots__ = ("_lists",)

    def __init__(self, query_string: bytes) -> None:
        text = query_string.decode("latin-1")
        if "%" in text or "+" in text:
            pairs = parse_qsl(text, keep_blank_values=True)
        else:
            pairs = [p.partition("=")[::2] for p in text.split("&") if p]
        lists: dict[str, list[str]] = {}
        for name, value in pairs:
            lists.setdefault(name, []).append(value)
        self._lists = lists

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._lists.get(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._lists.get(name, ()))


class _BadRequest(Exception):
    """A reader's answer to bad parameters (400), or with ``status``, another 4xx."""

    def __init__(self, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _int_param(params: _Params, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _BadRequest(f"{name} must be between {lo} and {hi}")
    return value


def _required(params: _Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise _BadRequest(f"missing query parameter {name!r}")
    return value


def _filter(params: _Params) -> str | None:
    return params.get("filter") or None


def _order(params: _Params) -> list[str] | None:
    return [o for o in params.getlist("order_by") if o] or None


def _paging(params: _Params) -> dict[str, Any]:
    return {
        "max_results": _int_param(params, "max_results", 50, lo=1, hi=_MAX_RESULTS),
        "page_token": params.get("page_token") or None,
    }


_INLINE_BUDGET_SECONDS = 0.005
_PROGRESS_STEPS = 1000  # SQLite VM instructions between two looks at the clock


class _Reads:
    """Where the JSON API's readers run: on the event loop while they are quick.

    A reader first runs inline, on the loop thread's own read connection, with an
    SQLite progress handler that interrupts its SQL once the budget is spent; an
    interrupted reader starts again in the thread pool. The page lookups (a session,
    a user, the first page of sessions) take 0.1-2 ms and so skip the hop to a
    worker thread (0.25-1 ms, more than they cost); an aggregate over the whole
    store (the versions page, a filter no index serves) holds the loop for at most
    the budget, then runs beside it. Readers only read, so a second run is safe.
    """

    def __init__(self, store: Store, budget_seconds: float) -> None:
        self.store = store
        self.budget = budget_seconds

    async def run(self, fn: Callable[[_Params, Store], Any], params: _Params) -> Any:
        # No progress handler to stop a slow reader, and every query is a round trip
        # to the server: a reader of another store runs beside the loop (asked of the
        # dialect first, so that the loop thread opens no connection it never uses).
        conn = self.store.connection() if self.store.dialect.name == "sqlite" else None
        if not isinstance(conn, sqlite3.Connection):
            return await anyio.to_thread.run_sync(fn, params, self.store)
        deadline = time.perf_counter() + self.budget
        interrupted = False

        def over_budget() -> bool:
            nonlocal interrupted
            interrupted = time.perf_counter() > deadline
            return interrupted

        conn.set_progress_handler(over_budget, _PROGRESS_STEPS)
        try:
            return fn(params, self.store)
        except sqlite3.OperationalError:
            if not interrupted:
                raise
        finally:
            conn.set_progress_handler(None, 0)
        return await anyio.to_thread.run_sync(fn, params, self.store)


class _ReadDispatch:
    """GET requests for the JSON readers go straight to their endpoint.

    Starlette's router tries its routes in order, a regex match each (about 1 us a
    route), then wraps the endpoint in its exception layers; the readers' paths are
    exact, so one dict lookup finds them. It sits inside the security middleware and
    Starlette's server-error middleware, so both still apply. Every other request,
    HEAD included, goes on to the router.
    """

    def __init__(self, app: ASGIApp, readers: Mapping[str, _Reader]) -> None:
        self.app = app
        self.readers = dict(readers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            reader = self.readers.get(_route_path(scope))
            if reader is not None:
                status, body = await reader.answer(_Params(scope["query_string"]))
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": _json_headers(body),
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _json_headers(body: bytes | memoryview) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-length", b"%d" % len(body)),
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
    ]


def _route_path(scope: Scope) -> str:
    """The path below ``root_path``, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class _Reader:
    """A sync reader run inline while quick, else in the thread pool (``inline=False``
    for readers whose Python work can be large where their SQL is not: decoding a
    whole span tree), with the package's errors mapped to 4xx JSON."""

    def __init__(
        self, fn: Callable[[_Params, Store], Any], reads: _Reads, *, inline: bool = True
    ) -> None:
        self.fn = fn
        self.reads = reads
        self.inline = inline

    async def answer(self, params: _Params) -> tuple[int, bytes]:
        """The status and the JSON body."""
        try:
            if self.inline:
                result = await self.reads.run(self.fn, params)
            else:
                result = await anyio.to_thread.run_sync(self.fn, params, self.reads.store)
        except _BadRequest as exc:
            return exc.status, _json_bytes({"error": str(exc), **exc.extra})
        except FilterSyntaxError as exc:
            error = {"error": exc.message, "position": exc.position, "text": exc.text}
            return 400, _json_bytes(error)
        except TraceNotFoundError as exc:
            return 404, _json_bytes({"error": f"no trace {exc.args[0]!r}"})
        except ValueError as exc:  # a bad page token, order_by, ...
            return 400, _json_bytes({"error": str(exc)})
        return 200, _json_bytes(result)

    async def endpoint(self, request: Request) -> Response:
        """The same, as a Starlette route (HEAD requests, and the router's 405s)."""
        status, body = await self.answer(_Params(request.scope["query_string"]))
        return Response(body, status, media_type="application/json", headers=_NO_STORE)


# -- readers (inline or in the thread pool: SQLite connections are per thread) ------


def _trace_row(trace: Trace) -> dict[str, Any]:
    info = trace.info
    return {
        "trace_id": info.trace_id,
        "request_time": info.request_time,
        "execution_duration": info.execution_duration,
        "state": info.state,
        "name": info.name,
        "user_id": info.user_id,
        "session_id": info.session_id,
        "request_preview": info.request_preview,
        "response_preview": info.response_preview,
        "tags": info.tags,
        "metadata": info.trace_metadata,
        **llm_totals(info),
        "assessments": [a.to_dictionary() for a in info.assessments],
    }


def api_traces(params: _Params, store: Store) -> Any:
    traces = search_traces(
        filter_string=_filter(params),
        order_by=_order(params),
        return_type="list",
        include_spans=False,
        store=store,
        **_paging(params),
    )
    return {"traces": [_trace_row(t) for t in traces], "next_page_token": traces.next_page_token}


def api_trace(params: _Params, store: Store) -> Any:
    trace_id = _required(params, "id")
    trace = store.get_trace(trace_id)
    if trace is None:
        raise TraceNotFoundError(trace_id)
    answer = trace.to_dict()
    answer["info"].update(llm_totals(trace.info))  # for the page's header
    return answer


def api_sessions(params: _Params, store: Store) -> Any:
    page = list_sessions(_filter(params), _order(params), store=store, **_paging(params))
    return {"sessions": [s.to_dict() for s in page], "next_page_token": page.next_page_token}


def api_session(params: _Params, store: Store) -> Any:
    session_id = _required(params, "id")
    summary = get_session_summary(session_id, store=store)
    if summary is None:
        raise _BadRequest(f"no session {session_id!r}", status=404)
    # Records go to the encoder as they are: orjson writes dataclasses itself (their
    # fields are their to_dict() keys), with no dict per record built first.
    return {"summary": summary, "turns": session_flow(session_id, store=store)}


def api_users(params: _Params, store: Store) -> Any:
    page = list_users(_filter(params), _order(params), store=store, **_paging(params))
    return {"users": [u.to_dict() for u in page], "next_page_token": page.next_page_token}


def api_user(params: _Params, store: Store) -> Any:
    user_id = _required(params, "id")
    days = _int_param(params, "days", 7, lo=1, hi=3660)
    report = user_report(user_id, days=days, store=store)
    if report is None:
        raise _BadRequest(f"no user {user_id!r}", status=404)
    return report.to_dict()


def api_daily(params: _Params, store: Store) -> Any:
    days = _int_param(params, "days", 30, lo=1, hi=3660)
    until = int(time.time() * 1000)
    rows = daily_activity(_filter(params), days=days, now_ms=until, store=store)
    return {
        "days": days,
        "since_ms": until - days * 86_400_000,
        "until_ms": until,
        "daily": [r.to_dict() for r in rows],
    }


def api_feedback_daily(params: _Params, store: Store) -> Any:
    """Feedback per day: all of it, one user's (``user``), split by a metadata key's
    values (``metadata_key``), one name's (``name``), matching traces (``filter``)."""
    days = _int_param(params, "days", 30, lo=1, hi=3660)
    key, name = params.get("metadata_key") or None, params.get("name") or None
    until = int(time.time() * 1000)
    rows = feedback_over_time(
        _filter(params),
        user_id=params.get("user") or None,
        metadata_key=key,
        name=name,
        days=days,
        now_ms=until,
        store=store,
    )
    return {
        "days": days,
        "since_ms": until - days * 86_400_000,
        "until_ms": until,
        "key": key,
        "name": name,
        "rows": [r.to_dict() for r in rows],
    }


def api_versions(params: _Params, store: Store) -> Any:
    key = params.get("key") or "app_version"
    rows = metadata_breakdown(key, _filter(params), order_by=_order(params), store=store)
    return {"key": key, "rows": [r.to_dict() for r in rows]}


def api_models(params: _Params, store: Store) -> Any:
    rows = model_breakdown(_filter(params), order_by=_order(params), store=store)
    return {"models": [r.to_dict() for r in rows]}


# -- writers --------------------------------------------------------------------------


_TAG_FIELDS = frozenset({"trace_id", "key", "value"})


async def _json_body(request: Request, limit: int) -> Any:
    import json

    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except ValueError:
        raise _BadRequest("the body is not valid JSON") from None


def _tag_args(body: Any, *, with_value: bool) -> tuple[str, str, str | None]:
    if not isinstance(body, dict) or not set(body) <= _TAG_FIELDS:
        raise _BadRequest("expected an object with trace_id, key and value")
    trace_id, key, value = body.get("trace_id"), body.get("key"), body.get("value")
    if not isinstance(trace_id, str) or not trace_id:
        raise _BadRequest("trace_id must be a non-empty string")
    if not isinstance(key, str) or not key.strip() or len(key) > 1000:
        raise _BadRequest("key must be a non-empty string of at most 1000 characters")
    if with_value and (not isinstance(value, str) or len(value) > 8000):
        raise _BadRequest("value must be a string of at most 8000 characters")
    return trace_id, key, value if with_value else None


class _Writer:
    """The server's one writer: ingest batches and tag edits, one at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()

    def export(self, items: Sequence[Any]) -> None:
        with self.lock:
            # Spans that arrive without a cost (an exporter without prices, or an
            # older client) are priced here, with this server's prices.
            try:
                items = price_items(items)
            except Exception:  # unpriced is better than lost
                logger.debug("sessiontrace: pricing an ingest batch failed", exc_info=True)
            self.store.export(items)

    def set_tag(self, trace_id: str, key: str, value: str | None) -> None:
        with self.lock:
            if value is None:
                self.store.delete_tag(trace_id, key)
            else:
                self.store.set_tag(trace_id, key, value)


def create_app(
    *,
    db: str | os.PathLike[str] | None = None,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = tuple(LOOPBACK_HOSTS),
    max_body_bytes: int = 32 * 1024 * 1024,
    max_batch_items: int = 20_000,
) -> Starlette:
    """The sessiontrace web UI, JSON API and ingest endpoint as an ASGI app.

    ``db`` is the store to serve: a SQLite file (path or ``sqlite:///``) or a
    ``postgresql://`` URI; without it, the store of the process's tracking URI. With ``token`` every
    request needs the bearer token or a browser session opened by a one-time login
    link (``app.state.auth.new_login_code()``). ``allowed_hosts`` are the Host
    headers served (``None``: any, for a public bind behind a token). The app's
    shutdown (its lifespan) closes its stores; an app that mounts it runs that
    lifespan: ``Starlette(..., lifespan=lambda _: app.router.lifespan_context(app))``.

    >>> app = create_app(db="traces.db")   # then: uvicorn.run(app, port=5000)
    >>> app = create_app(db="postgresql://viewer@db.internal/traces")
    """
    if max_body_bytes <= 0 or max_batch_items <= 0:
        raise ValueError("max_body_bytes and max_batch_items must be positive")
    if db is None:
        location = parse_tracking_uri(_runtime.settings().tracking_uri)
    elif isinstance(db, str) and "://" in db:
        location = parse_tracking_uri(db)
    else:
        location = parse_tracking_uri(str(Path(db).expanduser().resolve()))
    # Reads: one connection per thread (the loop's, the pool's). The writer has a
    # store of its own, so ingest never waits behind a reader's connection.
    store = open_location(location)  # ValueError for an http(s) URI: not a store
    reads = _Reads(store, _INLINE_BUDGET_SECONDS)
    writer = _Writer(open_location(location))
    auth = Auth(token)
    shell = (STATIC_DIR / "index.html").read_bytes()

    async def page(request: Request) -> Response:
        return Response(shell, media_type="text/html; charset=utf-8", headers=_NO_STORE)

    async def login(request: Request) -> Response:
        code = request.query_params.get("code", "")
        session = auth.redeem(code) if code else None
        if session is None:
            return Response(
                "This login link is unknown, expired or already used. "
                "Ask `sessiontrace ui` or POST /api/login-links for a new one.",
                status_code=403,
                media_type="text/plain",
            )
        response = RedirectResponse("/sessions", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def login_links(request: Request) -> Response:
        if not auth.check_bearer(request.headers.get("authorization")):
            return _error("login links are handed out for the bearer token only", 403)
        code = auth.new_login_code()
        return JSON({"url": str(request.url_for("login").include_query_params(code=code))})

    async def ingest(request: Request) -> Response:
        try:
            body = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _error(f"the body is larger than {max_body_bytes} bytes", 413)
        try:
            items = await anyio.to_thread.run_sync(
                lambda: parse_batch(body, max_items=max_batch_items)
            )
        except IngestError as exc:
            status = 413 if any(e["type"] == "too_long" for e in exc.errors) else 422
            return _error("invalid batch", status, details=exc.errors)
        if items:
            try:
                await anyio.to_thread.run_sync(writer.export, items)
            except RetryableExportError as exc:
                return JSON(
                    {"error": f"the store is busy, retry: {exc}"},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
        return JSON({"accepted": len(items)})

    async def edit_tag(request: Request) -> Response:
        try:
            body = await _json_body(request, 64 * 1024)
            trace_id, key, value = _tag_args(body, with_value=request.method == "PUT")
        except BodyTooLarge:
            return _error("the body is too large", 413)
        except _BadRequest as exc:
            return _error(str(exc), 400)
        try:
            await anyio.to_thread.run_sync(writer.set_tag, trace_id, key, value)
        except TraceNotFoundError:
            return _error(f"no trace {trace_id!r}", 404)
        return JSON({"trace_id": trace_id, "key": key, "value": value})

    async def info(request: Request) -> Response:
        from .._version import __version__

        return JSON(
            {"version": __version__, "db": redact_uri(location.path), "auth": auth.required}
        )

    readers = {
        "/api/traces": _Reader(api_traces, reads),
        "/api/trace": _Reader(api_trace, reads, inline=False),
        "/api/sessions": _Reader(api_sessions, reads),
        "/api/session": _Reader(api_session, reads),
        "/api/users": _Reader(api_users, reads),
        "/api/user": _Reader(api_user, reads),
        "/api/versions": _Reader(api_versions, reads),
        "/api/models": _Reader(api_models, reads),
        "/api/daily": _Reader(api_daily, reads),
        "/api/feedback/daily": _Reader(api_feedback_daily, reads),
    }
    # The readers are routes too (HEAD, and the router's 405 for other methods);
    # _ReadDispatch answers their GETs first.
    routes = [
        *(Route(path, reader.endpoint, methods=["GET"]) for path, reader in readers.items()),
        Route("/api/trace/tags", edit_tag, methods=["PUT", "DELETE"]),
        Route("/api/ingest", ingest, methods=["POST"]),
        # OTLP/HTTP from any OpenTelemetry SDK or Collector (server/_otlp.py)
        Route(
            "/v1/traces",
            otlp_traces_endpoint(writer, max_body_bytes=max_body_bytes),
            methods=["POST"],
        ),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/login-links", login_links, methods=["POST"]),
        *(Route(p, page, methods=["GET"]) for p in PAGES),
        Route("/login", login, methods=["GET"], name="login"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Shutdown: close the connections of both stores (every thread's readers).
        # An app mounted in another must have its lifespan run by the outer one.
        for opened in (store, writer.store):
            opened.close()  # on the loop thread: SQLite closes this thread's reader

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_ReadDispatch, readers=readers)  # added first: runs after security
    app.add_middleware(SecurityMiddleware, auth=auth, allowed_hosts=allowed_hosts)
    app.state.auth = auth
    app.state.store = store
    return app


_NO_STORE = {"cache-control": "no-store"}
