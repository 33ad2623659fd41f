"""What the UI's LLM views read: the trace's totals, daily cost over all users, /models."""

from __future__ import annotations

import datetime

import httpx
import pytest

import sessiontrace
from sessiontrace.llm._keys import MODEL, PROVIDER, USAGE

pytestmark = pytest.mark.backends


def _call(model: str, inp: int, out: int) -> None:
    with sessiontrace.start_span("Completions.create", span_type="CHAT_MODEL") as span:
        span.set_attributes(
            {
                USAGE: {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
                MODEL: model,
                PROVIDER: "openai",
            }
        )


def _seed() -> list[str]:
    sessiontrace.set_model_price("priced-model", input_per_mtok=1.0, output_per_mtok=4.0)
    ids = []
    for user, calls in [
        ("alice", [("priced-model", 1000, 100), ("priced-model", 10, 1)]),
        ("bob", [("nobody-prices-this-model", 500, 50)]),
        ("carol", []),
    ]:
        with (
            sessiontrace.user_session(user_id=user, session_id=f"s-{user}"),
            sessiontrace.start_span("chat"),
        ):
            for model, inp, out in calls:
                _call(model, inp, out)
        tid = sessiontrace.get_last_active_trace_id()
        assert tid is not None
        ids.append(tid)
    assert sessiontrace.flush(5)
    return ids


def test_trace_detail_carries_the_llm_totals(client: httpx.Client) -> None:
    alice, bob, carol = _seed()
    info = client.get("/api/trace", params={"id": alice}).json()["info"]
    fields = ("llm_calls", "input_tokens", "output_tokens", "total_tokens", "unpriced_calls")
    cost = (1000 * 1.0 + 100 * 4.0 + 10 * 1.0 + 1 * 4.0) / 1e6
    assert info["cost"] == pytest.approx(cost)
    assert {k: info[k] for k in fields} == {
        "llm_calls": 2,
        "input_tokens": 1010,
        "output_tokens": 101,
        "total_tokens": 1111,
        "unpriced_calls": 0,
    }
    unpriced = client.get("/api/trace", params={"id": bob}).json()["info"]
    assert (unpriced["llm_calls"], unpriced["cost"], unpriced["unpriced_calls"]) == (1, None, 1)
    none = client.get("/api/trace", params={"id": carol}).json()["info"]
    assert (none["llm_calls"], none["cost"], none["total_tokens"]) == (0, None, 0)


def test_daily_cost_over_all_users(client: httpx.Client) -> None:
    _seed()
    body = client.get("/api/daily", params={"days": 7}).json()
    assert body["days"] == 7
    assert body["until_ms"] - body["since_ms"] == 7 * 86_400_000
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    days = body["daily"]  # today's (UTC), and yesterday's if the test ran over midnight
    assert days[-1]["date"] == today and len(days) <= 2

    def total(key: str) -> float:
        return sum(d[key] or 0 for d in days)

    assert (total("traces"), total("llm_calls"), total("unpriced_calls")) == (3, 3, 1)
    assert total("total_tokens") == 1111 + 550
    assert total("cost") == pytest.approx(1414 / 1e6)
    # A filter counts only the matching traces; a day without priced calls has no cost.
    (bob,) = client.get("/api/daily", params={"filter": "user = 'bob'"}).json()["daily"]
    assert (bob["llm_calls"], bob["cost"], bob["unpriced_calls"]) == (1, None, 1)
    assert client.get("/api/daily", params={"filter": "user = 'nobody'"}).json()["daily"] == []
    assert client.get("/api/daily", params={"days": 0}).status_code == 400
    bad = client.get("/api/daily", params={"filter": "user = "})
    assert bad.status_code == 400 and "position" in bad.json()


def test_models_page_is_served(client: httpx.Client) -> None:
    r = client.get("/models")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
