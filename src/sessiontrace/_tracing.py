"""Live spans and traces: the ``trace`` decorator, ``start_span`` and trace-level updates.

Hot-path notes (every traced call pays these): a span is one ``__slots__`` object;
the current span is one ContextVar; inputs and outputs are encoded to JSON once,
at capture; a finished trace becomes a ``TraceRecord`` (a few tuples) handed to the
background pipeline by a deque append. The live objects never leave this module.
Everything that touches disk happens on the writer thread.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import traceback
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextvars import ContextVar, Token
from random import getrandbits
from time import time_ns
from types import TracebackType
from typing import Any, Final, TypeVar, overload

from . import _runtime
from ._context import UNSET, _user_session
from ._entities import METADATA_SESSION, METADATA_USER, SpanStatus, TraceState
from ._records import SpanRecord, TagChange, TraceRecord
from ._serialize import dumps, loads

__all__ = [
    "LiveSpan",
    "LiveTrace",
    "delete_trace_tag",
    "get_current_active_span",
    "get_last_active_trace_id",
    "set_trace_tag",
    "start_span",
    "trace",
    "update_current_trace",
    "update_trace_user_session",
]

logger = logging.getLogger("sessiontrace")

F = TypeVar("F", bound=Callable[..., Any])

_MAX_TAG_VALUE = 8000
_MAX_METADATA_VALUE = 8000


_sequence = itertools.count()


def _new_trace_id() -> str:
    # MLflow's shape ("tr-" + 32 hex), ordered like a UUIDv7: 48 bits of milliseconds,
    # a 24-bit per-process sequence (so traces started in the same millisecond keep
    # their order), then 56 random bits. The store's indexes grow at one end.
    # ``int.to_bytes().hex()`` is twice as fast as formatting with ``:x`` (same text).
    value = (time_ns() // 1_000_000) << 80 | (next(_sequence) & 0xFFFFFF) << 56 | getrandbits(56)
    return "tr-" + value.to_bytes(16, "big").hex()


def _new_span_id() -> str:
    return getrandbits(64).to_bytes(8, "big").hex()


# Replaceable for tests (``sessiontrace.testing``) so rows can be asserted exactly.
ids: dict[str, Callable[[], str]] = {"trace": _new_trace_id, "span": _new_span_id}
clock: dict[str, Callable[[], int]] = {"ns": time_ns}


class LiveTrace:
    """A trace being recorded. When its root span ends it becomes a ``TraceRecord``."""

    __slots__ = (
        "__weakref__",
        "client_request_id",
        "done",
        "metadata",
        "request_preview",
        "response_preview",
        "spans",
        "start_ns",
        "state_override",
        "tags",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        start_ns: int,
        metadata: dict[str, str],
        client_request_id: str | None,
    ) -> None:
        self.trace_id = trace_id
        self.start_ns = start_ns
        self.metadata = metadata
        self.tags: dict[str, str] = {}
        self.spans: list[LiveSpan] = []  # the root (the span that opened it) first
        self.client_request_id = client_request_id
        self.request_preview: str | None = None
        self.response_preview: str | None = None
        self.state_override: str | None = None
        self.done = False

    @property
    def user_id(self) -> str | None:
        return self.metadata.get(METADATA_USER)

    @property
    def session_id(self) -> str | None:
        return self.metadata.get(METADATA_SESSION)

    def __repr__(self) -> str:
        return f"LiveTrace(trace_id={self.trace_id!r}, done={self.done!r})"


class LiveSpan:
    """A span being recorded; what ``start_span`` yields.

    Inputs, outputs and attribute values are encoded to JSON when set.
    """

    __slots__ = (
        "_attributes",
        "_events",
        "end_ns",
        "inputs_json",
        "name",
        "outputs_json",
        "parent_id",
        "span_id",
        "span_type",
        "start_ns",
        "status",
        "status_message",
        "trace",
    )

    def __init__(
        self,
        trace: LiveTrace,
        parent_id: str | None,
        name: str,
        span_type: str,
        attributes: dict[str, Any] | None,
        start_ns: int,
    ) -> None:
        self.trace = trace
        self.span_id = ids["span"]()
        self.parent_id = parent_id
        self.name = name
        self.span_type = span_type
        self.start_ns = start_ns
        self.end_ns: int | None = None
        self.status = SpanStatus.UNSET
        self.status_message = ""
        self.inputs_json: str | None = None
        self.outputs_json: str | None = None
        self._attributes: dict[str, Any] | None = dict(attributes) if attributes else None
        self._events: list[dict[str, Any]] | None = None

    # -- public API -----------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id

    @property
    def request_id(self) -> str:
        return self.trace.trace_id

    @property
    def inputs(self) -> Any:
        return loads(self.inputs_json)

    @property
    def outputs(self) -> Any:
        return loads(self.outputs_json)

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self._attributes or {})

    def set_inputs(self, inputs: Any) -> None:
        self.inputs_json = dumps(inputs)

    def set_outputs(self, outputs: Any) -> None:
        self.outputs_json = dumps(outputs)

    def set_attribute(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"attribute keys must be str, not {type(key).__name__}")
        attributes = self._attributes
        if attributes is None:
            self._attributes = {key: _jsonable(value)}
        elif self.end_ns is not None:
            # A record may hold this dict already: it is never changed, only replaced.
            self._attributes = {**attributes, key: _jsonable(value)}
        else:
            attributes[key] = _jsonable(value)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, status: str, message: str = "") -> None:
        status = str(status).upper()
        if status not in (SpanStatus.OK, SpanStatus.ERROR, SpanStatus.UNSET):
            raise ValueError(f"span status must be 'OK', 'ERROR' or 'UNSET', not {status!r}")
        self.status = status
        self.status_message = message

    def add_event(
        self, name: str, attributes: dict[str, Any] | None = None, timestamp_ns: int | None = None
    ) -> None:
        event = {
            "name": name,
            "timestamp_ns": clock["ns"]() if timestamp_ns is None else timestamp_ns,
            "attributes": {k: _jsonable(v) for k, v in (attributes or {}).items()},
        }
        events = self._events
        if events is None:
            self._events = [event]
        elif self.end_ns is not None:  # as in set_attribute: a record may hold the list
            self._events = [*events, event]
        else:
            events.append(event)

    def record_exception(self, exc: BaseException) -> None:
        self.add_event(
            "exception",
            {
                "exception.type": type(exc).__qualname__,
                "exception.message": _safe_str(exc),
                "exception.stacktrace": "".join(
                    traceback.format_exception(type(exc), exc, exc.__traceback__)
                )[-20_000:],
            },
        )

    def __repr__(self) -> str:
        return f"LiveSpan(name={self.name!r}, span_id={self.span_id!r}, trace_id={self.trace_id!r})"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return loads(dumps(value))


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break the app
        return f"<unprintable {type(value).__name__}>"


_current_span: ContextVar[LiveSpan | None] = ContextVar("sessiontrace_span", default=None)
_live_traces: dict[str, LiveTrace] = {}
_last = _runtime.last_trace
_thread_last = _runtime.thread_last_trace


# -- opening and closing spans -------------------------------------------------------


def _open_span(
    name: str, span_type: str, attributes: dict[str, Any] | None, parent: LiveSpan | None
) -> LiveSpan:
    now = clock["ns"]()
    if parent is None:
        us = _user_session.get()
        metadata = _runtime.base_metadata().copy()
        if us.user_id is not None:
            metadata[METADATA_USER] = us.user_id
        if us.session_id is not None:
            metadata[METADATA_SESSION] = us.session_id
        reserved = us.reserved_trace_id
        if reserved:  # the id the middleware announced (echo_trace_id): taken once
            try:
                trace_id = reserved.pop()
            except IndexError:  # another thread took it first
                trace_id = ids["trace"]()
        else:
            trace_id = ids["trace"]()
        trace = LiveTrace(trace_id, now, metadata, us.request_id)
        span = LiveSpan(trace, None, name, span_type, attributes, now)
        _live_traces[trace.trace_id] = trace
    else:
        trace = parent.trace
        span = LiveSpan(trace, parent.span_id, name, span_type, attributes, now)
    trace.spans.append(span)
    return span


def _close_span(span: LiveSpan, exc: BaseException | None) -> None:
    try:
        span.end_ns = clock["ns"]()
        if exc is not None:
            span.status = SpanStatus.ERROR
            span.status_message = f"{type(exc).__qualname__}: {_safe_str(exc)}"[:1000]
            span.record_exception(exc)
        elif span.status == SpanStatus.UNSET:
            span.status = SpanStatus.OK
        trace = span.trace
        if span.parent_id is None:  # the root: only the span that opened a trace has none
            _finish_trace(trace, span)
        elif trace.done:
            # A child that outlived its root (a thread or task still running when the
            # root returned): the store appends it to the trace it already has.
            _runtime.submit(_span_record(span))
    except Exception:  # tracing must never break the traced call
        _runtime.count_internal_error("close_span")


# Records are made without NamedTuple's Python-level __new__, which costs as much
# again as the tuple itself; every span of every trace pays this.
_tuple = tuple.__new__


def _span_record(s: LiveSpan) -> SpanRecord:
    return _tuple(
        SpanRecord,
        (
            s.trace.trace_id,
            s.span_id,
            s.parent_id,
            s.name,
            s.span_type,
            s.start_ns,
            s.end_ns,
            s.status,
            s.status_message,
            s.inputs_json,
            s.outputs_json,
            s._attributes,
            s._events,
        ),
    )


def _running_span_record(s: LiveSpan) -> SpanRecord:
    """A span still running when its trace ends: the record gets copies of what the
    span goes on changing in place (LLM calls fill their attributes before ending)."""
    record = _span_record(s)
    attributes, events = s._attributes, s._events
    return record._replace(
        attributes=None if attributes is None else dict(attributes),
        events=None if events is None else list(events),
    )


def _finish_trace(trace: LiveTrace, root: LiveSpan) -> None:
    tid = trace.trace_id
    trace.done = True
    _live_traces.pop(tid, None)
    _last["trace_id"] = tid
    _thread_last.trace_id = tid
    spans = tuple(
        [_span_record(s) if s.end_ns is not None else _running_span_record(s) for s in trace.spans]
    )
    state = trace.state_override
    if state is None:
        state = TraceState.ERROR if root.status == SpanStatus.ERROR else TraceState.OK
    record = _tuple(
        TraceRecord,
        (
            tid,
            trace.start_ns,
            root.end_ns,
            state,
            spans[0],  # the root opened the trace: always its first span
            spans,
            trace.metadata,  # no longer changed once done (update_current_trace checks)
            trace.tags,  # tags of a done trace change through TagChange records
            trace.request_preview,
            trace.response_preview,
            trace.client_request_id,
        ),
    )
    # Break the trace <-> span cycle so that reference counting frees the live
    # objects at once, not the cyclic GC the app would pay for.
    trace.spans = []
    _runtime.submit(record)


class _SpanScope:
    """``with``/``async with`` scope for ``start_span``."""

    __slots__ = ("_attributes", "_name", "_span", "_span_type", "_token")

    def __init__(self, name: str, span_type: str, attributes: dict[str, Any] | None) -> None:
        self._name = name
        self._span_type = span_type
        self._attributes = attributes
        self._span: LiveSpan | None = None
        self._token: Token[LiveSpan | None] | None = None

    def __enter__(self) -> LiveSpan:
        span = _open_span(self._name, self._span_type, self._attributes, _current_span.get())
        self._span = span
        self._token = _current_span.set(span)
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, token = self._span, self._token
        if span is None or token is None:
            return
        self._span = self._token = None
        # ValueError: exited in another context than it was entered (e.g. a generator
        # closed from elsewhere). The span still ends; the context is not ours to fix.
        with contextlib.suppress(ValueError):
            _current_span.reset(token)
        _close_span(span, exc)

    async def __aenter__(self) -> LiveSpan:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def start_span(
    name: str = "span",
    *,
    span_type: str = "UNKNOWN",
    attributes: dict[str, Any] | None = None,
) -> _SpanScope:
    """Open a span for a ``with`` (or ``async with``) block; a root span starts a trace.

    >>> with sessiontrace.start_span("retrieve", span_type="RETRIEVER") as span:
    ...     span.set_inputs({"query": q})
    ...     docs = search(q)
    ...     span.set_outputs(docs)
    """
    if not isinstance(name, str):
        raise TypeError(f"span name must be a str, not {type(name).__name__}")
    return _SpanScope(name, str(span_type), attributes)


# -- the decorator --------------------------------------------------------------------


class _InputCapture:
    """Turns a call's arguments into the inputs dict, without ``inspect.bind`` when possible."""

    __slots__ = ("_defaults", "_exact", "_fast", "_names", "_sig", "_skip_first")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        self._sig = sig
        params = list(sig.parameters.values()) if sig is not None else []
        self._skip_first = (
            bool(params)
            and params[0].name in ("self", "cls")
            and ("." in getattr(fn, "__qualname__", ""))
        )
        kinds = {p.kind for p in params}
        self._fast = sig is not None and kinds <= {
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        }
        self._names = tuple(p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY)
        self._defaults = tuple(
            (p.name, p.default) for p in params if p.default is not inspect.Parameter.empty
        )
        # The common call (every parameter passed by position, no keyword-only ones,
        # not a method) needs neither defaults nor a signature: one dict(zip()).
        plain = self._fast and not self._skip_first and len(self._names) == len(params)
        self._exact = len(self._names) if plain else -1

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) == self._exact:
            # Lengths are equal here; a ``strict=`` keyword would cost 0.3 µs a call.
            return dict(zip(self._names, args))  # noqa: B905
        try:
            return self._capture(args, kwargs)
        except Exception:  # e.g. an argument whose __eq__/__hash__ misbehaves
            _runtime.count_internal_error("capture_inputs")
            return {"args": list(args), "kwargs": dict(kwargs)}

    def _capture(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._fast and len(args) <= len(self._names):
            inputs = dict(zip(self._names, args, strict=False))
            if kwargs:
                inputs.update(kwargs)
            for name, default in self._defaults:
                if name not in inputs:
                    inputs[name] = default
        elif self._sig is not None:
            try:
                bound = self._sig.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
            bound.apply_defaults()
            inputs = dict(bound.arguments)
        else:
            return {"args": list(args), "kwargs": kwargs}
        if self._skip_first and self._names:
            inputs.pop(self._names[0], None)
        return inputs


def _default_reducer(chunks: list[Any]) -> Any:
    """Streamed output: text chunks are joined, anything else is kept as the list."""
    if chunks and all(isinstance(c, str) for c in chunks):
        return "".join(chunks)
    return chunks


@overload
def trace(func: F, /) -> F: ...


@overload
def trace(
    func: None = None,
    /,
    *,
    name: str | None = None,
    span_type: str = "UNKNOWN",
    attributes: dict[str, Any] | None = None,
    output_reducer: Callable[[list[Any]], Any] | None = None,
) -> Callable[[F], F]: ...


def trace(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    span_type: str = "UNKNOWN",
    attributes: dict[str, Any] | None = None,
    output_reducer: Callable[[list[Any]], Any] | None = None,
) -> F | Callable[[F], F]:
    """Record each call of the function as a span; a call with no active span starts a trace.

    Works on functions, methods, coroutines, generators and async generators (a
    streamed call ends when the stream is exhausted or closed; its output is the
    chunks, joined when they are all text, or ``output_reducer(chunks)``). The
    function's exceptions are recorded and re-raised unchanged.

    >>> @sessiontrace.trace
    ... def chat(message: str) -> str: ...
    >>> @sessiontrace.trace(name="retrieve", span_type="RETRIEVER")
    ... async def retrieve(query: str) -> list[str]: ...
    """

    def decorate(fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)):
            return type(fn)(decorate(fn.__func__))  # type: ignore[arg-type]
        if not callable(fn):
            raise TypeError(f"@trace needs a callable, not {type(fn).__name__}")
        wrapped = _wrap(
            fn,
            name or str(getattr(fn, "__name__", "span")),
            str(span_type),
            attributes,
            output_reducer or _default_reducer,
        )
        return wrapped  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _wrap(
    fn: Callable[..., Any],
    span_name: str,
    span_type: str,
    attributes: dict[str, Any] | None,
    reducer: Callable[[list[Any]], Any],
) -> Callable[..., Any]:
    capture = _InputCapture(fn)
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_gen(fn, capture, span_name, span_type, attributes, reducer)
    if inspect.isgeneratorfunction(fn):
        return _wrap_gen(fn, capture, span_name, span_type, attributes, reducer)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                span = _open_span(span_name, span_type, attributes, _current_span.get())
            except Exception:  # tracing broke, not the app: run the call untraced
                _runtime.count_internal_error("open_span")
                return await fn(*args, **kwargs)
            span.inputs_json = dumps(capture(args, kwargs))
            token = _current_span.set(span)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _current_span.reset(token)
                _close_span(span, exc)
                raise
            _current_span.reset(token)
            span.outputs_json = dumps(result)
            _close_span(span, None)
            return result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            span = _open_span(span_name, span_type, attributes, _current_span.get())
        except Exception:  # tracing broke, not the app: run the call untraced
            _runtime.count_internal_error("open_span")
            return fn(*args, **kwargs)
        span.inputs_json = dumps(capture(args, kwargs))
        token = _current_span.set(span)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _current_span.reset(token)
            _close_span(span, exc)
            raise
        _current_span.reset(token)
        span.outputs_json = dumps(result)
        _close_span(span, None)
        return result

    return wrapper


