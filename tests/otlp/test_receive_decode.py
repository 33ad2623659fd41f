"""The decoder alone: the attribute mapping of other tracers' conventions, and the
OTLP/JSON forms senders actually use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sessiontrace._otlp._decode import OtlpDecodeError, decode_json, decode_protobuf

from .receive_support import request, span


def _one(**attrs: Any) -> Any:
    decoded = decode_protobuf(request(span(1, 1, **attrs)))
    assert decoded.rejected == 0
    (only,) = decoded.spans
    return only


def test_phoenix_langfuse_and_mlflow_conventions() -> None:
    s = _one(
        **{
            "mlflow__spanType": '"RETRIEVER"',  # MLflow's JSON-quoted value
            "openinference__span__kind": "CHAIN",
            "mlflow__spanInputs": '{"q": 1}',
            "input__value": "ignored: mlflow.spanInputs wins",
            "tag__tags": "not a list",
            "metadata": json.dumps({"team": "search", "n": 3}),
            "langfuse__trace__metadata__env": "prod",
            "mlflow__traceTag__query_category": "chat",
            "mlflow__traceTag__mlflow__traceName": "named",
            "sessiontrace__client_request_id": "req-1",
            "langfuse__session__id": "lf-session",
            "session__id": "other-session",
        }
    )
    record = s.record
    assert (record.span_type, record.inputs_json) == ("RETRIEVER", '{"q": 1}')
    assert s.session_id == "lf-session"  # langfuse.session.id > session.id
    assert s.tags == {"query_category": "chat"}
    assert s.metadata == {"service.name": "shop", "team": "search", "n": "3", "env": "prod"}
    assert s.client_request_id == "req-1"
    assert record.attributes == {"tag.tags": "not a list"}


def test_genai_and_openinference_llm_attributes() -> None:
    genai = _one(
        gen_ai__operation__name="chat",
        gen_ai__request__model="m-req",
        gen_ai__response__model="m-resp",
        gen_ai__provider__name="acme",
        gen_ai__usage__input_tokens=5,
        gen_ai__usage__output_tokens=7,
        gen_ai__input__messages=json.dumps([{"role": "user", "content": "hi"}]),
    ).record
    assert genai.span_type == "CHAT_MODEL"
    assert json.loads(genai.inputs_json or "") == [{"role": "user", "content": "hi"}]
    attrs = genai.attributes or {}
    assert attrs["mlflow.llm.model"] == "m-resp" and attrs["mlflow.llm.provider"] == "acme"
    assert attrs["mlflow.chat.tokenUsage"] == {
        "input_tokens": 5,
        "output_tokens": 7,
        "total_tokens": 12,
    }
    oi = _one(
        openinference__span__kind="LLM",
        llm__model_name="m",
        llm__token_count__prompt=3,
        llm__token_count__completion=4,
        llm__token_count__total=9,
        llm__cost__total=0.5,
        llm__cost__prompt=0.2,
        llm__cost__completion=0.3,
        output__value="not json",
        output__mime_type="application/json",
    ).record
    attrs = oi.attributes or {}
    assert attrs["mlflow.chat.tokenUsage"]["total_tokens"] == 9
    assert attrs["mlflow.llm.cost"] == {"input_cost": 0.2, "output_cost": 0.3, "total_cost": 0.5}
    assert oi.outputs_json == '"not json"'  # a mime type that lies: kept as a string
    # A model name alone on a span that is not an LLM call is just an attribute.
    tool = _one(openinference__span__kind="TOOL", llm__model_name="m").record
    assert "mlflow.llm.model" not in (tool.attributes or {})


def _json_request(span: dict[str, Any], **resource: Any) -> bytes:
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    ).encode()


def test_json_forms() -> None:
    base = {"name": "s", "startTimeUnixNano": 1, "endTimeUnixNano": 2}
    # protobuf's JSON mapping (base64 ids, enum names), snake_case keys
    tid = "AAAAAAAAAAAAAAAAAAAAAQ=="
    decoded = decode_json(
        _json_request(
            {
                **base,
                "trace_id": tid,
                "span_id": "AAAAAAAAAAE=",
                "status": {"code": "STATUS_CODE_ERROR"},
            }
        )
    )
    (s,) = decoded.spans
    assert s.record.trace_id == "tr-" + "00" * 15 + "01" and s.record.status == "ERROR"
    # attribute values of every kind, NaN, bytes, an empty value (OTLP's null)
    attrs = [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "b", "value": {"bytesValue": "AAE="}},
        {"key": "none", "value": {}},
        {"key": "big", "value": {"intValue": "9007199254740993"}},
    ]
    decoded = decode_json(
        _json_request(
            {**base, "traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "attributes": attrs}
        )
    )
    assert decoded.spans[0].record.attributes == {
        "nan": "nan",
        "b": "AAE=",
        "none": None,
        "big": 9007199254740993,
    }
    # spans that break the spec are counted, not fatal
    bad = [
        {**base, "traceId": "0" * 32, "spanId": "0" * 15 + "1"},
        {**base, "traceId": "0" * 31 + "1", "spanId": "xyz"},
        {**base, "traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "startTimeUnixNano": "soon"},
        {**base, "traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "attributes": "nope"},
        "not an object",
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": bad}]}]}).encode()
    decoded = decode_json(body)
    assert (decoded.spans, decoded.rejected) == ([], 5)
    for body in (b"[]", b'{"resourceSpans": 3}', b'{"resourceSpans": [1]}', b"\xff"):
        with pytest.raises(OtlpDecodeError):
            decode_json(body)
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(b"\x0a\xff\xff")
