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


def _assemble_chat(chunks: list[Any]) -> tuple[Any, dict[str, int] | None, str | None]:
    """Chat chunks -> a ``chat.completion``: text joined, tool calls rebuilt by index."""
    usage: Any = None
    model: str | None = None
    head: Any = None
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        if head is None and chunk.model:  # Azure's leading chunk has no id nor model
            head = chunk
            model = chunk.model
        for choice in chunk.choices or ():
            state = choices.get(choice.index)
            if state is None:
                state = choices[choice.index] = {
                    "role": "assistant",
                    "content": [],
                    "tools": {},
                    "finish_reason": None,
                }
            delta = choice.delta
            if delta is not None:
                if delta.role:
                    state["role"] = delta.role
                if delta.content:
                    state["content"].append(delta.content)
                if delta.tool_calls:
                    for call in delta.tool_calls:
                        tool = state["tools"].get(call.index)
                        if tool is None:
                            tool = state["tools"][call.index] = {
                                "id": None,
                                "type": "function",
                                "name": [],
                                "arguments": [],
                            }
                        if call.id:
                            tool["id"] = call.id
                        function = call.function
                        if function is not None:
                            if function.name:
                                tool["name"].append(function.name)
                            if function.arguments:
                                tool["arguments"].append(function.arguments)
            if choice.finish_reason:
                state["finish_reason"] = choice.finish_reason
    if usage is None:  # some OpenAI-compatible servers put it in choices[0] instead
        for chunk in chunks:
            for choice in chunk.choices or ():
                in_choice = _extra_usage(choice)
                if in_choice is not None:
                    usage = in_choice
    out_choices = []
    for index in sorted(choices):
        state = choices[index]
        message: dict[str, Any] = {
            "role": state["role"],
            "content": "".join(state["content"]) if state["content"] else None,
        }
        if state["tools"]:
            message["tool_calls"] = [
                {
                    "id": tool["id"],
                    "type": tool["type"],
                    "function": {
                        "name": "".join(tool["name"]),
                        "arguments": "".join(tool["arguments"]),
                    },
                }
                for _, tool in sorted(state["tools"].items())
            ]
        out_choices.append(
            {"index": index, "message": message, "finish_reason": state["finish_reason"]}
        )
    normalised = openai_usage(usage)
    output: dict[str, Any] = {
        "id": getattr(head, "id", None),
        "object": "chat.completion",
        "created": getattr(head, "created", None),
        "model": model,
        "choices": out_choices,
    }
    if usage is not None:
        output["usage"] = normalised
    return output, normalised, model


def _assemble_completion(chunks: list[Any]) -> tuple[Any, dict[str, int] | None, str | None]:
    usage: Any = None
    model: str | None = None
    head: Any = None
    texts: dict[int, list[str]] = {}
    finish: dict[int, Any] = {}
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        if head is None and chunk.model:
            head = chunk
            model = chunk.model
        for choice in chunk.choices or ():
            texts.setdefault(choice.index, []).append(choice.text or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    normalised = openai_usage(usage)
    output = {
        "id": getattr(head, "id", None),
        "object": "text_completion",
        "model": model,
        "choices": [
            {"index": i, "text": "".join(texts[i]), "finish_reason": finish.get(i)}
            for i in sorted(texts)
        ],
        "usage": normalised,
    }
    return output, normalised, model


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _assemble_responses(chunks: list[Any]) -> tuple[Any, dict[str, int] | None, str | None]:
    final: Any = None
    latest: Any = None
    text: list[str] = []
    for event in chunks:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            text.append(event.delta or "")
        elif kind in _FINAL_EVENTS:
            final = event.response
        elif kind in ("response.created", "response.in_progress"):
            latest = event.response
    response = final if final is not None else latest
    model = getattr(response, "model", None)
    usage = openai_usage(getattr(final, "usage", None)) if final is not None else None
    if final is not None:
        return final.model_dump(mode="json", exclude_unset=True, warnings=False), usage, model
    return {"model": model, "output_text": "".join(text)}, usage, model


# -- patching -----------------------------------------------------------------------------------


def _targets() -> list[tuple[str, str, list[tuple[str, CallSpec]]]]:
    chat = CallSpec(_sdk, "openai.chat.completions", "CHAT_MODEL", "openai", openai_usage,
                    _assemble_chat, inject_usage=True)  # fmt: skip
    chat_parse = CallSpec(_sdk, "openai.chat.completions.parse", "CHAT_MODEL", "openai",
                          openai_usage, _assemble_chat)  # fmt: skip
    legacy = CallSpec(_sdk, "openai.completions", "LLM", "openai", openai_usage,
                      _assemble_completion, inject_usage=True)  # fmt: skip
    embed = CallSpec(_sdk, "openai.embeddings", "EMBEDDING", None, _embedding_usage, None)
    responses = CallSpec(_sdk, "openai.responses", "CHAT_MODEL", "openai", openai_usage,
                         _assemble_responses)  # fmt: skip
    r_parse = CallSpec(_sdk, "openai.responses.parse", "CHAT_MODEL", "openai",
                               openai_usage, _assemble_responses)  # fmt: skip
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
