"""Autolog for the ``openai`` SDK (1.x to 3.x): chat, legacy completions, embeddings,
responses; ``create``, ``parse`` and (through ``create``) the ``.stream()`` helpers;
sync and async; ``with_raw_response`` and ``with_streaming_response``.

Class methods are patched, so clients made before ``autolog()`` are covered.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from ._core import CallSpec, Patcher, SdkState
from ._usage import openai_usage

__all__ = ["autolog"]

_PROVIDER_KEY = "_sessiontrace_provider"


def _provider_of(client: Any) -> str:
    if client is None:
        return "openai"
    cached = client.__dict__.get(_PROVIDER_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    provider = "openai"
    try:
        host = str(getattr(client, "base_url", "") or "").lower()
        if "Azure" in type(client).__name__ or ".openai.azure.com" in host:
            provider = "azure"
        client.__dict__[_PROVIDER_KEY] = provider
    except Exception:
        pass
    return provider


_sdk = SdkState(_provider_of)
_patcher = Patcher()
_lock = threading.Lock()


# -- reassembling streams ---------------------------------------------------------------------


def _extra_usage(obj: Any) -> Any:
    extra = getattr(obj, "__pydantic_extra__", None)
    return extra.get("usage") if extra else None


class _ChoiceState:
    __slots__ = ("content", "finish_reason", "role", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.tools: dict[int, list[Any]] = {}  # index -> [id, type, name parts, argument parts]
        self.finish_reason: str | None = None


class ChatAccumulator:
    """Chat chunks -> a ``chat.completion``: text joined, tool calls rebuilt by index."""

    __slots__ = ("choices", "created", "id", "model", "usage")

    def __init__(self) -> None:
        self.usage: Any = None
        self.model: str | None = None
        self.id: str | None = None
        self.created: int | None = None
        self.choices: dict[int, _ChoiceState] = {}

    def add(self, chunk: Any) -> bool:
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        choices = chunk.choices
        if self.model is None and chunk.model:  # Azure's leading chunk has no model
            self.model, self.id, self.created = chunk.model, chunk.id, chunk.created
        if not choices:
            return usage is not None
        for choice in choices:
            state = self.choices.get(choice.index)
            if state is None:
                state = self.choices[choice.index] = _ChoiceState()
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    state.content.append(delta.content)
                if delta.tool_calls:
                    self._tools(state, delta.tool_calls)
                if delta.role:
                    state.role = delta.role
            if choice.finish_reason:
                state.finish_reason = choice.finish_reason
                if self.usage is None:  # some compatible servers put it in the choice
                    self.usage = _extra_usage(choice)
        return False

    @staticmethod
    def _tools(state: _ChoiceState, calls: Any) -> None:
        for call in calls:
            tool = state.tools.get(call.index)
            if tool is None:
                tool = state.tools[call.index] = [None, "function", [], []]
            if call.id:
                tool[0] = call.id
            if call.type:
                tool[1] = call.type
            function = call.function
            if function is not None:
                if function.name:
                    tool[2].append(function.name)
                if function.arguments:
                    tool[3].append(function.arguments)

    def result(self) -> tuple[Any, dict[str, int] | None, str | None]:
        out_choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": state.role,
                "content": "".join(state.content) if state.content else None,
            }
            if state.tools:
                message["tool_calls"] = [
                    {
                        "id": tool[0],
                        "type": tool[1],
                        "function": {"name": "".join(tool[2]), "arguments": "".join(tool[3])},
                    }
                    for _, tool in sorted(state.tools.items())
                ]
            out_choices.append(
                {"index": index, "message": message, "finish_reason": state.finish_reason}
            )
        usage = openai_usage(self.usage)
        output: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": out_choices,
        }
        if usage is not None:
            output["usage"] = usage
        return output, usage, self.model


class CompletionAccumulator:
    """Legacy completion chunks -> a ``text_completion``."""

    __slots__ = ("finish", "id", "model", "texts", "usage")

    def __init__(self) -> None:
        self.usage: Any = None
        self.model: str | None = None
        self.id: str | None = None
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, Any] = {}

    def add(self, chunk: Any) -> bool:
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        if self.model is None and chunk.model:
            self.model, self.id = chunk.model, chunk.id
        choices = chunk.choices
        if not choices:
            return usage is not None
        for choice in choices:
            texts = self.texts.get(choice.index)
            if texts is None:
                texts = self.texts[choice.index] = []
            if choice.text:
                texts.append(choice.text)
            if choice.finish_reason:
                self.finish[choice.index] = choice.finish_reason
        return False

    def result(self) -> tuple[Any, dict[str, int] | None, str | None]:
        usage = openai_usage(self.usage)
        output = {
            "id": self.id,
            "object": "text_completion",
            "model": self.model,
            "choices": [
                {"index": i, "text": "".join(self.texts[i]), "finish_reason": self.finish.get(i)}
                for i in sorted(self.texts)
            ],
            "usage": usage,
        }
        return output, usage, self.model


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesAccumulator:
    """Responses API events: the final ``response.completed`` carries everything."""

    __slots__ = ("final", "latest", "text")

    def __init__(self) -> None:
        self.final: Any = None
        self.latest: Any = None
        self.text: list[str] = []

    def add(self, event: Any) -> bool:
        kind = event.type
        if kind == "response.output_text.delta":
            self.text.append(event.delta or "")
        elif kind in _FINAL_EVENTS:
            self.final = event.response
        elif kind == "response.created":
            self.latest = event.response
        return False

    def result(self) -> tuple[Any, dict[str, int] | None, str | None]:
        final = self.final
        if final is not None:
            output = final.model_dump(mode="json", exclude_unset=True, warnings=False)
            return output, openai_usage(final.usage), final.model
        model = getattr(self.latest, "model", None)
        return {"model": model, "output_text": "".join(self.text)}, None, model


# -- patching -----------------------------------------------------------------------------------


def _targets() -> list[tuple[str, str, list[tuple[str, CallSpec]]]]:
    chat = CallSpec(_sdk, "openai.chat.completions", "CHAT_MODEL", "openai", openai_usage,
                    ChatAccumulator, inject_usage=True)  # fmt: skip
    chat_parse = CallSpec(_sdk, "openai.chat.completions.parse", "CHAT_MODEL", "openai",
                          openai_usage, ChatAccumulator)  # fmt: skip
    legacy = CallSpec(_sdk, "openai.completions", "LLM", "openai", openai_usage,
                      CompletionAccumulator, inject_usage=True)  # fmt: skip
    embed = CallSpec(_sdk, "openai.embeddings", "EMBEDDING", None, _embedding_usage, None)
    responses = CallSpec(_sdk, "openai.responses", "CHAT_MODEL", "openai", openai_usage,
                         ResponsesAccumulator)  # fmt: skip
    r_parse = CallSpec(_sdk, "openai.responses.parse", "CHAT_MODEL", "openai",
                               openai_usage, ResponsesAccumulator)  # fmt: skip
    chat_module = "openai.resources.chat.completions"
    beta_module = "openai.resources.beta.chat.completions"
    return [
        (chat_module, "Completions", [("create", chat), ("parse", chat_parse)]),
        (chat_module, "AsyncCompletions", [("create", chat), ("parse", chat_parse)]),
        (beta_module, "Completions", [("parse", chat_parse)]),
        (beta_module, "AsyncCompletions", [("parse", chat_parse)]),
        ("openai.resources.completions", "Completions", [("create", legacy)]),
        ("openai.resources.completions", "AsyncCompletions", [("create", legacy)]),
        ("openai.resources.embeddings", "Embeddings", [("create", embed)]),
        ("openai.resources.embeddings", "AsyncEmbeddings", [("create", embed)]),
        ("openai.resources.responses", "Responses", [("create", responses), ("parse", r_parse)]),
        (
            "openai.resources.responses",
            "AsyncResponses",
            [("create", responses), ("parse", r_parse)],
        ),
    ]


def _embedding_usage(usage: Any) -> dict[str, int] | None:
    result = openai_usage(usage)
    if result is not None:
        result["output_tokens"] = 0
        result["total_tokens"] = result["input_tokens"]
    return result


def _load_types() -> None:
    import openai

    _sdk.stream_types = (openai.Stream,)
    _sdk.async_stream_types = (openai.AsyncStream,)
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import APIResponse, AsyncAPIResponse

    _sdk.legacy_response_types = (LegacyAPIResponse,)
    _sdk.api_response_types = (APIResponse, AsyncAPIResponse)


def autolog(*, disable: bool = False, stream_usage: bool = True) -> None:
    with _lock:
        if disable:
            _sdk.active = False
            _patcher.restore()
            return
        _sdk.stream_usage = stream_usage
        if _patcher.patched:
            _sdk.active = True
            return
        import openai

        _load_types()
        for module_name, class_name, methods in _targets():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue  # e.g. no beta.chat in this SDK version
            cls = getattr(module, class_name, None)
            if not isinstance(cls, type):
                continue
            for method, spec in methods:
                _patcher.method(cls, method, spec)
        _patcher.close_hook(openai.Stream)
        _patcher.close_hook(openai.AsyncStream)
        _sdk.active = True