def _wrap_gen(
    fn: Callable[..., Generator[Any, Any, Any]],
    capture: _InputCapture,
    span_name: str,
    span_type: str,
    attributes: dict[str, Any] | None,
    reducer: Callable[[list[Any]], Any],
) -> Callable[..., Iterator[Any]]:
    # The parent span and the user/session default are those of the *call*; the span
    # itself opens at the first ``next()``, so a generator that is never iterated
    # leaves nothing open. The span is current only while the body runs, not while
    # the consumer handles a chunk.
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        parent = _current_span.get()
        us = _user_session.get()
        return _traced_gen(
            fn(*args, **kwargs),
            parent,
            us,
            capture(args, kwargs),
            span_name,
            span_type,
            attributes,
            reducer,
        )

    return wrapper


def _traced_gen(
    gen: Generator[Any, Any, Any],
    parent: LiveSpan | None,
    us: Any,
    inputs: dict[str, Any],
    span_name: str,
    span_type: str,
    attributes: dict[str, Any] | None,
    reducer: Callable[[list[Any]], Any],
) -> Iterator[Any]:
    us_token = _user_session.set(us)
    try:
        span = _open_span(span_name, span_type, attributes, parent)
    except Exception:  # tracing broke, not the app: stream untraced
        _runtime.count_internal_error("open_span")
        yield from gen
        return None
    finally:
        _user_session.reset(us_token)
    span.inputs_json = dumps(inputs)
    chunks: list[Any] = []
    error: BaseException | None = None
    try:
        to_send: Any = None
        while True:
            token = _current_span.set(span)
            try:
                item = gen.send(to_send)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            finally:
                _current_span.reset(token)
            chunks.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as exc:  # thrown in by the consumer: pass it on
                token = _current_span.set(span)
                try:
                    item = gen.throw(exc)
                except StopIteration:
                    return None
                finally:
                    _current_span.reset(token)
                chunks.append(item)
                to_send = yield item
    except GeneratorExit:
        span.set_attribute("stream.closed_early", True)
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        span.outputs_json = dumps(_reduce(reducer, chunks))
        _close_span(span, error)


