"""The chat model the example apps call: the in-process fake by default, or the real
``openai`` client when both ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are set (the
key alone is not enough, so nothing reaches a paid provider by accident).

``make demo`` points the client at the local fake server (``fake_llm.py``), so the
real SDK runs offline; ``sessiontrace.openai.autolog()`` turns every call into a
``CHAT_MODEL`` span with the model and its tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fake_llm

import sessiontrace

Messages = list[dict[str, Any]]

# A model the price tables know, so the demo shows cost as well as tokens.
DEFAULT_MODEL = "gpt-4o-mini"


class FakeChatModel:
    """In-process fake: no network at all."""

    name = fake_llm.MODEL

    def complete(self, messages: Messages) -> str:
        return fake_llm.answer(messages)

    def stream(self, messages: Messages) -> Iterator[str]:
        yield from fake_llm.stream_answer(messages)


class OpenAICompatibleChatModel:
    """The ``openai`` SDK on any OpenAI-compatible endpoint, autologged."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 60.0) -> None:
        import openai

        sessiontrace.openai.autolog()  # idempotent: every app and test may call it
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout)
        self.name = model

    def complete(self, messages: Messages) -> str:
        response = self.client.chat.completions.create(model=self.name, messages=messages)  # type: ignore[arg-type]
        return response.choices[0].message.content or ""

    def stream(self, messages: Messages) -> Iterator[str]:
        # No stream_options needed: autolog asks for the usage and hides its chunk.
        stream = self.client.chat.completions.create(
            model=self.name,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content


def from_env() -> FakeChatModel | OpenAICompatibleChatModel:
    key = os.environ.get("OPENAI_API_KEY")
    base_url = os.environ.get("OPENAI_BASE_URL")
    if key and base_url:
        return OpenAICompatibleChatModel(
            base_url, key, os.environ.get("OPENAI_MODEL", DEFAULT_MODEL)
        )
    return FakeChatModel()
