"""The chat model the example apps call: the fake one by default, or any
OpenAI-compatible endpoint when both ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``
are set (the key alone is not enough, so nothing reaches a paid provider by
accident).

The HTTP client is a few lines of ``urllib`` speaking the
``/v1/chat/completions`` wire format, streaming included, so the examples need
no SDK.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import fake_llm

Messages = list[dict[str, Any]]


class FakeChatModel:
    """In-process fake: no network at all."""

    name = fake_llm.MODEL

    def complete(self, messages: Messages) -> str:
        return fake_llm.answer(messages)

    def stream(self, messages: Messages) -> Iterator[str]:
        yield from fake_llm.stream_answer(messages)


class OpenAICompatibleChatModel:
    """``POST {base_url}/chat/completions`` with a bearer key."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.name = model
        self.timeout = timeout

    def _request(self, messages: Messages, stream: bool) -> Any:
        body = json.dumps({"model": self.name, "messages": messages, "stream": stream}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.api_key}",
            },
            method="POST",
        )
        return urllib.request.urlopen(request, timeout=self.timeout)

    def complete(self, messages: Messages) -> str:
        with self._request(messages, stream=False) as response:
            payload = json.load(response)
        return str(payload["choices"][0]["message"]["content"])

    def stream(self, messages: Messages) -> Iterator[str]:
        with self._request(messages, stream=True) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                delta = json.loads(data)["choices"][0].get("delta", {})
                if delta.get("content"):
                    yield str(delta["content"])


def from_env() -> FakeChatModel | OpenAICompatibleChatModel:
    key = os.environ.get("OPENAI_API_KEY")
    base_url = os.environ.get("OPENAI_BASE_URL")
    if key and base_url:
        return OpenAICompatibleChatModel(
            base_url, key, os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
        )
    return FakeChatModel()