def _reduce(reducer: Callable[[list[Any]], Any], chunks: list[Any]) -> Any:
    try:
        return reducer(chunks)
    except Exception:  # a bad reducer must not break the stream
        _runtime.count_internal_error("output_reducer")
        return chunks


def _wrap_async_gen(
    fn: Callable[..., AsyncIterator[Any]],
    capture: _InputCapture,
    span_name: str,
    span_type: str,
    attributes: dict[str, Any] | None,
    reducer: Callable[[list[Any]], Any],
) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        parent = _current_span.get()
        us = _user_session.get()
        return _traced_async_gen(
            fn(*args, **kwargs),
            parent,
            us,
            capture(args, kwargs),
            span_name,
            span_type,
            attributes,
            reducer,
        )

    return wrapper


async def _traced_async_gen(
    agen: Any,
    parent: LiveSpan | None,
    us: Any,
    inputs: dict[str, Any],
    span_name: str,
    span_type: str,
    attributes: dict[str, Any] | None,
    reducer: Callable[[list[Any]], Any],
) -> AsyncIterator[Any]:
    us_token = _user_session.set(us)
    try:
        span: LiveSpan | None = _open_span(span_name, span_type, attributes, parent)
    except Exception:  # tracing broke, not the app: stream untraced
        _runtime.count_internal_error("open_span")
        span = None
    finally:
        _user_session.reset(us_token)
    if span is None:
        async for item in agen:
            yield item
        return
    span.inputs_json = dumps(inputs)
    chunks: list[Any] = []
    error: BaseException | None = None
    try:
        to_send: Any = None
        while True:
            token = _current_span.set(span)
            try:
                item = await agen.asend(to_send)
            except StopAsyncIteration:
                return
            finally:
                _current_span.reset(token)
            chunks.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                await agen.aclose()
                raise
            except BaseException as exc:
                token = _current_span.set(span)
                try:
                    item = await agen.athrow(exc)
                except StopAsyncIteration:
                    return
                finally:
                    _current_span.reset(token)
                chunks.append(item)
                to_send = yield item
    except GeneratorExit:
        span.set_attribute("stream.closed_early", True)
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        span.outputs_json = dumps(_reduce(reducer, chunks))
        _close_span(span, error)


