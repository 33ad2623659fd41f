"""POST /v1/traces against a real uvicorn server: the official OpenTelemetry SDK's
OTLP/HTTP exporter in, sessions, users and tokens out; traces that arrive in
pieces; and the spec's answers to bad requests. Each test runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import Compression, OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import sessiontrace
from sessiontrace._store._rows import llm_totals

from .receive_support import TOKEN, receiver, request, span, trace_id, wait_for

pytestmark = pytest.mark.backends

PROTO = {"content-type": "application/x-protobuf"}


@pytest.fixture
def url(db: str) -> Iterator[str]:
    with receiver(db) as base:
        yield base


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/traces", content=body, headers=headers or PROTO, timeout=30)


def _trace(tid: str) -> Any:
    return sessiontrace.get_trace(tid)


def _provider(url: str, processor: type, **exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    out = OTLPSpanExporter(endpoint=url + "/v1/traces", **exporter)
    provider.add_span_processor(processor(out))
    return provider


@pytest.mark.parametrize("processor", [SimpleSpanProcessor, BatchSpanProcessor])
def test_otel_sdk_exporter_lands_sessions_users_and_tokens(url: str, processor: type) -> None:
    # SimpleSpanProcessor: one POST a span, every child before its root.
    provider = _provider(url, processor, compression=Compression.Gzip)
    tracer = provider.get_tracer("app")
    turns = [("sess-A", "user-1", "What is ML?"), ("sess-A", "user-1", "And AI?")]
    turns.append(("sess-B", "user-2", "Hello"))
    for session, user, question in turns:
        with (
            tracer.start_as_current_span(
                "chat_turn",
                attributes={
                    "session.id": session,
                    "user.id": user,
                    "input.value": json.dumps({"message": question}),
                    "input.mime_type": "application/json",
                    "output.value": "an answer",
                    "openinference.span.kind": "CHAIN",
                },
            ),
            tracer.start_as_current_span(
                "llm_call",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 12,
                    "gen_ai.usage.output_tokens": 30,
                },
            ),
        ):
            pass
    provider.shutdown()  # flushes

    traces = sessiontrace.search_traces("session = 'sess-A'", return_type="list")
    assert len(traces) == 2
    for trace in traces:
        info = trace.info
        assert (info.state, info.name, info.user_id) == ("OK", "chat_turn", "user-1")
        assert info.trace_metadata["service.name"] == "shop"
        root, llm = trace.data.spans
        assert (root.span_type, root.outputs, root.parent_id) == ("CHAIN", "an answer", None)
        assert (llm.span_type, llm.parent_id) == ("CHAT_MODEL", root.span_id)
        assert llm.attributes["mlflow.llm.model"] == "gpt-4o-mini"
        totals = llm_totals(info)
        assert (totals["input_tokens"], totals["output_tokens"], totals["llm_calls"]) == (12, 30, 1)
    assert {t.info.request_preview for t in traces} == {
        '{"message": "What is ML?"}',
        '{"message": "And AI?"}',
    }
    (other,) = sessiontrace.search_traces("user = 'user-2'", return_type="list")
    assert other.info.session_id == "sess-B"
    sessions = {s.session_id: s for s in sessiontrace.list_sessions()}
    assert (sessions["sess-A"].turns, sessions["sess-A"].user_ids) == (2, ("user-1",))
    assert sessions["sess-A"].total_tokens == 84
    users = {u.user_id: u for u in sessiontrace.list_users()}
    assert set(users) == {"user-1", "user-2"}


def test_json_exporter_shape_and_other_id_keys(url: str) -> None:
    # OTLP/JSON as the spec writes it: hex ids, camelCase, int64 as strings, enum ints;
    # the session only as gen_ai.conversation.id on a child, the user as langfuse.user.id.
    tid, root, child = "5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174", "EEE19B7EC3C1B173"
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": tid,
                                "spanId": child,
                                "parentSpanId": root,
                                "name": "tool",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000100000000",
                                "endTimeUnixNano": 1700000000200000000,
                                "attributes": [
                                    {
                                        "key": "gen_ai.conversation.id",
                                        "value": {"stringValue": "conv-9"},
                                    },
                                    {"key": "langfuse.user.id", "value": {"stringValue": "u-9"}},
                                    {
                                        "key": "openinference.span.kind",
                                        "value": {"stringValue": "TOOL"},
                                    },
                                    {"key": "n", "value": {"intValue": "-7"}},
                                    {"key": "f", "value": {"doubleValue": 0.5}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {
                                        "key": "list",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": 2}]
                                            }
                                        },
                                    },
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "x", "value": {"stringValue": "y"}}
                                                ]
                                            }
                                        },
                                    },
                                ],
                                "events": [
                                    {"timeUnixNano": "1700000000150000000", "name": "chunk"}
                                ],
                                "status": {"code": 2, "message": "tool failed"},
                                "unknownField": {"ignored": True},
                            },
                            {
                                "traceId": tid,
                                "spanId": root,
                                "name": "POST /chat",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000300000000",
                                "status": {"code": 1},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    r = _post(url, json.dumps(body).encode(), {"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json") and r.json() == {}
    trace = _trace("tr-" + tid.lower())
    assert (trace.info.session_id, trace.info.user_id, trace.info.state) == ("conv-9", "u-9", "OK")
    assert trace.info.execution_duration == 300
    tool = next(s for s in trace.data.spans if s.name == "tool")
    assert (tool.span_type, tool.status, tool.status_message) == ("TOOL", "ERROR", "tool failed")
    assert tool.attributes == {"n": -7, "f": 0.5, "ok": True, "list": ["a", 2], "kv": {"x": "y"}}
    assert [(e.name, e.timestamp_ns) for e in tool.events] == [("chunk", 1700000000150000000)]


def test_pieces_resends_and_remote_parents_make_one_trace(url: str) -> None:
    # A child first: the trace exists, in progress, with the orphan standing in.
    assert _post(
        url, request(span(1, 2, 1, name="llm", start=5, end=8, **{"session__id": "s"}))
    ).is_success
    early = _trace(trace_id(1))
    assert early.info.state == "IN_PROGRESS" and early.info.session_id == "s"
    # Another child in a later request, then the root: one complete trace.
    assert _post(url, request(span(1, 3, 2, name="tool", start=6, end=7))).is_success
    assert _post(url, request(span(1, 1, name="root", end=20, **{"user__id": "u"}))).is_success
    # The same three again (a retry), plus a late child arriving after its root.
    again = request(span(1, 1, name="root", end=20), span(1, 2, 1, name="llm", start=5, end=8))
    assert _post(url, again).is_success
    assert _post(url, request(span(1, 4, 1, name="late", start=15, end=30))).is_success
    trace = _trace(trace_id(1))
    assert sorted(s.name for s in trace.data.spans) == ["late", "llm", "root", "tool"]
    assert (trace.info.state, trace.info.name) == ("OK", "root")
    assert (trace.info.session_id, trace.info.user_id) == ("s", "u")  # first seen wins
    assert trace.info.execution_duration == 30
    roots = [s for s in trace.data.spans if s.parent_id is None]
    assert [r.name for r in roots] == ["root"]
    assert sessiontrace.search_traces(f"trace_id = '{trace_id(1)}'", return_type="list")
    # A service's entry span under a remote parent (flags 0x300) is its trace's root.
    remote = span(2, 7, 99, name="entry", end=5, flags=0x300)
    assert _post(url, request(span(2, 8, 7, name="work", start=1, end=4), remote)).is_success
    trace = _trace(trace_id(2))
    assert (trace.info.state, trace.info.name) == ("OK", "entry")
    entry = next(s for s in trace.data.spans if s.name == "entry")
    assert entry.parent_id is None
    assert entry.attributes["sessiontrace.otlp.remote_parent_id"] == (99).to_bytes(8, "big").hex()
    # An ERROR root makes an ERROR trace.
    assert _post(url, request(span(3, 1, name="boom", status=2))).is_success
    assert _trace(trace_id(3)).info.state == "ERROR"
    assert sessiontrace.search_traces(return_type="list").__len__() == 3


def test_remote_parent_through_the_sdk(url: str) -> None:
    # What an instrumented service does with a traceparent header from its caller.
    provider = _provider(url, SimpleSpanProcessor)
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with provider.get_tracer("svc").start_as_current_span(
        "handle", context=set_span_in_context(NonRecordingSpan(parent)), attributes={"user.id": "u"}
    ):
        pass
    provider.shutdown()
    trace = _trace("tr-" + (0xABC).to_bytes(16, "big").hex())
    assert (trace.info.state, trace.info.user_id, trace.info.name) == ("OK", "u", "handle")


def test_a_bad_span_is_rejected_alone(url: str) -> None:
    good = span(5, 1, name="good")
    bad_ids = span(5, 2, 1, name="bad")
    bad_ids.span_id = b"\x00" * 8
    backwards = span(5, 3, 1, name="backwards", start=10, end=5)
    r = _post(url, request(good, bad_ids, backwards))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 2
    assert "span_id" in answer.partial_success.error_message
    assert [s.name for s in _trace(trace_id(5)).data.spans] == ["good"]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}
    r = _post(url, json.dumps(body).encode(), {"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "identity"])
def test_compressed_bodies(url: str, encoding: str) -> None:
    body = request(span(6, 1, name=encoding))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "raw-deflate":
        deflater = zlib.compressobj(wbits=-15)
        body = deflater.compress(body) + deflater.flush()
    header = "deflate" if encoding == "raw-deflate" else encoding
    r = _post(url, body, {**PROTO, "content-encoding": header})
    assert r.status_code == 200, r.text
    assert r.content == b"" and r.headers["content-type"] == "application/x-protobuf"
    assert _trace(trace_id(6)).info.name == encoding


def _status(r: httpx.Response) -> tuple[int, str]:
    if r.headers["content-type"] == "application/x-protobuf":
        # google.rpc.Status: field 1 code, field 2 message
        assert r.content[0] == 0x08
        return r.status_code, r.content[4:].decode()
    return r.status_code, r.json()["message"]


def test_error_answers(db: str) -> None:
    with receiver(db, max_body_bytes=200_000) as url:
        ok = request(span(7, 1))
        assert _post(url, ok, {"content-type": "text/plain"}).status_code == 415
        assert _post(url, ok, {**PROTO, "content-encoding": "br"}).status_code == 415
        code, message = _status(_post(url, b"\xff\xff\xff garbage"))
        assert code == 400 and "ExportTraceServiceRequest" in message
        r = _post(url, b"{not json", {"content-type": "application/json"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert _post(url, b"[]", {"content-type": "application/json"}).status_code == 400
        assert (
            _post(url, gzip.compress(ok)[:-6], {**PROTO, "content-encoding": "gzip"}).status_code
            == 400
        )
        # Over the cap as sent, and over the cap once inflated: 64 MiB of zeros is
        # 65 KB of gzip (a bomb), never inflated past the cap.
        assert _post(url, b"\x00" * 200_001).status_code == 413
        bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024 + 1), compresslevel=9)
        assert len(bomb) < 200_000
        code, message = _status(_post(url, bomb, {**PROTO, "content-encoding": "gzip"}))
        assert code == 413 and "inflated" in message
        # An empty request is a success, in the request's encoding.
        r = _post(url, b"")
        assert (r.status_code, r.content, r.headers["content-type"]) == (
            200,
            b"",
            "application/x-protobuf",
        )
        r = _post(url, b"{}", {"content-type": "application/json"})
        assert (r.status_code, r.json()) == (200, {})
    assert sessiontrace.search_traces(return_type="list") == []


def test_token(db: str) -> None:
    with receiver(db, token=TOKEN) as url:
        body = request(span(8, 1, name="authed"))
        r = _post(url, body)
        assert r.status_code == 401 and r.headers["content-type"] == "application/json"
        assert (
            _post(
                url, body, {**PROTO, "authorization": "Bearer wrong-token-0123456789"}
            ).status_code
            == 401
        )
        # the official exporter with OTEL-style headers
        provider = _provider(url, SimpleSpanProcessor, headers={"authorization": f"Bearer {TOKEN}"})
        with provider.get_tracer("app").start_as_current_span("with-token"):
            pass
        provider.shutdown()
    (trace,) = sessiontrace.search_traces(return_type="list")
    assert trace.info.name == "with-token"


def test_cross_site_posts_need_an_otlp_content_type(url: str) -> None:
    # No token on a loopback server: a page in a browser may not post a simple form.
    body = request(span(9, 1))
    assert _post(url, body, {"content-type": "text/plain"}).status_code == 415
    r = _post(url, body, {**PROTO, "origin": "http://evil.example"})
    assert r.status_code == 403
    assert wait_for(lambda: _post(url, body).status_code == 200)


def test_concurrent_pieces_of_one_trace_all_land(url: str) -> None:
    # Twenty requests at once, each one span of the same trace: the merge is serialised,
    # so none overwrites another's span.
    from concurrent.futures import ThreadPoolExecutor

    pieces = [request(span(10, 1, name="root", end=100))]
    pieces += [request(span(10, n, 1, name=f"c{n}", start=n, end=n + 1)) for n in range(2, 21)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: _post(url, body).status_code, pieces))
    assert answers == [200] * 20
    trace = _trace(trace_id(10))
    assert len(trace.data.spans) == 20 and trace.info.state == "OK"
