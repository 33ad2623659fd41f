"""POST /api/ingest: the wire format in, the same rows as in-process tracing out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import sessiontrace
from sessiontrace._export import encode_batch

from .conftest import TOKEN, app_client

pytestmark = pytest.mark.backends


def _trace(trace_id: str = "tr-1", **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": "trace",
        "trace_id": trace_id,
        "start_ns": 1_700_000_000_000_000_000,
        "end_ns": 1_700_000_000_250_000_000,
        "state": "OK",
        "metadata": {"mlflow.trace.user": "u1", "mlflow.trace.session": "s1", "app_version": "2"},
        "tags": {"query_category": "chat"},
        "spans": [
            {
                "span_id": "a",
                "parent_id": None,
                "name": "chat",
                "span_type": "CHAIN",
                "start_ns": 1_700_000_000_000_000_000,
                "end_ns": 1_700_000_000_250_000_000,
                "status": "OK",
                "inputs": {"message": "hi"},
                "outputs": "hello",
            },
            {
                "span_id": "b",
                "parent_id": "a",
                "name": "llm",
                "start_ns": 1_700_000_000_010_000_000,
                "end_ns": 1_700_000_000_200_000_000,
                "status": "OK",
                "attributes": {"model": "m"},
                "events": [{"name": "e", "timestamp_ns": 1_700_000_000_100_000_000}],
            },
        ],
    }
    item.update(over)
    return item


def _post(client: httpx.Client, payload: Any, **kw: Any) -> Any:
    return client.post("/api/ingest", content=json.dumps(payload), **kw)


def _headers() -> dict[str, str]:
    return {"content-type": "application/json"}


def test_ingested_trace_reads_back_like_a_local_one(client: httpx.Client) -> None:
    r = _post(client, {"version": 1, "items": [_trace()]}, headers=_headers())
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1}
    trace = sessiontrace.get_trace("tr-1")
    assert trace is not None
    assert trace.info.user_id == "u1" and trace.info.session_id == "s1"
    assert trace.info.trace_metadata["app_version"] == "2"
    assert trace.info.tags == {"query_category": "chat"}
    assert trace.info.execution_duration == 250
    assert trace.info.request_preview == '{"message":"hi"}'
    root, child = trace.data.spans
    assert (root.name, root.inputs, root.outputs) == ("chat", {"message": "hi"}, "hello")
    assert (child.parent_id, child.attributes, child.events[0].name) == ("a", {"model": "m"}, "e")


def _late_span(**over: Any) -> dict[str, Any]:
    """A child of tr-1's root that ended after the trace was sent."""
    span = {
        "kind": "span",
        "trace_id": "tr-1",
        "span_id": "c",
        "parent_id": "a",
        "name": "late",
        "start_ns": 1_700_000_000_300_000_000,
        "end_ns": 1_700_000_000_400_000_000,
        "status": "OK",
    }
    span.update(over)
    return span


def test_late_span_and_tag_ops_apply_in_order(client: httpx.Client) -> None:
    items = [
        _trace(),
        _late_span(),
        {"kind": "tag", "trace_id": "tr-1", "key": "fb", "value": "up"},
        {"kind": "tag", "trace_id": "tr-1", "key": "query_category", "value": None},
    ]
    assert _post(client, {"version": 1, "items": items}, headers=_headers()).status_code == 200
    trace = sessiontrace.get_trace("tr-1")
    assert trace is not None
    assert [s.name for s in trace.data.spans] == ["chat", "llm", "late"]
    assert trace.info.tags == {"fb": "up"}


def test_a_late_span_delivered_twice_is_stored_once_in_start_order(
    client: httpx.Client,
) -> None:
    # A child that started before the llm span and ended after the trace was written;
    # its batch is then delivered again (a retry whose first answer was lost).
    late = _late_span(start_ns=1_700_000_000_005_000_000, outputs={"try": 1})
    for items in ([_trace(), late], [{**late, "outputs": {"try": 2}}]):
        r = _post(client, {"version": 1, "items": items}, headers=_headers())
        assert r.status_code == 200, r.text
    trace = sessiontrace.get_trace("tr-1")
    assert trace is not None
    assert [(s.name, s.outputs) for s in trace.data.spans] == [
        ("chat", "hello"),
        ("late", {"try": 2}),
        ("llm", None),
    ]
    frame = sessiontrace.search_traces("span.name = 'late'", return_type="pandas")
    assert list(frame["trace_id"]) == ["tr-1"]
    assert frame["spans"][0] == [s.to_dict() for s in trace.data.spans]
    assert [t.response for t in sessiontrace.session_flow("s1")] == ["hello"]


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"version": 2, "items": []}, "version"),
        ({"version": 1, "items": [{"kind": "nope"}]}, "items.0"),
        ({"version": 1, "items": [_trace(state="MAYBE")]}, "items.0.trace.state"),
        ({"version": 1, "items": [_trace(spans=[])]}, "items.0.trace.spans"),
        ({"version": 1, "items": [_trace(start_ns=-1)]}, "items.0.trace.start_ns"),
        ({"version": 1, "items": [_trace(extra=1)]}, "items.0.trace.extra"),
        ({"version": 1, "items": [_trace(tags={"k": 5})]}, "items.0.trace.tags.k"),
    ],
)
def test_bad_payloads_get_422_saying_where(
    client: httpx.Client, payload: dict[str, Any], where: str
) -> None:
    r = _post(client, payload, headers=_headers())
    assert r.status_code == 422
    assert any(d["loc"].startswith(where) for d in r.json()["details"]), r.json()
    assert sessiontrace.get_trace("tr-1") is None


