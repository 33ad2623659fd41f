"""The engine behind the SDK patches: one span per model call, streams included.

A patched method opens its span before the request (as a child of the caller's span,
or as a new trace), and ends it when the answer is complete: at once for a plain
response, and for a stream when it is exhausted, closed, fails, or is dropped.

Hot path: per call one dict comprehension over the keyword arguments, one JSON
encoding of the inputs and one of the output (the span API's own costs), a few
attribute reads. Per stream chunk: a few attribute reads, its text appended to a
list; the output is built once, when the stream ends. Chunks are not kept: holding
the SDK's objects until the end made the garbage collector rescan them on every
collection the SDK's own allocations trigger, and cost more than the rest together.

Nothing here may break the host app: the SDK's exceptions pass through unchanged,
and a failure of ours is counted (``_runtime.count_internal_error``) and swallowed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Final, Protocol

from .. import _runtime
from .._serialize import dumps, loads
from .._tracing import LiveSpan, _close_span, _current_span, _open_span, clock

__all__ = ["CallSpec", "Patcher", "StreamRecorder", "wrap_stream"]

USAGE: Final = "mlflow.chat.tokenUsage"
MODEL: Final = "mlflow.llm.model"
PROVIDER: Final = "mlflow.llm.provider"
FORMAT: Final = "mlflow.message.format"
TOOLS: Final = "mlflow.chat.tools"
USAGE_MISSING: Final = "sessiontrace.llm.usage_missing"
TIME_TO_FIRST_CHUNK: Final = "sessiontrace.llm.time_to_first_chunk_ms"
STREAM_INCOMPLETE: Final = "sessiontrace.llm.stream_incomplete"
USAGE_REQUESTED: Final = "sessiontrace.llm.stream_usage_requested"

# Never stored: headers (keys, cookies, auth), query strings (Azure takes ``api-key``
# there), transport objects. The request body the model sees is what is kept.
_NOT_INPUTS: Final = frozenset(
    {"extra_headers", "extra_query", "timeout", "api_key", "http_client", "idempotency_key"}
)
_SENTINELS: Final = frozenset({"NotGiven", "Omit"})

# Our own patch calling another patched method (old SDKs' helpers): one span, not two.
_in_call: ContextVar[bool] = ContextVar("sessiontrace_llm_call", default=False)

_REC_KEY: Final = "_sessiontrace_llm_recorder"


def _error(where: str) -> None:
    _runtime.count_internal_error(f"llm.{where}")


class SdkState:
    """What one SDK's patch set shares: on/off, options, its stream and raw types."""

    __slots__ = (
        "active",
        "api_response_types",
        "async_stream_types",
        "legacy_response_types",
        "provider_of",
        "stream_types",
        "stream_usage",
    )

    def __init__(self, provider_of: Callable[[Any], str]) -> None:
        self.active = False
        self.stream_usage = True
        self.provider_of = provider_of
        self.stream_types: tuple[type, ...] = ()
        self.async_stream_types: tuple[type, ...] = ()
        self.legacy_response_types: tuple[type, ...] = ()
        self.api_response_types: tuple[type, ...] = ()


class Accumulator(Protocol):
    """Builds a stream's output from its chunks, one at a time."""

    def add(self, chunk: Any) -> bool:
        """Take one chunk; True when it is a usage-only chunk (``choices == []``)."""

    def result(self) -> tuple[Any, dict[str, int] | None, str | None]:
        """The output, the normalised usage and the model."""


Assemble = Callable[[], Accumulator]


class CallSpec:
    """How to record one patched method."""

    __slots__ = ("assemble", "fmt", "inject_usage", "name", "sdk", "span_type", "usage_of")

    def __init__(
        self,
        sdk: SdkState,
        name: str,
        span_type: str,
        fmt: str | None,
        usage_of: Callable[[Any], dict[str, int] | None],
        assemble: Assemble | None,
        inject_usage: bool = False,
    ) -> None:
        self.sdk = sdk
        self.name = name
        self.span_type = span_type
        self.fmt = fmt
        self.usage_of = usage_of
        self.assemble = assemble
        self.inject_usage = inject_usage


# -- opening ----------------------------------------------------------------------------


def _inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        k: v
        for k, v in kwargs.items()
        if k not in _NOT_INPUTS and type(v).__name__ not in _SENTINELS
    }
    if args:
        inputs["args"] = list(args)
    return inputs


def _unset(value: Any) -> bool:
    return value is None or type(value).__name__ in _SENTINELS


