"""openai SDK autolog: every call shape, against the fake server, read back from the store."""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from typing import Any

import openai
import pytest

import sessiontrace

from .conftest import (
    assert_no_open_spans,
    chat_usage,
    fake_llm,
    llm_spans,
    only_span,
    traces,
    usage,
)

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is a vector database?"},
]
TEXT = fake_llm.answer(MESSAGES)
PROMPT, COMPLETION = chat_usage(MESSAGES, TEXT)
EXPECTED = {
    "input_tokens": PROMPT,
    "output_tokens": COMPLETION,
    "total_tokens": PROMPT + COMPLETION,
    "cache_read_input_tokens": 0,
    "reasoning_tokens": 0,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]


def test_chat_create_is_one_chat_model_span_with_the_response_model_and_usage(
    oai: openai.OpenAI, closes: Counter[str]
) -> None:
    response = oai.chat.completions.create(
        model="my-deployment",
        messages=MESSAGES,
        temperature=0.2,
        extra_headers={"x-fake-response-model": "gpt-4o-mini-2024-07-18"},
    )
    assert response.choices[0].message.content == TEXT
    span = only_span()
    assert span.span_type == "CHAT_MODEL"
    assert span.status == "OK"
    assert span.parent_id is None  # outside any trace: a trace of its own
    assert usage(span) == EXPECTED
    assert (
        response.usage is not None and usage(span)["input_tokens"] == response.usage.prompt_tokens
    )
    assert span.attributes["mlflow.llm.model"] == "gpt-4o-mini-2024-07-18"
    assert span.attributes["mlflow.llm.provider"] == "openai"
    assert span.attributes["mlflow.message.format"] == "openai"
    assert "sessiontrace.llm.usage_missing" not in span.attributes
    assert span.inputs == {"model": "my-deployment", "messages": MESSAGES, "temperature": 0.2}
    assert span.outputs["choices"][0]["message"]["content"] == TEXT
    assert list(closes.values()) == [1]


def test_inside_a_trace_the_call_is_a_child_and_the_trace_keeps_user_and_session(
    oai: openai.OpenAI,
) -> None:
    @sessiontrace.trace
    def turn(question: str) -> str:
        r = oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}]
        )
        return r.choices[0].message.content or ""

    with sessiontrace.user_session(user_id="user-1", session_id="session-1"):
        turn("Hello")
    [trace] = traces()
    assert trace.info.trace_metadata["mlflow.trace.user"] == "user-1"
    assert trace.info.trace_metadata["mlflow.trace.session"] == "session-1"
    root, child = trace.data.spans
    assert root.name == "turn"
    assert child.parent_id == root.span_id
    assert child.span_type == "CHAT_MODEL"


def test_reasoning_and_cached_tokens_are_recorded(oai: openai.OpenAI) -> None:
    oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        extra_headers={"x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "5"},
    )
    got = usage(only_span())
    assert got["input_tokens"] == PROMPT  # OpenAI's prompt_tokens already include the cache
    assert got["cache_read_input_tokens"] == 4
    assert got["reasoning_tokens"] == 5
    assert got["output_tokens"] == COMPLETION + 5


def _read_stream(stream: Any) -> str:
    pieces = []
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")  # breaks on a choices == [] chunk
    return "".join(pieces)


def test_stream_without_include_usage_gets_usage_and_hides_the_extra_chunk(
    oai: openai.OpenAI, server: fake_llm.FakeLLMServer, closes: Counter[str]
) -> None:
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)  # the caller keeps the SDK's object
    assert _read_stream(stream) == TEXT
    assert server.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    span = only_span()
    assert usage(span) == EXPECTED  # the same as the non-streamed call
    assert span.outputs["choices"][0]["message"]["content"] == TEXT
    assert span.outputs["choices"][0]["finish_reason"] == "stop"
    assert "stream_options" not in span.inputs  # what the caller passed
    assert span.attributes["sessiontrace.llm.time_to_first_chunk_ms"] > 0
    assert "sessiontrace.llm.stream_incomplete" not in span.attributes
    assert list(closes.values()) == [1]


