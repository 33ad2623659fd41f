"""Finished-trace records: what tracing hands to the pipeline, and what sinks get."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _runtime
from sessiontrace._export._wire import encode_batch
from sessiontrace._records import SpanRecord, TagChange, TraceRecord
from sessiontrace.server._ingest import parse_batch
from sessiontrace.testing import capture_traces

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """What tracing submits to the pipeline (which still gets it)."""
    items: list[Any] = []
    real = _runtime.submit

    def spy(item: Any) -> None:
        items.append(item)
        real(item)

    monkeypatch.setattr(_runtime, "submit", spy)
    yield items


@sessiontrace.trace
def helper(message: str) -> str:
    return message.upper()


@sessiontrace.trace(span_type="CHAIN", attributes={"k": 1})
def chat(message: str) -> str:
    sessiontrace.update_current_trace(
        metadata={"mlflow.trace.user": "u1", "app": "x"},
        tags={"topic": "t"},
        client_request_id="req-1",
    )
    return helper(message)


def test_a_finished_trace_is_one_record_equal_to_what_was_traced(submitted: list[Any]) -> None:
    with capture_traces(deterministic=True):
        chat("hi")
        (record,) = submitted
        md = dict(_runtime.base_metadata(), **{"mlflow.trace.user": "u1", "app": "x"})
    trace_id = "tr-" + "0" * 31 + "1"
    root = SpanRecord(
        trace_id=trace_id,
        span_id="0000000000000001",
        parent_id=None,
        name="chat",
        span_type="CHAIN",
        start_ns=T0 + 1 * MS,
        end_ns=T0 + 4 * MS,
        status="OK",
        status_message="",
        inputs_json='{"message":"hi"}',
        outputs_json='"HI"',
        attributes={"k": 1},
        events=None,
    )
    child = SpanRecord(
        trace_id=trace_id,
        span_id="0000000000000002",
        parent_id="0000000000000001",
        name="helper",
        span_type="UNKNOWN",
        start_ns=T0 + 2 * MS,
        end_ns=T0 + 3 * MS,
        status="OK",
        status_message="",
        inputs_json='{"message":"hi"}',
        outputs_json='"HI"',
        attributes=None,
        events=None,
    )
    assert type(record) is TraceRecord
    assert record == TraceRecord(
        trace_id=trace_id,
        start_ns=T0 + 1 * MS,
        end_ns=T0 + 4 * MS,
        state="OK",
        root=root,
        spans=(root, child),
        metadata=md,
        tags={"topic": "t"},
        request_preview=None,
        response_preview=None,
        client_request_id="req-1",
    )
    assert type(record.root) is SpanRecord and record.root is record.spans[0]


def test_an_error_or_an_override_sets_the_state(submitted: list[Any]) -> None:
    @sessiontrace.trace
    def failing() -> None:
        raise ValueError("no")

    @sessiontrace.trace
    def overridden() -> None:
        sessiontrace.update_current_trace(state="ERROR")

    with pytest.raises(ValueError):
        failing()
    overridden()
    first, second = submitted
    assert (first.state, first.root.status) == ("ERROR", "ERROR")
    assert first.root.status_message == "ValueError: no"
    assert first.root.events is not None and first.root.events[0]["name"] == "exception"
    assert (second.state, second.root.status) == ("ERROR", "OK")


def test_records_are_immutable(submitted: list[Any]) -> None:
    chat("hi")
    (record,) = submitted
    for obj, field in (
        (record, "state"),
        (record.root, "name"),
        (TagChange("t", "k", "v"), "value"),
    ):
        with pytest.raises(AttributeError):
            setattr(obj, field, "changed")
    with pytest.raises(TypeError):
        record.spans[0] = record.spans[1]  # type: ignore[index]
    assert not hasattr(record, "__dict__") and not hasattr(record.root, "__dict__")


def test_a_span_changed_after_its_record_was_made_leaves_the_record_alone(
    submitted: list[Any],
) -> None:
    with sessiontrace.start_span("root") as root, sessiontrace.start_span("child") as child:
        child.set_attribute("a", 1)
        child.add_event("e1")
    (record,) = submitted
    recorded = record.spans[1]
    child.set_attribute("b", 2)  # after the trace ended: nowhere to go, and no leak
    child.add_event("e2")
    root.set_attribute("c", 3)
    assert recorded.attributes == {"a": 1}
    assert [e["name"] for e in recorded.events or []] == ["e1"]
    assert record.root.attributes is None
    assert child.attributes == {"a": 1, "b": 2}  # the live span still sees its own edits


def test_a_late_span_arrives_as_a_span_record_and_lands_in_the_store(
    submitted: list[Any],
) -> None:
    release = threading.Event()
    opened = threading.Event()
    done = threading.Event()

    def job() -> None:
        with sessiontrace.start_span("job") as span:
            opened.set()
            release.wait(5)
            span.set_attribute("phase", "before the end")  # in place: not ended yet
            span.set_outputs("late")
        done.set()

    with sessiontrace.start_span("root"):
        threading.Thread(target=sessiontrace.wrap_with_context(job)).start()
        assert opened.wait(5)
    trace_record = submitted[0]
    running = trace_record.spans[1]
    assert (running.name, running.end_ns, running.attributes) == ("job", None, None)
    release.set()
    assert done.wait(5)
    sessiontrace.flush()
    late = submitted[1]
    assert type(late) is SpanRecord
    assert (late.trace_id, late.span_id) == (trace_record.trace_id, running.span_id)
    assert late.end_ns is not None and late.outputs_json == '"late"'
    assert late.attributes == {"phase": "before the end"}
    assert running.attributes is None  # the trace's record kept what it had
    stored = sessiontrace.get_trace(trace_record.trace_id)
    assert stored is not None
    job_span = {s.name: s for s in stored.data.spans}["job"]
    assert (job_span.outputs, job_span.attributes) == ("late", {"phase": "before the end"})


def test_a_running_spans_attributes_are_copied_into_the_trace_record(
    submitted: list[Any],
) -> None:
    # LLM calls fill their span's attributes in place until the span ends.
    release = threading.Event()
    opened = threading.Event()

    def job() -> None:
        with sessiontrace.start_span("llm", attributes={"model": "m"}) as span:
            opened.set()
            release.wait(5)
            span._attributes["usage"] = 1  # type: ignore[index]

    with sessiontrace.start_span("root"):
        threading.Thread(target=sessiontrace.wrap_with_context(job)).start()
        assert opened.wait(5)
    release.set()
    sessiontrace.flush()
    trace_record, late = submitted[0], submitted[1]
    assert trace_record.spans[1].attributes == {"model": "m"}
    assert late.attributes == {"model": "m", "usage": 1}


def test_tag_edits_after_the_trace_are_tag_changes(
    submitted: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runtime, "store_is_local", lambda: False)  # as with an http URI

    @sessiontrace.trace
    def app() -> str:
        return "x"

    app()
    trace_id = submitted[0].trace_id
    sessiontrace.set_trace_tag(trace_id, "k", "v")
    sessiontrace.delete_trace_tag(trace_id, "k")
    assert submitted[1:] == [TagChange(trace_id, "k", "v"), TagChange(trace_id, "k", None)]


def test_with_attributes_and_with_spans_copy() -> None:
    span = SpanRecord("t", "s1", None, "n", "LLM", 1, 2, "OK", "", None, None, {"a": 1}, None)
    other = span.with_attributes({"a": 2})
    assert (span.attributes, other.attributes) == ({"a": 1}, {"a": 2})
    assert other._replace(attributes={"a": 1}) == span
    trace = TraceRecord("t", 1, 2, "OK", span, (span,), {}, {}, None, None, None)
    moved = trace.with_spans((other,))
    assert moved.root is other and moved.spans == (other,)
    assert trace.root is span


def test_the_wire_carries_records_there_and_back(submitted: list[Any]) -> None:
    with sessiontrace.start_span("root") as root:
        root.set_inputs({"q": "é"})
        root.set_attribute("n", 1.5)
        with sessiontrace.start_span("child") as child:
            child.record_exception(RuntimeError("boom"))
    submitted.append(TagChange(submitted[0].trace_id, "k", None))
    decoded = parse_batch(encode_batch(submitted), max_items=10)
    assert decoded == submitted
    assert [type(i) for i in decoded] == [TraceRecord, TagChange]


def test_pricing_returns_new_records_and_leaves_the_others_as_they_are() -> None:
    from sessiontrace.llm._keys import COST, MODEL, USAGE
    from sessiontrace.llm._pricing import price_items

    sessiontrace.set_model_price("acme-1", input_per_mtok=1, output_per_mtok=1)
    usage = {"input_tokens": 10**6, "output_tokens": 0, "total_tokens": 10**6}
    llm = SpanRecord(
        "t",
        "s2",
        "s1",
        "llm",
        "LLM",
        1,
        2,
        "OK",
        "",
        None,
        None,
        {USAGE: usage, MODEL: "acme-1"},
        None,
    )
    plain = SpanRecord("t", "s1", None, "root", "CHAIN", 1, 3, "OK", "", None, None, None, None)
    trace = TraceRecord("t", 1, 3, "OK", plain, (plain, llm), {}, {}, None, None, None)
    untouched = TraceRecord("u", 1, 3, "OK", plain, (plain,), {}, {}, None, None, None)
    tag = TagChange("t", "k", "v")
    priced_trace, priced_late, same, same_tag = price_items([trace, llm, untouched, tag])
    assert priced_trace.spans[1].attributes[COST]["total_cost"] == 1.0
    assert priced_late.attributes[COST]["total_cost"] == 1.0
    assert priced_trace.spans[0] is plain and priced_trace.root is plain
    assert COST not in (llm.attributes or {})  # the original record is unchanged
    assert same is untouched and same_tag is tag


def test_field_order_is_fixed() -> None:
    # _store._rows unpacks records in this order (cheaper than reading named fields).
    assert SpanRecord._fields == (
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "span_type",
        "start_ns",
        "end_ns",
        "status",
        "status_message",
        "inputs_json",
        "outputs_json",
        "attributes",
        "events",
    )
    assert TraceRecord._fields == (
        "trace_id",
        "start_ns",
        "end_ns",
        "state",
        "root",
        "spans",
        "metadata",
        "tags",
        "request_preview",
        "response_preview",
        "client_request_id",
    )
