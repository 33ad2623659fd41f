"""An OpenInference-instrumented OpenAI app, exported with the official OTLP/HTTP
exporter into our receiver (real uvicorn, real openai SDK against the loopback fake
LLM server): its sessions, users, model and tokens show up in search_traces and in
the UI's session JSON."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openinference.instrumentation import using_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import sessiontrace
from sessiontrace._store._rows import llm_totals

from .receive_support import TOKEN, receiver

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import fake_llm

pytestmark = pytest.mark.backends


@pytest.fixture
def llm() -> Iterator[fake_llm.FakeLLMServer]:
    with fake_llm.FakeLLMServer() as server:
        yield server


def test_openinference_openai_calls_show_sessions_users_and_tokens(
    db: str, llm: fake_llm.FakeLLMServer
) -> None:
    with receiver(db, token=TOKEN) as url:
        provider = TracerProvider()
        exporter = OTLPSpanExporter(
            endpoint=url + "/v1/traces", headers={"authorization": f"Bearer {TOKEN}"}
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        usages = []
        try:
            with openai.OpenAI(base_url=llm.base_url, api_key="fake", max_retries=0) as client:
                for question in ("What is ML?", "And deep learning?"):
                    with using_attributes(session_id="oi-session", user_id="oi-user"):
                        answer = client.chat.completions.create(
                            model=fake_llm.MODEL,
                            messages=[{"role": "user", "content": question}],
                        )
                    assert answer.usage is not None
                    usages.append(answer.usage)
        finally:
            instrumentor.uninstrument()
            provider.shutdown()

        traces = sessiontrace.search_traces(
            "session = 'oi-session'", order_by=["timestamp ASC"], return_type="list"
        )
        assert len(traces) == 2
        for trace, usage in zip(traces, usages, strict=True):
            assert (trace.info.user_id, trace.info.state) == ("oi-user", "OK")
            (span,) = trace.data.spans
            assert span.span_type == "LLM"
            assert span.attributes["mlflow.llm.model"] == fake_llm.MODEL
            assert span.attributes["mlflow.llm.provider"] == "openai"
            assert span.inputs["messages"][0]["role"] == "user"  # input.value, JSON
            assert span.outputs["choices"][0]["message"]["content"]
            totals = llm_totals(trace.info)
            assert totals["llm_calls"] == 1
            assert totals["input_tokens"] == usage.prompt_tokens
            assert totals["output_tokens"] == usage.completion_tokens
            assert totals["total_tokens"] == usage.total_tokens

        # What the Sessions page reads.
        headers = {"authorization": f"Bearer {TOKEN}"}
        r = httpx.get(url + "/api/session", params={"id": "oi-session"}, headers=headers)
        assert r.status_code == 200, r.text
        summary = r.json()["summary"]
        assert summary["turns"] == 2 and summary["user_ids"] == ["oi-user"]
        assert summary["total_tokens"] == sum(u.total_tokens for u in usages)
        assert len(r.json()["turns"]) == 2
        r = httpx.get(url + "/api/user", params={"id": "oi-user"}, headers=headers)
        assert r.status_code == 200, r.text