def test_a_caller_who_asked_for_usage_still_receives_the_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    span = only_span()
    assert usage(span)["total_tokens"] == chunks[-1].usage.total_tokens == PROMPT + COMPLETION
    assert span.inputs["stream_options"] == {"include_usage": True}


def test_stream_usage_off_leaves_the_request_alone_and_marks_usage_missing(
    oai: openai.OpenAI, server: fake_llm.FakeLLMServer
) -> None:
    sessiontrace.openai.autolog(stream_usage=False)
    assert _read_stream(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "stream_options" not in server.requests[-1]["body"]
    span = only_span()
    assert "mlflow.chat.tokenUsage" not in span.attributes
    assert span.attributes["sessiontrace.llm.usage_missing"] is True


def test_no_usage_from_the_server_marks_usage_missing(oai: openai.OpenAI) -> None:
    oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-fake-mode": "no-usage"}
    )
    span = only_span()
    assert span.attributes["sessiontrace.llm.usage_missing"] is True
    assert "mlflow.chat.tokenUsage" not in span.attributes


def test_azure_style_stream_chunks(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-fake-mode": "azure"}
    )
    seen = list(stream)
    # Azure's own leading annotation chunk is the caller's (it has no usage); ours is not.
    assert [c.choices == [] for c in seen].count(True) == 1
    assert "".join(c.choices[0].delta.content or "" for c in seen if c.choices) == TEXT
    span = only_span()
    assert usage(span) == EXPECTED
    assert span.attributes["mlflow.llm.model"] == MODEL  # not the leading chunk's ""


def test_usage_inside_the_last_choice_is_found(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-fake-mode": "choice-usage"}
    )
    assert _read_stream(stream) == TEXT
    assert usage(only_span()) == EXPECTED


def test_azure_client_is_provider_azure(server: fake_llm.FakeLLMServer) -> None:
    client = openai.AzureOpenAI(
        base_url=server.base_url, api_key="azure-key", api_version="2024-06-01", max_retries=0
    )
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert only_span().attributes["mlflow.llm.provider"] == "azure"


def test_streamed_tool_call_is_rebuilt(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        stream=True,
        extra_headers={"x-fake-mode": "tool-call"},
    )
    deltas = [c for c in stream]
    assert all(c.choices for c in deltas)
    span = only_span()
    choice = span.outputs["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "call_1"
    assert call["function"] == {"name": "get_weather", "arguments": fake_llm.TOOL_ARGUMENTS}
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert span.attributes["mlflow.chat.tools"] == TOOLS
    assert usage(span)["output_tokens"] == fake_llm.tokens(fake_llm.TOOL_ARGUMENTS)


def test_stream_helper_records_usage_once(oai: openai.OpenAI, closes: Counter[str]) -> None:
    with oai.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == TEXT
    assert usage(only_span()) == EXPECTED
    assert list(closes.values()) == [1]


def test_parse_with_a_pydantic_format(oai: openai.OpenAI) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Answer(pydantic.BaseModel):
        city: str

    parsed = oai.chat.completions.parse(
        model=MODEL,
        messages=MESSAGES,
        response_format=Answer,
        extra_headers={"x-fake-mode": "tool-call"},
    )
    assert parsed.choices[0].message.tool_calls
    span = only_span()
    assert span.span_type == "CHAT_MODEL"
    assert usage(span)["input_tokens"] == PROMPT


def test_early_close_ends_the_span_once_as_incomplete(
    oai: openai.OpenAI, closes: Counter[str]
) -> None:
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices
    stream.close()
    stream.close()
    span = only_span()
    assert span.attributes["sessiontrace.llm.stream_incomplete"] is True
    assert span.status == "OK"
    assert list(closes.values()) == [1]
    assert_no_open_spans()


def test_break_and_drop_ends_the_span_once(oai: openai.OpenAI, closes: Counter[str]) -> None:
    def consume() -> None:
        for chunk in oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            if chunk.choices[0].delta.content:
                break

    consume()
    gc.collect()
    span = only_span()
    assert span.attributes["sessiontrace.llm.stream_incomplete"] is True
    assert list(closes.values()) == [1]
    assert_no_open_spans()


def test_a_stream_never_iterated_still_ends_when_dropped(
    oai: openai.OpenAI, closes: Counter[str]
) -> None:
    oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    gc.collect()
    assert only_span().attributes["sessiontrace.llm.stream_incomplete"] is True
    assert list(closes.values()) == [1]


def test_context_manager_exit_ends_the_span(oai: openai.OpenAI, closes: Counter[str]) -> None:
    with oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        next(iter(stream))
    assert only_span().attributes["sessiontrace.llm.stream_incomplete"] is True
    assert list(closes.values()) == [1]


def test_429_is_raised_unchanged_and_the_span_is_an_error(
    oai: openai.OpenAI, closes: Counter[str]
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-fake-mode": "error-429"}
        )
    assert caught.value.status_code == 429
    span = only_span()
    assert span.status == "ERROR"
    assert "RateLimitError" in span.status_message
    assert [e.name for e in span.events] == ["exception"]
    assert "mlflow.chat.tokenUsage" not in span.attributes
    assert list(closes.values()) == [1]
    [trace] = traces()
    assert trace.info.state == "ERROR"


def test_midstream_error_is_raised_unchanged_and_ends_the_span_once(
    oai: openai.OpenAI, closes: Counter[str]
) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-mode": "midstream-error"},
    )
    received = []
    with pytest.raises(openai.APIError, match="fake mid-stream failure"):
        for chunk in stream:
            received.append(chunk)
    stream.close()
    assert len(received) == 3
    span = only_span()
    assert span.status == "ERROR"
    assert span.events[0].attributes["exception.type"] == "APIError"
    assert list(closes.values()) == [1]