def test_two_roots_are_rejected(client: httpx.Client) -> None:
    t = _trace()
    t["spans"][1]["parent_id"] = None
    r = _post(client, {"version": 1, "items": [t]}, headers=_headers())
    assert r.status_code == 422
    assert "exactly one root span" in r.json()["details"][0]["msg"]


def test_invalid_json_and_wrong_content_type(client: httpx.Client) -> None:
    r = client.post("/api/ingest", content=b"{not json", headers=_headers())
    assert r.status_code == 422
    r = client.post("/api/ingest", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_size_limits(store_path: Path) -> None:
    from sessiontrace.server import create_app

    app = create_app(max_body_bytes=2000, max_batch_items=2)
    with app_client(app) as c:
        big = {"version": 1, "items": [_trace(request_preview="x" * 5000)]}
        assert _post(c, big, headers=_headers()).status_code == 413
        many = {
            "version": 1,
            "items": [{"kind": "tag", "trace_id": "t", "key": "k", "value": "v"}] * 3,
        }
        assert _post(c, many, headers=_headers()).status_code == 413


def test_cross_site_ingest_is_refused(client: httpx.Client) -> None:
    body = {"version": 1, "items": [_trace()]}
    r = _post(client, body, headers={**_headers(), "origin": "http://evil.example"})
    assert r.status_code == 403
    r = _post(client, body, headers={**_headers(), "sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    assert sessiontrace.get_trace("tr-1") is None


def test_token_server_needs_the_bearer_token(store_path: Path) -> None:
    from sessiontrace.server import create_app

    with app_client(create_app(token=TOKEN)) as c:
        body = {"version": 1, "items": [_trace()]}
        assert _post(c, body, headers=_headers()).status_code == 401
        wrong = {**_headers(), "authorization": "Bearer nope"}
        assert _post(c, body, headers=wrong).status_code == 401
        right = {**_headers(), "authorization": f"Bearer {TOKEN}"}
        assert _post(c, body, headers=right).status_code == 200


def test_wire_encoding_of_live_traces_round_trips(client: httpx.Client, store_path: Path) -> None:
    """What the exporter sends is exactly what the in-process store would have written."""

    @sessiontrace.trace
    def chat(message: str) -> dict[str, Any]:
        sessiontrace.update_current_trace(
            metadata={"mlflow.trace.user": "ü<1>", "mlflow.trace.session": "s"},
            tags={"t": "v"},
        )
        with sessiontrace.start_span("tool", span_type="TOOL") as span:
            span.set_attribute("n", 3)
            span.add_event("step", {"k": [1, 2]})
        return {"answer": message[::-1], "nan": float("inf")}

    captured: list[Any] = []
    bodies: list[bytes] = []

    class Capture:
        def export(self, items: Any) -> None:
            captured.extend(items)
            bodies.append(encode_batch(items))  # before the pipeline releases the spans

        def after_fork(self) -> None: ...
        def close(self) -> None: ...

    from sessiontrace import _runtime

    pipeline = _runtime._pipeline()
    real_sink = pipeline.sink
    pipeline.sink = Capture()
    try:
        chat("again \ud800")  # a lone surrogate must not break the batch
        sessiontrace.flush(5)
    finally:
        pipeline.sink = real_sink
    (body,) = bodies
    json.loads(body)  # plain JSON
    r = client.post("/api/ingest", content=body, headers=_headers())
    assert r.status_code == 200, r.text
    tid = captured[0].trace_id
    remote = sessiontrace.get_trace(tid)
    assert remote is not None
    assert remote.info.user_id == "ü<1>"
    assert remote.info.tags == {"t": "v"}
    assert [s.name for s in remote.data.spans] == ["chat", "tool"]
    assert remote.data.spans[0].outputs["answer"] == "? niaga"
    assert remote.data.spans[1].attributes == {"n": 3}
    assert remote.data.spans[1].events[0].attributes == {"k": [1, 2]}
