"""The golden round trip: traces made by sessiontrace, sent by its own OTLP exporter
(configure(otlp_endpoint=...)) to another sessiontrace's POST /v1/traces (a real
uvicorn server on its own store), read back equal, field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace._config import parse_tracking_uri
from sessiontrace._store import open_location
from sessiontrace._store._rows import llm_totals

from .receive_support import receiver, wait_for


def _make_traces() -> list[str]:
    ids = []

    @sessiontrace.trace(span_type="CHAIN")
    def turn(message: str, n: int) -> dict[str, Any]:
        sessiontrace.update_current_trace(
            tags={"query_category": "chat", "n": str(n)},
            metadata={"app_version": "2.1", "mlflow.source.name": "shop.py"},
            client_request_id=f"req-{n}",
        )
        with sessiontrace.start_span("retrieve", span_type="RETRIEVER") as span:
            span.set_inputs({"query": message, "k": 3})
            span.set_outputs([{"doc": "a", "score": 0.5}, {"doc": "b", "score": None}])
            span.set_attributes({"empty": None, "nested": {"x": [1, 2.5, True, "s"]}})
            span.add_event("hit", {"i": 1, "tags": ["a", "b"]})
        with sessiontrace.start_span("llm", span_type="CHAT_MODEL") as span:
            span.set_inputs({"messages": [{"role": "user", "content": message}]})
            span.set_attributes(
                {
                    "mlflow.chat.tokenUsage": {
                        "input_tokens": 11,
                        "output_tokens": 7,
                        "total_tokens": 18,
                    },
                    "mlflow.llm.model": "gpt-4o-mini",
                    "mlflow.llm.provider": "openai",
                }
            )
            span.set_outputs("plain text answer")
        ids.append(sessiontrace.get_last_active_trace_id() or "")
        return {"answer": f"answer {n}", "unicode": "héllo ✓"}

    @sessiontrace.trace
    def failing() -> None:
        raise ValueError("boom")

    with sessiontrace.user_session(user_id="golden-user", session_id="golden-session"):
        for n in range(3):
            turn(f"question {n}", n)
            ids[-1] = sessiontrace.get_last_active_trace_id() or ""
        with pytest.raises(ValueError):
            failing()
        ids.append(sessiontrace.get_last_active_trace_id() or "")
    return ids


def _same_span(a: Any, b: Any) -> None:
    for field in (
        "span_id",
        "parent_id",
        "name",
        "span_type",
        "start_time_ns",
        "end_time_ns",
        "status",
        "inputs",
        "outputs",
        "attributes",
    ):
        assert getattr(b, field) == getattr(a, field), (a.name, field)
    assert [(e.name, e.timestamp_ns, e.attributes) for e in b.events] == [
        (e.name, e.timestamp_ns, e.attributes) for e in a.events
    ], a.name
    if a.status == "ERROR":
        assert b.status_message == a.status_message


def test_sessiontrace_to_otlp_to_sessiontrace_loses_nothing(
    tmp_path: Path, tracking_uri: str
) -> None:
    target = tmp_path / "received.db"
    with receiver(str(target)) as url:
        sessiontrace.configure(
            tracking_uri=tracking_uri, flush_interval=0.01, otlp_endpoint=url + "/v1/traces"
        )
        ids = _make_traces()
        sessiontrace.flush()
        received = open_location(parse_tracking_uri(str(target)))
        try:
            got = wait_for(
                lambda: len(received.load_traces(ids)) == len(ids) and received.load_traces(ids)
            )
            assert got, "the receiver did not store every trace"
            local = sessiontrace._runtime.get_store().load_traces(ids)
            assert [t.info.trace_id for t in local] == ids
            for mine, theirs in zip(local, got, strict=True):
                a, b = mine.info, theirs.info
                for field in (
                    "trace_id",
                    "request_time",
                    "execution_duration",
                    "state",
                    "name",
                    "trace_metadata",
                    "tags",
                    "client_request_id",
                    "request_preview",
                    "response_preview",
                ):
                    assert getattr(b, field) == getattr(a, field), field
                assert llm_totals(b) == llm_totals(a)
                assert len(theirs.data.spans) == len(mine.data.spans)
                for x, y in zip(
                    sorted(mine.data.spans, key=lambda s: s.span_id),
                    sorted(theirs.data.spans, key=lambda s: s.span_id),
                    strict=True,
                ):
                    _same_span(x, y)
        finally:
            received.close()
    assert got[0].info.user_id == "golden-user" and got[0].info.session_id == "golden-session"
    assert got[-1].info.state == "ERROR"