def test_legacy_completions_plain_and_streamed(
    oai: openai.OpenAI, server: fake_llm.FakeLLMServer
) -> None:
    prompt = "Say hello"
    text = fake_llm.answer([{"role": "user", "content": prompt}])
    expected = {
        "input_tokens": fake_llm.tokens(prompt),
        "output_tokens": fake_llm.tokens(text),
        "total_tokens": fake_llm.tokens(prompt) + fake_llm.tokens(text),
    }
    plain = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt)
    assert plain.choices[0].text == text
    chunks = list(
        oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert server.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    first, second = llm_spans()
    assert first.span_type == second.span_type == "LLM"
    assert usage(first) == usage(second) == expected
    assert second.outputs["choices"][0]["text"] == text


def test_embeddings_base64_default(oai: openai.OpenAI, server: fake_llm.FakeLLMServer) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "again"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    span = only_span()
    assert span.span_type == "EMBEDDING"
    expected_in = fake_llm.tokens("hello world") + fake_llm.tokens("again")
    assert usage(span) == {
        "input_tokens": expected_in,
        "output_tokens": 0,
        "total_tokens": expected_in,
    }
    assert span.attributes["mlflow.llm.model"] == "text-embedding-3-small"


RESPONSES_INPUT = "Tell me a joke"
R_TEXT = fake_llm.answer([{"role": "user", "content": RESPONSES_INPUT}])
R_EXPECTED = {
    "input_tokens": fake_llm.prompt_tokens([{"role": "user", "content": RESPONSES_INPUT}]),
    "output_tokens": fake_llm.tokens(R_TEXT),
}


def test_responses_create_stream_and_helper(oai: openai.OpenAI, closes: Counter[str]) -> None:
    plain = oai.responses.create(model=MODEL, input=RESPONSES_INPUT)
    assert plain.output_text == R_TEXT
    events = list(oai.responses.create(model=MODEL, input=RESPONSES_INPUT, stream=True))
    assert events[-1].type == "response.completed"
    with oai.responses.stream(model=MODEL, input=RESPONSES_INPUT) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == R_TEXT
    spans = llm_spans()
    assert len(spans) == 3
    for span in spans:
        assert span.span_type == "CHAT_MODEL"
        got = usage(span)
        assert {k: got[k] for k in R_EXPECTED} == R_EXPECTED
    assert spans[1].outputs["output"][0]["content"][0]["text"] == R_TEXT
    assert sorted(closes.values()) == [1, 1, 1]


def test_with_raw_response_keeps_headers_and_records_usage(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().choices[0].message.content == TEXT
    raw_stream = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    assert _read_stream(raw_stream.parse()) == TEXT
    first, second = llm_spans()
    assert usage(first) == usage(second) == EXPECTED


def test_with_streaming_response_records_usage(oai: openai.OpenAI, closes: Counter[str]) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert response.headers["content-type"] == "application/json"
        assert response.parse().choices[0].message.content == TEXT
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert json.loads(response.read())["usage"]["prompt_tokens"] == PROMPT
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        chunks = list(response.parse())
    assert chunks[-1].usage is not None
    spans = llm_spans()
    assert [usage(s) for s in spans] == [EXPECTED] * 3
    assert sorted(closes.values()) == [1, 1, 1]


def test_async_create_stream_and_errors(aoai: openai.AsyncOpenAI, closes: Counter[str]) -> None:
    async def main() -> str:
        plain = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES)
        stream = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        with pytest.raises(openai.RateLimitError):
            await aoai.chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_headers={"x-fake-mode": "error-429"}
            )
        await aoai.embeddings.create(model="text-embedding-3-small", input="hi")
        await aoai.close()
        assert plain.choices[0].message.content == text
        return text

    assert asyncio.run(main()) == TEXT
    plain, streamed, failed, embedded = llm_spans()
    assert usage(plain) == usage(streamed) == EXPECTED
    assert failed.status == "ERROR"
    assert embedded.span_type == "EMBEDDING"
    assert sorted(closes.values()) == [1, 1, 1, 1]


