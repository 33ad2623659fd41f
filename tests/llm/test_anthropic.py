"""anthropic SDK autolog: create (plain, stream=True), messages.stream(), sync and async."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import anthropic
import pytest

import sessiontrace

from .conftest import assert_no_open_spans, fake_llm, llm_spans, only_span, traces, usage

MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Write a haiku about SQLite"}]
TEXT = fake_llm.answer(MESSAGES)
RAW_INPUT = fake_llm.prompt_tokens(MESSAGES)  # what Anthropic reports: cache excluded
OUTPUT = fake_llm.tokens(TEXT)
CACHE = {"x-fake-cached-tokens": "6", "x-fake-cache-write-tokens": "2"}
EXPECTED = {
    "input_tokens": RAW_INPUT + 6 + 2,
    "output_tokens": OUTPUT,
    "total_tokens": RAW_INPUT + 8 + OUTPUT,
    "cache_read_input_tokens": 6,
    "cache_creation_input_tokens": 2,
}


def test_create_adds_the_cache_back_into_input_tokens(
    claude: anthropic.Anthropic, closes: Counter[str]
) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, extra_headers=CACHE
    )
    assert message.content[0].text == TEXT
    assert message.usage.input_tokens == RAW_INPUT
    span = only_span()
    assert span.name == "anthropic.messages"
    assert span.span_type == "CHAT_MODEL"
    assert usage(span) == EXPECTED
    assert span.attributes["mlflow.llm.provider"] == "anthropic"
    assert span.attributes["mlflow.message.format"] == "anthropic"
    assert span.attributes["mlflow.llm.model"] == MODEL
    assert span.outputs["content"][0]["text"] == TEXT
    assert list(closes.values()) == [1]


def test_create_stream_true_records_usage(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model=MODEL, max_tokens=100, messages=MESSAGES, stream=True, extra_headers=CACHE
        )
    )
    assert events[-1].type == "message_stop"
    span = only_span()
    assert usage(span) == EXPECTED
    assert span.outputs["content"] == [{"type": "text", "text": TEXT}]
    assert span.outputs["stop_reason"] == "end_turn"
    assert span.attributes["sessiontrace.llm.time_to_first_chunk_ms"] > 0


def test_stream_helper_is_traced(claude: anthropic.Anthropic, closes: Counter[str]) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=MESSAGES, extra_headers=CACHE
    ) as stream:
        assert stream.get_final_text() == TEXT
    span = only_span()
    assert span.name == "anthropic.messages.stream"
    assert usage(span) == EXPECTED
    assert span.inputs["messages"] == MESSAGES
    assert list(closes.values()) == [1]


def test_stream_helper_closed_early_ends_once(
    claude: anthropic.Anthropic, closes: Counter[str]
) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    gc.collect()
    span = only_span()
    assert span.attributes["sessiontrace.llm.stream_incomplete"] is True
    assert list(closes.values()) == [1]
    assert_no_open_spans()


def test_streamed_tool_use_is_rebuilt(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=MESSAGES,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        extra_headers={"x-fake-mode": "tool-call"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    span = only_span()
    assert span.outputs["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert span.outputs["stop_reason"] == "tool_use"
    assert span.attributes["mlflow.chat.tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}},
        }
    ]


def test_with_raw_response_records_usage(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, extra_headers=CACHE
    )
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().content[0].text == TEXT
    assert usage(only_span()) == EXPECTED


def test_errors_pass_through_and_mark_the_span(
    claude: anthropic.Anthropic, closes: Counter[str]
) -> None:
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=MESSAGES,
            extra_headers={"x-fake-mode": "error-429"},
        )
    with (
        pytest.raises(anthropic.APIStatusError),
        claude.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=MESSAGES,
            extra_headers={"x-fake-mode": "error-529"},
        ) as stream,
    ):
        stream.get_final_text()
    with pytest.raises(anthropic.APIStatusError):
        for _ in claude.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-mode": "midstream-error"},
        ):
            pass
    spans = llm_spans()
    assert [s.status for s in spans] == ["ERROR"] * 3
    assert all(s.events and s.events[0].name == "exception" for s in spans)
    assert sorted(closes.values()) == [1, 1, 1]


def test_async_create_stream_and_helper(aclaude: anthropic.AsyncAnthropic) -> None:
    async def main() -> None:
        message = await aclaude.messages.create(
            model=MODEL, max_tokens=100, messages=MESSAGES, extra_headers=CACHE
        )
        assert message.usage.cache_read_input_tokens == 6
        stream = await aclaude.messages.create(
            model=MODEL, max_tokens=100, messages=MESSAGES, stream=True, extra_headers=CACHE
        )
        async for _ in stream:
            pass
        async with aclaude.messages.stream(
            model=MODEL, max_tokens=100, messages=MESSAGES, extra_headers=CACHE
        ) as helper:
            assert await helper.get_final_text() == TEXT
        await aclaude.close()

    @sessiontrace.trace
    def turn() -> None:
        asyncio.run(main())

    turn()
    [trace] = traces()
    spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert [s.name for s in spans] == [
        "anthropic.messages",
        "anthropic.messages",
        "anthropic.messages.stream",
    ]
    assert [usage(s) for s in spans] == [EXPECTED] * 3
    assert {s.parent_id for s in spans} == {trace.data.spans[0].span_id}
