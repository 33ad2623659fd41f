"""Turning autolog on and off, what `import sessiontrace` does, and what never reaches the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest

import sessiontrace
from sessiontrace.llm import _usage

from .conftest import API_KEY, fake_llm, llm_spans, only_span

MESSAGES = [{"role": "user", "content": "Hello"}]


def test_import_sessiontrace_imports_no_sdk() -> None:
    code = (
        "import sys, sessiontrace; sessiontrace.openai; sessiontrace.anthropic;"
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_autolog_twice_gives_one_span_per_call(oai: openai.OpenAI) -> None:
    sessiontrace.openai.autolog()
    sessiontrace.autolog()
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(llm_spans()) == 1


def test_disable_restores_the_originals_and_records_nothing(
    oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    patched = openai.resources.chat.completions.Completions.create
    sessiontrace.autolog(disable=True)
    restored = openai.resources.chat.completions.Completions
    assert patched is not restored.create
    assert getattr(restored.create, "__sessiontrace_original__", None) is None
    assert openai.Stream.close.__qualname__ == "Stream.close"
    assert anthropic.resources.messages.Messages.stream.__module__.startswith("anthropic")
    assert not hasattr(anthropic.resources.messages.Messages.stream, "__sessiontrace_original__")
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES)
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES) as s:
        s.get_final_text()
    assert llm_spans() == []
    # ... and on again: the same originals are wrapped, once.
    sessiontrace.autolog()
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(llm_spans()) == 1


def test_disable_puts_back_the_exact_function_objects() -> None:
    sessiontrace.autolog(disable=True)
    originals = (
        openai.resources.chat.completions.Completions.__dict__["create"],
        openai.resources.embeddings.AsyncEmbeddings.__dict__["create"],
        openai.Stream.__dict__["close"],
        anthropic.resources.messages.Messages.__dict__["stream"],
    )
    sessiontrace.autolog()
    assert openai.resources.chat.completions.Completions.__dict__["create"] is not originals[0]
    sessiontrace.autolog(disable=True)
    assert (
        openai.resources.chat.completions.Completions.__dict__["create"],
        openai.resources.embeddings.AsyncEmbeddings.__dict__["create"],
        openai.Stream.__dict__["close"],
        anthropic.resources.messages.Messages.__dict__["stream"],
    ) == originals
    assert all(
        a is b
        for a, b in zip(
            originals,
            (
                openai.resources.chat.completions.Completions.__dict__["create"],
                openai.resources.embeddings.AsyncEmbeddings.__dict__["create"],
                openai.Stream.__dict__["close"],
                anthropic.resources.messages.Messages.__dict__["stream"],
            ),
            strict=True,
        )
    )


def test_clients_made_before_autolog_are_covered(server: fake_llm.FakeLLMServer) -> None:
    sessiontrace.autolog(disable=True)
    early = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    sessiontrace.autolog()
    early.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert only_span().span_type == "CHAT_MODEL"


def test_keys_and_headers_never_reach_the_store(
    oai: openai.OpenAI, claude: anthropic.Anthropic, store_path: Path
) -> None:
    secret = "Bearer secret-xyz"
    headers = {"Authorization": secret, "X-Api-Key": "hdr-secret-777"}
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers)
    list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers=headers,
            extra_query={"api-key": "query-secret-555"},
        )
    )
    oai.embeddings.create(model="text-embedding-3-small", input="x", extra_headers=headers)
    claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, extra_headers=headers
    )
    spans = llm_spans()
    assert len(spans) == 4
    assert "extra_headers" not in spans[0].inputs
    sessiontrace.flush()
    sessiontrace._runtime.reset_for_tests()  # close the store: everything is in the file
    blob = b"".join(
        p.read_bytes() for p in store_path.parent.iterdir() if p.name.startswith(store_path.name)
    )
    assert b"Hello" in blob  # the file does hold the requests
    for needle in (API_KEY, "secret-xyz", "hdr-secret-777", "query-secret-555"):
        assert needle.encode() not in blob, needle


def test_instrumentation_failures_are_contained(
    oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiontrace.llm import _core

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(_core, "_open_span", broken)
    response = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert response.choices[0].message.content == fake_llm.answer(MESSAGES)
    assert sessiontrace.get_stats()["internal_errors"].get("llm.open") == 1


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "total_tokens": 15,
                "cache_read_input_tokens": 4,
                "reasoning_tokens": 2,
            },
        ),
        (
            {"input_tokens": 7, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 1}},
            {
                "input_tokens": 7,
                "output_tokens": 3,
                "total_tokens": 10,
                "cache_read_input_tokens": 1,
            },
        ),
        (None, None),
        ({"unrelated": 1}, None),
    ],
)
def test_openai_usage_table(usage: object, expected: object) -> None:
    assert _usage.openai_usage(usage) == expected


def test_anthropic_usage_adds_cache_back() -> None:
    raw = {"input_tokens": 60, "output_tokens": 20, "cache_read_input_tokens": 30,
           "cache_creation_input_tokens": 10}  # fmt: skip
    assert _usage.anthropic_usage(raw) == {
        "input_tokens": 100,
        "output_tokens": 20,
        "total_tokens": 120,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 10,
    }
    merged = _usage.merge_anthropic_usage(
        {"input_tokens": 60, "output_tokens": 1, "cache_read_input_tokens": 30},
        {"output_tokens": 20},
    )
    assert _usage.anthropic_usage(merged)["output_tokens"] == 20


def test_autolog_all_skips_an_sdk_it_cannot_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    from sessiontrace.llm import _anthropic

    def broken(*, disable: bool = False) -> None:
        raise ImportError("anthropic.resources.messages moved")

    sessiontrace.autolog(disable=True)
    with monkeypatch.context() as patch:
        patch.setattr(_anthropic, "autolog", broken)
        with pytest.warns(RuntimeWarning, match="anthropic calls are not traced"):
            assert sessiontrace.autolog() == ["openai"]
    assert hasattr(
        openai.resources.chat.completions.Completions.create, "__sessiontrace_original__"
    )
