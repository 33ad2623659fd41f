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


class MessageAccumulator:
    """Raw stream events -> a ``message``: text joined, tool input JSON rebuilt."""

    __slots__ = ("blocks", "delta_usage", "message", "stop_reason", "stop_sequence")

    def __init__(self) -> None:
        self.message: Any = None
        self.delta_usage: Any = None
        self.stop_reason: Any = None
        self.stop_sequence: Any = None
        self.blocks: dict[int, list[Any]] = {}  # index -> [type, id, name, text, parts]

    def add(self, event: Any) -> bool:
        kind = event.type
        if kind == "content_block_delta":
            block = self.blocks.get(event.index)
            if block is None:
                block = self.blocks[event.index] = ["text", None, None, "", []]
            delta = event.delta
            dtype = delta.type
            if dtype == "text_delta":
                block[4].append(delta.text)
            elif dtype == "input_json_delta":
                block[4].append(delta.partial_json)
            elif dtype == "thinking_delta":
                block[4].append(delta.thinking)
        elif kind == "content_block_start":
            start = event.content_block
            self.blocks[event.index] = [
                start.type,
                getattr(start, "id", None),
                getattr(start, "name", None),
                getattr(start, "text", None) or "",
                [],
            ]
        elif kind == "message_start":
            self.message = event.message
        elif kind == "message_delta":
            if event.usage is not None:
                self.delta_usage = event.usage
            self.stop_reason = event.delta.stop_reason
            self.stop_sequence = event.delta.stop_sequence
        return False

    def result(self) -> tuple[Any, dict[str, int] | None, str | None]:
        content: list[dict[str, Any]] = []
        for index in sorted(self.blocks):
            btype, block_id, name, head, parts = self.blocks[index]
            text = "".join(parts)
            if btype == "tool_use":
                try:
                    tool_input: Any = json.loads(text) if text else {}
                except ValueError:
                    tool_input = text
                content.append(
                    {"type": "tool_use", "id": block_id, "name": name, "input": tool_input}
                )
            elif btype == "thinking":
                content.append({"type": "thinking", "thinking": text})
            elif btype == "text":
                content.append({"type": "text", "text": head + text})
            else:
                content.append({"type": btype})
        message = self.message
        raw_usage = merge_anthropic_usage(getattr(message, "usage", None), self.delta_usage)
        usage = anthropic_usage(raw_usage) if raw_usage else None
        model = getattr(message, "model", None)
        output = {
            "id": getattr(message, "id", None),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": raw_usage or None,
        }
        return output, usage, model


_CREATE = CallSpec(
    _sdk, "anthropic.messages", "CHAT_MODEL", "anthropic", anthropic_usage, MessageAccumulator
)
_STREAM = CallSpec(
    _sdk,
    "anthropic.messages.stream",
    "CHAT_MODEL",
    "anthropic",
    anthropic_usage,
    MessageAccumulator,
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
