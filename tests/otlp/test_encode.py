"""Records -> ExportTraceServiceRequest: the mapping table, and the records OTLP cannot
carry as they are (unfinished spans, late spans, tag edits, odd ids and values)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sessiontrace._otlp import _keys as k
from sessiontrace._otlp._encode import encode_request, otlp_span_id, otlp_trace_id, shorten_id
from sessiontrace._records import SpanRecord, TagChange, TraceRecord

TRACE = "tr-" + "ab" * 16


def span(span_id: str, parent: str | None, **fields: Any) -> SpanRecord:
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": span_id,
        "parent_id": parent,
        "name": f"s{span_id}",
        "span_type": "CHAIN",
        "start_ns": 10,
        "end_ns": 20,
        "status": "OK",
        "status_message": "",
        "inputs_json": None,
        "outputs_json": None,
        "attributes": None,
        "events": None,
    }
    values.update(fields)
    return SpanRecord(**values)


def trace(*spans: SpanRecord, **fields: Any) -> TraceRecord:
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "start_ns": 10,
        "end_ns": 20,
        "state": "OK",
        "root": spans[0],
        "spans": spans,
        "metadata": {"mlflow.trace.session": "s", "mlflow.trace.user": "u"},
        "tags": {},
        "request_preview": None,
        "response_preview": None,
        "client_request_id": None,
    }
    values.update(fields)
    return TraceRecord(**values)


def decoded(request: Any) -> list[dict[str, Any]]:
    """The spans, with attributes as plain Python values."""

    def value(v: Any) -> Any:
        which = v.WhichOneof("value")
        if which == "array_value":
            return [value(x) for x in v.array_value.values]
        if which == "kvlist_value":
            return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
        return getattr(v, which) if which else None

    return [
        {
            "span": s,
            "attributes": {kv.key: value(kv.value) for kv in s.attributes},
            "events": [
                (e.name, {kv.key: value(kv.value) for kv in e.attributes}) for e in s.events
            ],
        }
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def test_root_carries_name_tags_metadata_and_status() -> None:
    root = span(
        "00000000000000a1",
        None,
        status="ERROR",
        status_message="boom",
        inputs_json='{"q": 1}',
        outputs_json="[1, 2]",
        events=[
            {
                "name": "exception",
                "timestamp_ns": 15,
                "attributes": {"exception.type": "ValueError", "exception.message": "boom"},
            }
        ],
    )
    record = trace(
        root,
        state="ERROR",
        tags={"env": "prod", "team": "a"},
        metadata={"mlflow.trace.session": "s", "mlflow.trace.user": "u", "app_version": "1.0"},
        client_request_id="req-1",
    )
    request, stats = encode_request([record], resource={"service.name": "svc"})
    (only,) = decoded(request)
    a = only["attributes"]
    assert a[k.MLFLOW_TRACE_NAME_TAG] == a[k.LANGFUSE_TRACE_NAME] == "s00000000000000a1"
    assert a["mlflow.traceTag.env"] == "prod" and a["mlflow.traceTag.team"] == "a"
    assert a[k.TAG_TAGS] == ["env:prod", "team:a"]
    assert a["sessiontrace.metadata.app_version"] == "1.0"
    assert a["langfuse.trace.metadata.app_version"] == "1.0"
    assert json.loads(a[k.METADATA_JSON]) == {"app_version": "1.0"}
    assert "sessiontrace.metadata.mlflow.trace.session" not in a  # travels as session.id
    assert a[k.CLIENT_REQUEST_ID] == "req-1"
    assert (a[k.INPUT_VALUE], a[k.INPUT_MIME_TYPE]) == ('{"q": 1}', "application/json")
    assert (a[k.OUTPUT_VALUE], a[k.OUTPUT_MIME_TYPE]) == ("[1, 2]", "application/json")
    s = only["span"]
    assert (s.status.code, s.status.message) == (2, "boom")
    assert s.trace_id == bytes.fromhex("ab" * 16) and s.parent_span_id == b""
    assert s.flags == k.FLAG_HAS_IS_REMOTE
    assert only["events"] == [
        ("exception", {"exception.type": "ValueError", "exception.message": "boom"})
    ]
    resource = request.resource_spans[0].resource.attributes
    assert [(kv.key, kv.value.string_value) for kv in resource] == [("service.name", "svc")]
    assert (stats.traces, stats.spans) == (1, 1)


def test_span_types_and_llm_attributes() -> None:
    root = span("00000000000000a1", None)
    llm = span(
        "00000000000000a2",
        "00000000000000a1",
        span_type="LLM",
        attributes={
            "mlflow.llm.model": "m",
            "mlflow.llm.provider": "openai",
            "mlflow.chat.tokenUsage": json.dumps({"input_tokens": 5, "output_tokens": 6}),
        },
    )
    tool = span("00000000000000a3", "00000000000000a1", span_type="TOOL")
    custom = span("00000000000000a4", "00000000000000a1", span_type="MY_OWN")
    request, _ = encode_request([trace(root, llm, tool, custom)])
    by_name = {d["span"].name: d["attributes"] for d in decoded(request)}
    a = by_name["s00000000000000a2"]
    assert (a[k.OPENINFERENCE_SPAN_KIND], a[k.MLFLOW_SPAN_TYPE]) == ("LLM", "LLM")
    assert a[k.GENAI_PROVIDER_NAME] == a[k.LLM_PROVIDER] == "openai"
    assert (a[k.GENAI_USAGE_INPUT_TOKENS], a[k.LLM_TOKEN_COUNT_COMPLETION]) == (5, 6)
    assert by_name["s00000000000000a3"][k.OPENINFERENCE_SPAN_KIND] == "TOOL"
    assert by_name["s00000000000000a4"][k.OPENINFERENCE_SPAN_KIND] == "CHAIN"
    assert by_name["s00000000000000a4"][k.MLFLOW_SPAN_TYPE] == "MY_OWN"
    for attributes in by_name.values():
        assert (attributes[k.SESSION_ID], attributes[k.USER_ID]) == ("s", "u")


def test_attribute_values_keep_their_shape() -> None:
    values = {
        "str": "x",
        "int": 3,
        "big": 2**70,
        "float": 1.5,
        "bool": True,
        "none": None,
        "list": [1, "a", None],
        "dict": {"a": {"b": [1]}},
        "empty": {},
    }
    request, _ = encode_request([trace(span("00000000000000a1", None, attributes=values))])
    (only,) = decoded(request)
    a = only["attributes"]
    assert a["big"] == str(2**70)  # beyond int64: kept as text, never an overflow
    assert {key: a[key] for key in values if key != "big"} == {
        **{key: v for key, v in values.items() if key != "big"}
    }


def test_unfinished_late_and_tag_records() -> None:
    root = span("00000000000000a1", None)
    running = span("00000000000000a2", "00000000000000a1", end_ns=None)
    late = span("00000000000000a2", "00000000000000a1", end_ns=40)
    request, stats = encode_request([trace(root, running), late, TagChange(TRACE, "k", "v")])
    spans = decoded(request)
    # The running span is left out of its trace and sent when it ends, as a late span.
    assert [d["span"].end_time_unix_nano for d in spans] == [20, 40]
    assert (stats.unfinished_spans, stats.late_spans, stats.tag_changes_skipped) == (1, 1, 1)
    with pytest.raises(TypeError):
        encode_request([object()])


def test_odd_ids_are_hashed_not_rejected() -> None:
    assert otlp_trace_id("tr-" + "0f" * 16) == bytes.fromhex("0f" * 16)
    assert len(otlp_trace_id("imported-trace-7")) == 16
    assert otlp_trace_id("imported-trace-7") == otlp_trace_id("imported-trace-7")
    assert len(otlp_span_id("zz")) == 8 and otlp_span_id("00000000000000ff")[-1] == 0xFF


@pytest.mark.parametrize("limit", [20, 64, 250])
def test_shorten_id(limit: int) -> None:
    assert shorten_id("short", limit) == "short"
    long_a, long_b = "a" * 400, "a" * 399 + "b"
    assert len(shorten_id(long_a, limit)) == limit
    assert shorten_id(long_a, limit) != shorten_id(long_b, limit)
    assert shorten_id(long_a, limit) == shorten_id(long_a, limit)


def test_long_ids_shortened_and_kept_in_full() -> None:
    long_session = "s" * 300
    record = trace(
        span("00000000000000a1", None),
        metadata={"mlflow.trace.session": long_session, "mlflow.trace.user": "u" * 30},
    )
    request, stats = encode_request([record], max_id_length=25)
    (only,) = decoded(request)
    a = only["attributes"]
    assert a[k.SESSION_ID] == a[k.GENAI_CONVERSATION_ID] == shorten_id(long_session, 25)
    assert a[k.USER_ID] == shorten_id("u" * 30, 25)
    assert a["sessiontrace.metadata.mlflow.trace.session"] == long_session
    assert a["sessiontrace.metadata.mlflow.trace.user"] == "u" * 30
    assert stats.ids_shortened == 2
    with pytest.raises(ValueError):
        encode_request([], max_id_length=5)