# -- trace-level updates ---------------------------------------------------------------


def get_current_active_span() -> LiveSpan | None:
    """The span the caller is inside, or ``None``."""
    return _current_span.get()


def get_last_active_trace_id(thread_local: bool = False) -> str | None:
    """The id of the trace that finished last in this process (or in this thread)."""
    if thread_local:
        return getattr(_thread_last, "trace_id", None)
    return _last["trace_id"]


def _current_trace(caller: str) -> LiveTrace | None:
    span = _current_span.get()
    if span is None:
        warnings.warn(
            f"{caller}: no active trace; call it inside a @sessiontrace.trace function or "
            "a sessiontrace.start_span block. Nothing was updated.",
            stacklevel=3,
        )
        return None
    return span.trace


def _as_str(kind: str, key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    warnings.warn(
        f"{kind} {key!r} has a {type(value).__name__} value; it is stored as a string.",
        stacklevel=4,
    )
    return _safe_str(value)


def _check_mapping(kind: str, value: Any) -> dict[Any, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{kind} must be a dict, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{kind} keys must be non-empty strings, got {key!r}")
    return value


_STATES: Final = frozenset({TraceState.OK, TraceState.ERROR})


def update_current_trace(
    tags: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    client_request_id: str | None = None,
    request_preview: str | None = None,
    response_preview: str | None = None,
    state: str | None = None,
) -> None:
    """Add tags and metadata to the trace the caller is inside (MLflow semantics).

    Metadata (user, session, app version, ...) is fixed once the trace is logged;
    tags stay editable with :func:`set_trace_tag`. ``mlflow.trace.user`` and
    ``mlflow.trace.session`` in ``metadata`` override the request default for this
    trace only; a ``None`` metadata value removes the key from this trace. Non-string
    values are converted to strings with a warning. Outside a trace this warns and
    does nothing.

    >>> sessiontrace.update_current_trace(
    ...     metadata={"mlflow.trace.user": user_id, "mlflow.trace.session": session_id},
    ...     tags={"query_category": "chat"},
    ... )
    """
    if (
        type(metadata) is dict
        and tags is None
        and state is None
        and client_request_id is None
        and request_preview is None
        and response_preview is None
    ):
        # Fast path for the call every request makes: string metadata on a live trace.
        span = _current_span.get()
        if span is not None and not span.trace.done:
            for key, value in metadata.items():
                if (
                    type(key) is not str
                    or not key
                    or type(value) is not str
                    or len(value) > _MAX_METADATA_VALUE
                ):
                    break  # anything unusual takes the checked path below
            else:
                span.trace.metadata.update(metadata)
                return
    tags = _check_mapping("tags", tags)
    metadata = _check_mapping("metadata", metadata)
    if state is not None:
        state = str(state).upper()
        if state not in _STATES:
            raise ValueError(f"state must be 'OK' or 'ERROR', not {state!r}")
    live = _current_trace("update_current_trace")
    if live is None:
        return
    if metadata:
        if live.done:
            warnings.warn(
                f"trace {live.trace_id} is already logged; its metadata is immutable. "
                "Metadata was not updated (tags still are).",
                stacklevel=2,
            )
        else:
            md = live.metadata
            for key, value in metadata.items():
                if value is None:
                    md.pop(key, None)
                else:
                    md[key] = _as_str("metadata", key, value)[:_MAX_METADATA_VALUE]
    if tags:
        for key, value in tags.items():
            _set_tag(live, key, _as_str("tag", key, value))
    if live.done:
        return
    if client_request_id is not None:
        live.client_request_id = _as_str("client_request_id", "", client_request_id)
    if request_preview is not None:
        live.request_preview = _as_str("request_preview", "", request_preview)
    if response_preview is not None:
        live.response_preview = _as_str("response_preview", "", response_preview)
    if state is not None:
        live.state_override = state


def update_trace_user_session(user_id: str | None = UNSET, session_id: str | None = UNSET) -> None:
    """Override the user and/or session of the current trace only.

    An argument left out is unchanged; ``None`` removes the id from this trace.
    Sibling traces and the request default are not affected.

    >>> @sessiontrace.trace
    ... def process_request():
    ...     sessiontrace.update_trace_user_session(user_id="different_user_123")
    """
    for label, value in (("user_id", user_id), ("session_id", session_id)):
        if value is not UNSET and value is not None and not isinstance(value, str):
            raise TypeError(f"{label} must be a str or None, not {type(value).__name__}")
    live = _current_trace("update_trace_user_session")
    if live is None:
        return
    if live.done:
        warnings.warn(
            f"trace {live.trace_id} is already logged; its user and session are immutable.",
            stacklevel=2,
        )
        return
    md = live.metadata
    for key, value in ((METADATA_USER, user_id), (METADATA_SESSION, session_id)):
        if value is UNSET:
            continue
        if value is None:
            md.pop(key, None)
        else:
            md[key] = value


def _set_tag(live: LiveTrace, key: str, value: str) -> None:
    value = value[:_MAX_TAG_VALUE]
    if live.done:
        _runtime.submit(TagChange(live.trace_id, key, value))
    else:
        live.tags[key] = value


def set_trace_tag(trace_id: str, key: str, value: Any) -> None:
    """Set a tag on a trace, live or already logged. Tags stay editable; metadata does not.

    Raises ``TraceNotFoundError`` when no trace has that id in the local store. With an
    http(s) tracking URI the edit is queued behind the trace and sent to the server.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"tag keys must be non-empty strings, got {key!r}")
    value = _as_str("tag", key, value)[:_MAX_TAG_VALUE]
    live = _live_traces.get(trace_id)
    if live is not None and not live.done:
        live.tags[key] = value
        return
    if not _runtime.store_is_local():  # a remote server: send the edit after the trace
        _runtime.submit(TagChange(trace_id, key, value))
        return
    _runtime.flush(_runtime.settings().shutdown_timeout)
    _runtime.get_store().set_tag(trace_id, key, value)


def delete_trace_tag(trace_id: str, key: str) -> None:
    """Remove a tag from a trace, live or already logged.

    Raises ``TraceNotFoundError`` when no trace has that id.
    """
    live = _live_traces.get(trace_id)
    if live is not None and not live.done:
        live.tags.pop(key, None)
        return
    if not _runtime.store_is_local():
        _runtime.submit(TagChange(trace_id, key, None))
        return
    _runtime.flush(_runtime.settings().shutdown_timeout)
    _runtime.get_store().delete_tag(trace_id, key)
