"""The JSON API's feedback roll-ups: the summaries' new fields, the per-turn
feedback, the feedback sort keys and ``/api/feedback/daily`` (both stores)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from feedback._rollup_data import D0, D1, Assessments, assessments, rollup_store

pytestmark = pytest.mark.backends
__all__ = ["assessments", "rollup_store"]  # fixtures

FIELDS = {"feedback_count", "negative_feedback", "satisfaction", "feedback"}
STATS = {"name", "count", "positive", "negative", "positive_rate", "mean"}
THUMBS_S1 = {
    "name": "thumbs",
    "count": 2,
    "positive": 1,
    "negative": 1,
    "positive_rate": 0.5,
    "mean": None,
}


def _ok(client: httpx.Client, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_sessions_and_session(client: httpx.Client, rollup_store: Assessments) -> None:
    body = _ok(client, "/api/sessions", order_by="satisfaction ASC")
    rows = body["sessions"]
    assert [s["session_id"] for s in rows] == ["s2", "s1", "s3", "s4", "s5"]
    assert all(set(s) >= FIELDS for s in rows)
    s1 = rows[1]
    assert (s1["feedback_count"], s1["negative_feedback"], s1["satisfaction"]) == (5, 1, 0.5)
    assert s1["feedback"]["thumbs"] == THUMBS_S1
    assert rows[3]["satisfaction"] is None and rows[3]["feedback"] == {}
    page = _ok(client, "/api/sessions", order_by="negative_feedback DESC", max_results=2)
    assert [s["session_id"] for s in page["sessions"]] == ["s1", "s2"]
    after = _ok(client, "/api/sessions", order_by="negative_feedback DESC", max_results=2,
                page_token=page["next_page_token"])  # fmt: skip
    assert [s["session_id"] for s in after["sessions"]] == ["s3", "s4"]

    session = _ok(client, "/api/session", id="s1")
    assert session["summary"] == s1
    turns = session["turns"]
    assert [[f["name"] for f in t["feedback"]] for t in turns] == [
        ["thumbs", "score"],
        ["thumbs", "thumbs", "score", "comment"],
    ]
    assert set(turns[1]["feedback"][0]) == {
        "assessment_id", "name", "value", "rationale", "source_type", "source_id",
        "create_time_ms", "valid",
    }  # fmt: skip
    assert [(f["value"], f["valid"]) for f in turns[1]["feedback"][:2]] == [
        (True, False),
        (False, True),
    ]


def test_users_user_versions_daily(client: httpx.Client, rollup_store: Assessments) -> None:
    users = _ok(client, "/api/users", order_by="satisfaction DESC")["users"]
    assert [u["user_id"] for u in users] == ["u2", "u1", "u3", "u4"]
    assert users[0]["feedback"]["thumbs"]["count"] == 3
    user = _ok(client, "/api/user", id="u1", days=3660)
    assert (user["feedback_count"], user["satisfaction"]) == (5, 0.5)
    assert user["feedback"]["thumbs"] == THUMBS_S1
    assert [(d["date"], d["feedback_count"]) for d in user["daily_activity"]] == [(D0, 5)]
    versions = _ok(client, "/api/versions", order_by="satisfaction")
    assert [(r["value"], r["feedback_count"]) for r in versions["rows"]] == [
        ("2.0", 3),
        ("1.0", 5),
    ]
    daily = _ok(client, "/api/daily", days=3660)["daily"]
    assert [(d["date"], d["feedback_count"]) for d in daily][:2] == [(D0, 5), (D1, 3)]
    assert all(set(d) >= FIELDS for d in daily)


def test_feedback_daily(client: httpx.Client, rollup_store: Assessments) -> None:
    body = _ok(client, "/api/feedback/daily", days=3660)
    assert set(body) == {"days", "since_ms", "until_ms", "key", "name", "rows"}
    assert (body["days"], body["key"], body["name"]) == (3660, None, None)
    assert [(r["date"], r["value"], r["feedback_count"]) for r in body["rows"]] == [
        (D0, None, 5),
        (D1, None, 3),
    ]
    row = body["rows"][0]
    assert set(row) == {"date", "value", *FIELDS}
    assert set(row["feedback"]["thumbs"]) == STATS
    by_version = _ok(client, "/api/feedback/daily", days=3660, metadata_key="app_version")
    assert by_version["key"] == "app_version"
    assert [(r["date"], r["value"]) for r in by_version["rows"]] == [(D0, "1.0"), (D1, "2.0")]
    one = _ok(client, "/api/feedback/daily", days=3660, user="u2", name="thumbs")
    assert [(r["date"], r["feedback_count"], r["satisfaction"]) for r in one["rows"]] == [
        (D1, 3, 2 / 3)
    ]
    assert _ok(client, "/api/feedback/daily", days=3660, filter="user = 'u3'")["rows"] == []
    assert _ok(client, "/api/feedback/daily")["days"] == 30  # the default window


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/feedback/daily", {"days": "0"}, "days must be between 1 and 3660"),
        ("/api/feedback/daily", {"days": "week"}, "days must be an integer"),
        ("/api/feedback/daily", {"filter": "user = "}, None),
        ("/api/sessions", {"order_by": "satisfaction UP"}, "expected ASC or DESC"),
        ("/api/users", {"order_by": "thumbs DESC"}, "cannot order by 'thumbs'"),
        ("/api/versions", {"order_by": "feedback"}, "cannot order by 'feedback'"),
    ],
)
def test_bad_parameters_are_clear_400s(
    client: httpx.Client,
    rollup_store: Assessments,
    path: str,
    params: dict[str, str],
    message: str | None,
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    if message is not None:
        assert message in r.json()["error"]
    else:
        assert r.json()["position"] >= 0


def test_trace_rows_and_trace_carry_their_assessments(
    client: httpx.Client, rollup_store: Assessments
) -> None:
    rows = _ok(client, "/api/traces", filter="session = 's1'", order_by="timestamp ASC")
    first = rows["traces"][0]
    assert first["trace_id"] == "tr-1"
    assert [(a["assessment_name"], a["valid"]) for a in first["assessments"]] == [
        ("thumbs", True),
        ("score", True),
    ]
    second = _ok(client, "/api/trace", id="tr-2")["info"]["assessments"]
    assert [a.get("overrides") for a in second] == [None] * 4
    assert [a["valid"] for a in second] == [False, True, True, True]
