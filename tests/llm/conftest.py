"""The real SDKs against the real loopback fake server (examples/fake_llm.py)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import sessiontrace
from sessiontrace import _tracing
from sessiontrace.llm import _anthropic, _core

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import fake_llm  # noqa: E402

API_KEY = "sk-test-key-never-stored-1234"
LLM_TYPES = {"CHAT_MODEL", "LLM", "EMBEDDING"}


@pytest.fixture(scope="session")
def server() -> Iterator[fake_llm.FakeLLMServer]:
    with fake_llm.FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def autolog() -> Iterator[None]:
    sessiontrace.openai.autolog()
    sessiontrace.anthropic.autolog()
    yield
    sessiontrace.autolog(disable=True)


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each span was ended (must be exactly once)."""
    counts: Counter[str] = Counter()
    real = _tracing._close_span

    def counting(span: Any, exc: BaseException | None) -> None:
        counts[span.span_id] += 1
        real(span, exc)

    monkeypatch.setattr(_core, "_close_span", counting)
    monkeypatch.setattr(_anthropic, "_close_span", counting)
    return counts


@pytest.fixture
def oai(server: fake_llm.FakeLLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def aoai(server: fake_llm.FakeLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)


@pytest.fixture
def claude(server: fake_llm.FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.root_url, api_key=API_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def aclaude(server: fake_llm.FakeLLMServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.root_url, api_key=API_KEY, max_retries=0)


def traces() -> list[sessiontrace.Trace]:
    assert sessiontrace.flush(10)
    return list(sessiontrace.search_traces(return_type="list", order_by=["timestamp_ms ASC"]))


def llm_spans() -> list[sessiontrace.Span]:
    """Every LLM span stored, oldest trace first."""
    return [s for t in traces() for s in t.data.spans if s.span_type in LLM_TYPES]


def only_span() -> sessiontrace.Span:
    spans = llm_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def usage(span: sessiontrace.Span) -> dict[str, int]:
    value = span.attributes.get("mlflow.chat.tokenUsage")
    assert isinstance(value, dict), span.attributes
    return value


def chat_usage(messages: list[dict[str, Any]], text: str) -> tuple[int, int]:
    """What the fake server reports, computed independently of the SDK's answer."""
    return fake_llm.prompt_tokens(messages), fake_llm.tokens(text)


def assert_no_open_spans() -> None:
    assert not _tracing._live_traces, list(_tracing._live_traces)
