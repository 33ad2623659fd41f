"""Autolog for the ``anthropic`` SDK (0.x to 2.x): ``messages.create`` (plain and
``stream=True``) and the ``messages.stream()`` helper, which does not go through
``create`` and is patched on its own; sync and async.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
from typing import Any

from .. import _runtime
from .._tracing import _close_span
from ._core import CallSpec, Patcher, SdkState, StreamRecorder, begin_stream_call, wrap_stream
from ._usage import anthropic_usage, merge_anthropic_usage

__all__ = ["autolog"]


def _provider_of(client: Any) -> str:
    return "anthropic"


_sdk = SdkState(_provider_of)
_patcher = Patcher()
_lock = threading.Lock()


def _assemble(chunks: list[Any]) -> tuple[Any, dict[str, int] | None, str | None]:
    """Raw stream events -> a ``message``: text joined, tool input JSON rebuilt."""
    message: Any = None
    delta_usage: Any = None
    stop_reason: Any = None
    stop_sequence: Any = None
    blocks: dict[int, dict[str, Any]] = {}
    for event in chunks:
        kind = event.type
        if kind == "content_block_delta":
            block = blocks.get(event.index)
            if block is None:
                block = blocks[event.index] = {"type": "text", "parts": []}
            delta = event.delta
            dtype = delta.type
            if dtype == "text_delta":
                block["parts"].append(delta.text)
            elif dtype == "input_json_delta":
                block["parts"].append(delta.partial_json)
            elif dtype == "thinking_delta":
                block["parts"].append(delta.thinking)
        elif kind == "content_block_start":
            start = event.content_block
            blocks[event.index] = {"type": start.type, "start": start, "parts": []}
        elif kind == "message_start":
            message = event.message
        elif kind == "message_delta":
            if event.usage is not None:
                delta_usage = event.usage
            stop_reason = event.delta.stop_reason
            stop_sequence = event.delta.stop_sequence
    content = []
    for index in sorted(blocks):
        block = blocks[index]
        text = "".join(block["parts"])
        start = block.get("start")
        btype = block["type"]
        if btype == "tool_use":
            try:
                tool_input = json.loads(text) if text else getattr(start, "input", {})
            except ValueError:
                tool_input = text
            content.append(
                {
                    "type": "tool_use",
                    "id": getattr(start, "id", None),
                    "name": getattr(start, "name", None),
                    "input": tool_input,
                }
            )
        elif btype == "thinking":
            content.append({"type": "thinking", "thinking": text})
        elif btype == "text":
            content.append({"type": "text", "text": (getattr(start, "text", "") or "") + text})
        else:
            content.append({"type": btype})
    raw_usage = merge_anthropic_usage(getattr(message, "usage", None), delta_usage)
    usage = anthropic_usage(raw_usage) if raw_usage else None
    model = getattr(message, "model", None)
    output = {
        "id": getattr(message, "id", None),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": raw_usage or None,
    }
    return output, usage, model


_CREATE = CallSpec(
    _sdk, "anthropic.messages", "CHAT_MODEL", "anthropic", anthropic_usage, _assemble
)
_STREAM = CallSpec(
    _sdk, "anthropic.messages.stream", "CHAT_MODEL", "anthropic", anthropic_usage, _assemble
)
_MANAGER_ATTR = "_MessageStreamManager__api_request"
_ASYNC_MANAGER_ATTR = "_AsyncMessageStreamManager__api_request"


def _patched_stream(orig: Any) -> Any:
    @functools.wraps(orig)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = orig(self, *args, **kwargs)
        if not _sdk.active:
            return manager
        try:
            request = manager.__dict__[_MANAGER_ATTR]
        except Exception:
            _runtime.count_internal_error("llm.anthropic_stream")
            return manager

        def api_request() -> Any:
            # The manager's __enter__: the request is sent now, in the caller's context.
            try:
                span = begin_stream_call(_STREAM, self, kwargs)
            except Exception:
                _runtime.count_internal_error("llm.open")
                return request()
            try:
                raw = request()
            except BaseException as exc:
                _close_span(span, exc)
                raise
            try:
                wrap_stream(raw, StreamRecorder(_STREAM, span, False), False)
            except Exception:
                _runtime.count_internal_error("llm.anthropic_stream")
                _close_span(span, None)
            return raw

        manager.__dict__[_MANAGER_ATTR] = api_request
        return manager

    return stream


def _patched_async_stream(orig: Any) -> Any:
    @functools.wraps(orig)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = orig(self, *args, **kwargs)
        if not _sdk.active:
            return manager
        try:
            request = manager.__dict__[_ASYNC_MANAGER_ATTR]
        except Exception:
            _runtime.count_internal_error("llm.anthropic_stream")
            return manager

        async def api_request() -> Any:
            try:
                span = begin_stream_call(_STREAM, self, kwargs)
            except Exception:
                _runtime.count_internal_error("llm.open")
                return await request
            try:
                raw = await request
            except BaseException as exc:
                _close_span(span, exc)
                raise
            try:
                wrap_stream(raw, StreamRecorder(_STREAM, span, False), True)
            except Exception:
                _runtime.count_internal_error("llm.anthropic_stream")
                _close_span(span, None)
            return raw

        # The SDK awaits this attribute in __aenter__: it holds a coroutine, not a function.
        manager.__dict__[_ASYNC_MANAGER_ATTR] = api_request()
        return manager

    return stream


def autolog(*, disable: bool = False) -> None:
    with _lock:
        if disable:
            _sdk.active = False
            _patcher.restore()
            return
        if _patcher.patched:
            _sdk.active = True
            return
        import anthropic
        from anthropic._response import APIResponse, AsyncAPIResponse

        _sdk.stream_types = (anthropic.Stream,)
        _sdk.async_stream_types = (anthropic.AsyncStream,)
        _sdk.api_response_types = (APIResponse, AsyncAPIResponse)
        try:  # 0.x; 2.x returns an APIResponse from with_raw_response too
            from anthropic._legacy_response import (  # type: ignore[import-not-found,unused-ignore]
                LegacyAPIResponse,
            )

            _sdk.legacy_response_types = (LegacyAPIResponse,)
        except ImportError:
            _sdk.legacy_response_types = ()
        module = importlib.import_module("anthropic.resources.messages")
        _patcher.method(module.Messages, "create", _CREATE)
        _patcher.method(module.AsyncMessages, "create", _CREATE)
        _patcher.replace(module.Messages, "stream", _patched_stream)
        _patcher.replace(module.AsyncMessages, "stream", _patched_async_stream)
        _patcher.close_hook(anthropic.Stream)
        _patcher.close_hook(anthropic.AsyncStream)
        _sdk.active = True