def _is_raw_stream_request(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    if not headers:
        return False
    try:
        return headers.get("X-Stainless-Raw-Response") == "stream"  # type: ignore[no-any-return]
    except Exception:
        return False


def _tool_definitions(tools: list[Any]) -> list[dict[str, Any]]:
    """MLflow's ``mlflow.chat.tools``: ``{"type": "function", "function": {...}}`` for
    OpenAI chat tools, Responses API tools and Anthropic tools alike."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if not isinstance(function, dict):  # Responses API and Anthropic: flat
            function = {"name": tool.get("name") or tool.get("type")}
            if tool.get("description"):
                function["description"] = tool["description"]
            parameters = tool.get("parameters", tool.get("input_schema"))
            if parameters is not None:
                function["parameters"] = parameters
        out.append({"type": "function", "function": function})
    return loads(dumps(out))  # type: ignore[no-any-return]


def _begin(
    spec: CallSpec, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[LiveSpan, dict[str, Any], bool]:
    """Open the span; returns it, the kwargs to call with, and whether usage was injected."""
    attrs: dict[str, Any] = {PROVIDER: spec.sdk.provider_of(getattr(resource, "_client", None))}
    if spec.fmt is not None:
        attrs[FORMAT] = spec.fmt
    model = kwargs.get("model")
    if type(model) is str:
        attrs[MODEL] = model
    tools = kwargs.get("tools")
    if tools and type(tools) is list:
        try:
            attrs[TOOLS] = _tool_definitions(tools)
        except Exception:
            _error("tools")
    injected = False
    if (
        spec.inject_usage
        and kwargs.get("stream") is True
        and spec.sdk.stream_usage
        and _unset(kwargs.get("stream_options"))
        and not _is_raw_stream_request(kwargs)
    ):
        kwargs = {**kwargs, "stream_options": {"include_usage": True}}
        injected = True
        attrs[USAGE_REQUESTED] = True
    span = _open_span(spec.name, spec.span_type, None, _current_span.get())
    span._attributes = attrs
    inputs = _inputs(args, kwargs)
    if injected:
        inputs.pop("stream_options", None)  # what the caller passed, not what we added
    span.inputs_json = dumps(inputs)
    return span, kwargs, injected


# -- finishing a plain response -----------------------------------------------------------


def _dump_output(obj: Any) -> str:
    dump_json = getattr(obj, "model_dump_json", None)
    if dump_json is not None:
        try:
            return str(dump_json(exclude_unset=True, warnings=False))
        except Exception:
            _error("dump_output")
    return dumps(obj)


def _record_usage(span: LiveSpan, usage: dict[str, int] | None, model: Any) -> None:
    attrs = span._attributes
    assert attrs is not None
    if type(model) is str and model:
        attrs[MODEL] = model
    if usage:
        attrs[USAGE] = usage
    else:
        attrs[USAGE_MISSING] = True


def _finish_object(spec: CallSpec, span: LiveSpan, obj: Any) -> None:
    try:
        _record_usage(span, spec.usage_of(getattr(obj, "usage", None)), getattr(obj, "model", None))
        span.outputs_json = _dump_output(obj)
    except Exception:
        _error("finish")
    _close_span(span, None)


# -- streams ------------------------------------------------------------------------------


class StreamRecorder:
    """What one stream said so far and the span it ends; ends the span exactly once."""

    __slots__ = ("acc", "ended", "first_ns", "hide_usage_chunk", "span", "spec")

    def __init__(self, spec: CallSpec, span: LiveSpan, hide_usage_chunk: bool) -> None:
        self.spec = spec
        self.span = span
        assert spec.assemble is not None
        self.acc = spec.assemble()
        self.first_ns = 0
        self.ended = False
        self.hide_usage_chunk = hide_usage_chunk

    def take(self, chunk: Any) -> bool:
        """Record one chunk; whether the caller gets it (not the usage chunk that was
        asked for on the caller's behalf: no choices, usage set)."""
        if not self.first_ns:
            self.first_ns = clock["ns"]()
        try:
            usage_only = self.acc.add(chunk)
        except Exception:  # an odd chunk: the caller still gets it
            _error("stream_chunk")
            return True
        return not (usage_only and self.hide_usage_chunk)

    def finish(self, exc: BaseException | None, incomplete: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        span = self.span
        try:
            attrs = span._attributes
            assert attrs is not None
            if self.first_ns:
                attrs[TIME_TO_FIRST_CHUNK] = round((self.first_ns - span.start_ns) / 1e6, 3)
            if incomplete:
                attrs[STREAM_INCOMPLETE] = True
            output, usage, model = self.acc.result()
            if exc is None or usage:
                _record_usage(span, usage, model)
            elif type(model) is str and model:
                attrs[MODEL] = model
            span.outputs_json = dumps(output)
        except Exception:
            _error("finish_stream")
        _close_span(span, exc)

    def __del__(self) -> None:
        # Dropped before it began, or collected with the stream: the span still ends.
        if not self.ended:
            with contextlib.suppress(Exception):  # interpreter shutdown
                self.finish(None, incomplete=True)


def _traced_iter(inner: Iterator[Any], rec: StreamRecorder) -> Iterator[Any]:
    take = rec.take
    try:
        for chunk in inner:
            if take(chunk):
                yield chunk
    except GeneratorExit:
        rec.finish(None, incomplete=True)
        raise
    except BaseException as exc:
        rec.finish(exc)
        raise
    rec.finish(None)


async def _traced_aiter(inner: AsyncIterator[Any], rec: StreamRecorder) -> AsyncIterator[Any]:
    take = rec.take
    try:
        async for chunk in inner:
            if take(chunk):
                yield chunk
    except GeneratorExit:
        rec.finish(None, incomplete=True)
        raise
    except BaseException as exc:
        rec.finish(exc)
        raise
    rec.finish(None)


def wrap_stream(stream: Any, rec: StreamRecorder, is_async: bool) -> None:
    """Record ``stream`` in place: the caller keeps the SDK's own object."""
    inner = stream._iterator
    stream._iterator = _traced_aiter(inner, rec) if is_async else _traced_iter(inner, rec)
    stream.__dict__[_REC_KEY] = rec  # for close(); the recorder never points back


def _patched_close(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def close(self: Any) -> Any:
        rec = self.__dict__.get(_REC_KEY)
        if rec is not None and not rec.ended:
            rec.finish(None, incomplete=True)
        return orig(self)

    return close


def _patched_aclose(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    async def close(self: Any) -> Any:
        rec = self.__dict__.get(_REC_KEY)
        if rec is not None and not rec.ended:
            rec.finish(None, incomplete=True)
        return await orig(self)

    return close


# -- results of every shape ------------------------------------------------------------------


def _handle_result(spec: CallSpec, span: LiveSpan, result: Any, injected: bool) -> Any:
    sdk = spec.sdk
    try:
        if isinstance(result, sdk.stream_types):
            wrap_stream(result, StreamRecorder(spec, span, injected), False)
        elif isinstance(result, sdk.async_stream_types):
            wrap_stream(result, StreamRecorder(spec, span, injected), True)
        elif isinstance(result, sdk.legacy_response_types):
            _handle_legacy_response(spec, span, result, injected)
        elif isinstance(result, sdk.api_response_types):
            _handle_api_response(spec, span, result, injected)
        else:
            _finish_object(spec, span, result)
    except Exception:
        _error("result")
        _close_span(span, None)
    return result


def _handle_legacy_response(spec: CallSpec, span: LiveSpan, raw: Any, injected: bool) -> None:
    # ``with_raw_response``: the body is read (or a stream not yet started); parse() is
    # cached by the SDK, so the caller's own parse() returns this very object.
    try:
        parsed = raw.parse()
    except Exception as exc:  # the caller's parse() will raise it again
        _close_span(span, exc)
        return
    sdk = spec.sdk
    if isinstance(parsed, sdk.stream_types):
        wrap_stream(parsed, StreamRecorder(spec, span, injected), False)
    elif isinstance(parsed, sdk.async_stream_types):
        wrap_stream(parsed, StreamRecorder(spec, span, injected), True)
    else:
        _finish_object(spec, span, parsed)


def _handle_api_response(spec: CallSpec, span: LiveSpan, raw: Any, injected: bool) -> None:
    # ``with_streaming_response``: nothing is read yet. The span ends when the caller
    # parses (plain or stream) or closes the response (the context manager does).
    rec = StreamRecorder(spec, span, injected)
    sdk = spec.sdk
    orig_parse = raw.parse
    orig_close = raw.close
    is_async = inspect.iscoroutinefunction(orig_parse)
    seen: list[Any] = []  # parse() is cached by the SDK: record its first result only

    def on_parsed(parsed: Any) -> None:
        if rec.ended or seen:
            return
        seen.append(parsed)
        try:
            if isinstance(parsed, sdk.stream_types):
                wrap_stream(parsed, rec, False)
            elif isinstance(parsed, sdk.async_stream_types):
                wrap_stream(parsed, rec, True)
            else:
                rec.ended = True
                _finish_object(spec, span, parsed)
        except Exception:
            _error("raw_parse")

    def on_close() -> None:
        if rec.ended:
            return
        if seen:  # a parsed stream, closed before its end
            rec.finish(None, incomplete=True)
            return
        rec.ended = True
        body = None
        try:
            if getattr(raw.http_response, "is_stream_consumed", False):
                body = loads(raw.http_response.text)
        except Exception:
            body = None
        if isinstance(body, dict):
            _finish_object(spec, span, _DictView(body))
        else:
            _record_usage(span, None, None)
            _close_span(span, None)

    if is_async:

        async def aparse(*args: Any, **kwargs: Any) -> Any:
            parsed = await orig_parse(*args, **kwargs)
            on_parsed(parsed)
            return parsed

        async def aclose() -> Any:
            on_close()
            return await orig_close()

        raw.parse, raw.close = aparse, aclose
    else:

        def parse(*args: Any, **kwargs: Any) -> Any:
            parsed = orig_parse(*args, **kwargs)
            on_parsed(parsed)
            return parsed

        def close() -> Any:
            on_close()
            return orig_close()

        raw.parse, raw.close = parse, close
    # Should the caller drop the response unclosed, the recorder still ends the span.
    raw.__dict__[_REC_KEY] = rec


class _DictView:
    """A JSON body read as attributes (``usage``, ``model``) for the usage readers."""

    __slots__ = ("_body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def __getattr__(self, name: str) -> Any:
        return self._body.get(name)

    def model_dump_json(self, **_: Any) -> str:
        return dumps(self._body)


# -- the wrappers ----------------------------------------------------------------------------


def sync_wrapper(orig: Callable[..., Any], spec: CallSpec) -> Callable[..., Any]:
    sdk = spec.sdk

    @functools.wraps(orig)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not sdk.active or _in_call.get():
            return orig(self, *args, **kwargs)
        try:
            span, call_kwargs, injected = _begin(spec, self, args, kwargs)
        except Exception:
            _error("open")
            return orig(self, *args, **kwargs)
        token = _in_call.set(True)
        try:
            result = orig(self, *args, **call_kwargs)
        except BaseException as exc:
            _in_call.reset(token)
            _close_span(span, exc)
            raise
        _in_call.reset(token)
        return _handle_result(spec, span, result, injected)

    wrapper.__sessiontrace_original__ = orig  # type: ignore[attr-defined]
    return wrapper


def async_wrapper(orig: Callable[..., Any], spec: CallSpec) -> Callable[..., Any]:
    sdk = spec.sdk

    @functools.wraps(orig)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not sdk.active or _in_call.get():
            return await orig(self, *args, **kwargs)
        try:
            span, call_kwargs, injected = _begin(spec, self, args, kwargs)
        except Exception:
            _error("open")
            return await orig(self, *args, **kwargs)
        token = _in_call.set(True)
        try:
            result = await orig(self, *args, **call_kwargs)
        except BaseException as exc:
            _in_call.reset(token)
            _close_span(span, exc)
            raise
        _in_call.reset(token)
        return _handle_result(spec, span, result, injected)

    wrapper.__sessiontrace_original__ = orig  # type: ignore[attr-defined]
    return wrapper


def begin_stream_call(spec: CallSpec, resource: Any, kwargs: dict[str, Any]) -> LiveSpan:
    """Open the span of a helper-managed stream (Anthropic's ``messages.stream()``)."""
    span, _, _ = _begin(spec, resource, (), kwargs)
    return span


# -- patching ------------------------------------------------------------------------------


class Patcher:
    """Class attributes replaced by autolog, and how to put the originals back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any, bool]] = []

    @property
    def patched(self) -> bool:
        return bool(self._saved)

    def replace(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        own = name in cls.__dict__
        current = cls.__dict__[name] if own else getattr(cls, name, None)
        if current is None or hasattr(current, "__sessiontrace_original__"):
            return  # missing in this SDK version, or already ours (an alias class)
        replacement = make(current)
        replacement.__sessiontrace_original__ = current
        setattr(cls, name, replacement)
        self._saved.append((cls, name, current, own))

    def method(self, cls: type, name: str, spec: CallSpec) -> None:
        def make(orig: Any) -> Any:
            # Some SDK versions wrap async methods in a plain function that returns
            # the coroutine (``required_args``): the class name tells them apart.
            if inspect.iscoroutinefunction(orig) or cls.__name__.startswith("Async"):
                return async_wrapper(orig, spec)
            return sync_wrapper(orig, spec)

        self.replace(cls, name, make)

    def close_hook(self, cls: type) -> None:
        def make(orig: Any) -> Any:
            if inspect.iscoroutinefunction(orig):
                return _patched_aclose(orig)
            return _patched_close(orig)

        self.replace(cls, "close", make)

    def restore(self) -> None:
        for cls, name, orig, own in reversed(self._saved):
            if own:
                setattr(cls, name, orig)
            else:
                delattr(cls, name)
        self._saved = []
