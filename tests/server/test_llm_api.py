"""Ingest of LLM spans: priced when they arrive without a cost, totals exact on
re-delivery and late spans; the JSON API's LLM fields."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import sessiontrace

pytestmark = pytest.mark.backends

USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"
COST = "mlflow.llm.cost"


def usage(inp: int, out: int, *, cache_read: int | None = None) -> dict[str, int]:
    u = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    if cache_read is not None:
        u["cache_read_input_tokens"] = cache_read
    return u


def columns(store: Any, trace_id: str) -> tuple[Any, ...]:
    row = (
        store.connection()
        .execute(
            "SELECT input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls "
            "FROM traces WHERE trace_id = ?",
            (trace_id,),
        )
        .fetchone()
    )
    assert row is not None
    return tuple(row)


def _ingest_trace(*, with_cost: bool = False, late_usage: bool = False) -> dict[str, Any]:
    llm_attributes: dict[str, Any] = {USAGE: usage(1000, 100, cache_read=400), MODEL: "gpt-4o-mini"}
    if with_cost:
        llm_attributes[COST] = {"input_cost": 1.0, "output_cost": 1.0, "total_cost": 2.0}
    start = 1_700_000_000_000_000_000
    spans = [
        {"span_id": "root", "name": "chat", "start_ns": start, "end_ns": start + 9},
        {
            "span_id": "llm",
            "parent_id": "root",
            "name": "llm",
            "start_ns": start + 1,
            "end_ns": start + 5,
            "attributes": llm_attributes,
        },
    ]
    if late_usage:
        spans.append(
            {"span_id": "late", "parent_id": "root", "name": "late", "start_ns": start + 2}
        )
    return {
        "kind": "trace",
        "trace_id": "tr-ingest",
        "start_ns": start,
        "end_ns": start + 9,
        "state": "OK",
        "metadata": {"mlflow.trace.user": "u1"},
        "spans": spans,
    }


def _late() -> dict[str, Any]:
    start = 1_700_000_000_000_000_000
    return {
        "kind": "span",
        "trace_id": "tr-ingest",
        "span_id": "late",
        "parent_id": "root",
        "name": "late",
        "start_ns": start + 2,
        "end_ns": start + 50,
        "attributes": {
            USAGE: usage(50, 5),
            MODEL: "claude-sonnet-4-5",
            "mlflow.llm.provider": "anthropic",
        },
    }


def _post(client: Any, *items: dict[str, Any]) -> None:
    r = client.post(
        "/api/ingest",
        content=json.dumps({"version": 1, "items": list(items)}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_ingest_prices_spans_that_arrive_without_cost_and_redelivery_changes_nothing(
    client: httpx.Client, store: Any
) -> None:
    _post(client, _ingest_trace(late_usage=True))
    first = columns(store, "tr-ingest")
    assert first == (1000, 100, 1100, pytest.approx(0.00018), 1, 0)  # late: still running
    for _ in range(2):  # the late span, delivered twice
        _post(client, _late())
        totals = columns(store, "tr-ingest")
        assert totals[:3] == (1050, 105, 1155) and totals[4:] == (2, 0)
    again = columns(store, "tr-ingest")
    _post(client, _late())
    assert columns(store, "tr-ingest") == again
    trace = sessiontrace.get_trace("tr-ingest")
    assert trace is not None
    late = next(s for s in trace.data.spans if s.name == "late")
    assert late.attributes["sessiontrace.llm.price_source"].startswith("genai-prices")
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == 1155
    # the same whole batch again: the same totals
    _post(client, _ingest_trace(), _late())
    assert columns(store, "tr-ingest") == again


def test_ingest_keeps_a_cost_the_client_computed(client: httpx.Client, store: Any) -> None:
    _post(client, _ingest_trace(with_cost=True))
    assert columns(store, "tr-ingest")[3] == 2.0


LLM_FIELDS = {
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "unpriced_calls",
}


def test_every_aggregate_endpoint_serves_the_llm_fields(client: httpx.Client) -> None:
    sessiontrace.set_model_price("house-*", input_per_mtok=10, output_per_mtok=20)
    sessiontrace.set_model_price("house-b", input_per_mtok=100, output_per_mtok=200)
    for user, model in [("u1", "house-a"), ("u2", "house-b"), ("u2", "mystery")]:
        with (
            sessiontrace.user_session(user_id=user, session_id=f"{user}-s"),
            sessiontrace.start_span("chat", span_type="CHAIN"),
            sessiontrace.start_span(
                "llm",
                span_type="CHAT_MODEL",
                attributes={USAGE: usage(1000, 100), MODEL: model, "mlflow.llm.provider": "p"},
            ),
        ):
            pass
    sessiontrace.flush()
    traces = client.get("/api/traces").json()["traces"]
    assert all(set(t) >= LLM_FIELDS for t in traces)
    assert sorted(t["total_tokens"] for t in traces) == [1100, 1100, 1100]
    assert sorted(t["cost"] or 0 for t in traces) == [0, pytest.approx(0.012), pytest.approx(0.12)]
    users = client.get("/api/users", params={"order_by": "cost DESC"}).json()["users"]
    assert [(u["user_id"], u["llm_calls"], u["unpriced_calls"]) for u in users] == [
        ("u2", 2, 1),
        ("u1", 1, 0),
    ]
    assert users[0]["cost"] == pytest.approx(0.12) and users[0]["total_tokens"] == 2200
    sessions = client.get("/api/sessions").json()["sessions"]
    assert all(set(s) >= LLM_FIELDS for s in sessions)
    session = client.get("/api/session", params={"id": "u2-s"}).json()
    assert session["summary"]["total_tokens"] == 2200
    assert [t["total_tokens"] for t in session["turns"]] == [1100, 1100]
    assert [t["cost"] for t in session["turns"]] == [pytest.approx(0.12), None]
    user = client.get("/api/user", params={"id": "u2"}).json()
    assert user["llm_calls"] == 2 and user["daily_activity"][0]["cost"] == pytest.approx(0.12)
    versions = client.get("/api/versions", params={"key": "mlflow.trace.user"}).json()
    assert {r["value"]: r["total_tokens"] for r in versions["rows"]} == {"u1": 1100, "u2": 2200}
    models = client.get("/api/models", params={"order_by": "cost DESC"}).json()["models"]
    assert [(m["model"], m["provider"], m["llm_calls"]) for m in models] == [
        ("house-b", "p", 1),
        ("house-a", "p", 1),
        ("mystery", "p", 1),
    ]
    assert models[2]["cost"] is None and models[2]["unpriced_calls"] == 1
    bad = client.get("/api/models", params={"order_by": "nope"})
    assert bad.status_code == 400 and "cannot order by" in bad.json()["error"]
    filtered = client.get("/api/models", params={"filter": "user = 'u1'"}).json()["models"]
    assert [m["model"] for m in filtered] == ["house-a"]
    trace = client.get("/api/trace", params={"id": traces[0]["trace_id"]}).json()
    llm = next(s for s in trace["data"]["spans"] if s["name"] == "llm")
    assert USAGE in llm["attributes"]
    assert "mlflow.trace.tokenUsage" in trace["info"]["trace_metadata"]
    assert {k: trace["info"][k] for k in LLM_FIELDS} == {
        k: traces[0][k] for k in LLM_FIELDS
    }  # the trace page's header: the same totals as its row in the list