def test_three_concurrent_async_streams_in_one_trace(aoai: openai.AsyncOpenAI) -> None:
    questions = ["One?", "Two words?", "Three whole words?"]

    @sessiontrace.trace
    async def fan_out() -> list[str]:
        async def ask(question: str) -> str:
            stream = await aoai.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": question}],
                stream=True,
                extra_headers={"x-fake-mode": "slow"},
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        return list(await asyncio.gather(*(ask(q) for q in questions)))

    async def main() -> list[str]:
        try:
            return await fan_out()
        finally:
            await aoai.close()

    with sessiontrace.user_session(user_id="u-async", session_id="s-async"):
        answers = asyncio.run(main())
    assert answers == [fake_llm.answer([{"role": "user", "content": q}]) for q in questions]
    [trace] = traces()
    root = trace.data.spans[0]
    children = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(children) == 3
    assert {c.parent_id for c in children} == {root.span_id}
    by_question = {c.inputs["messages"][0]["content"]: usage(c) for c in children}
    for question, answer in zip(questions, answers, strict=True):
        messages = [{"role": "user", "content": question}]
        assert by_question[question]["input_tokens"] == fake_llm.prompt_tokens(messages)
        assert by_question[question]["output_tokens"] == fake_llm.tokens(answer)
    assert trace.info.trace_metadata["mlflow.trace.user"] == "u-async"
    assert_no_open_spans()


def test_async_stream_closed_early_ends_once(
    aoai: openai.AsyncOpenAI, closes: Counter[str]
) -> None:
    async def main() -> None:
        stream = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async for _ in stream:
            break
        await stream.close()
        await aoai.close()

    asyncio.run(main())
    gc.collect()
    span = only_span()
    assert span.attributes["sessiontrace.llm.stream_incomplete"] is True
    assert list(closes.values()) == [1]
    assert_no_open_spans()


def test_responses_streamed_function_call(oai: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    events = list(
        oai.responses.create(
            model=MODEL,
            input=RESPONSES_INPUT,
            tools=[tool],
            stream=True,
            extra_headers={"x-fake-mode": "tool-call"},
        )
    )
    assert events[-1].type == "response.completed"
    span = only_span()
    [item] = span.outputs["output"]
    assert item["type"] == "function_call"
    assert json.loads(item["arguments"]) == {"city": "Paris"}
    assert span.attributes["mlflow.chat.tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    assert usage(span)["input_tokens"] == R_EXPECTED["input_tokens"]
