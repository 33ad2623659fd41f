"""Analytics, each checked against the same figure computed in Python from the records."""

from __future__ import annotations

import dataclasses
import datetime
import statistics
from collections import Counter, defaultdict

import pytest

import sessiontrace
from sessiontrace import FilterSyntaxError

from .conftest import BASE_MS, DAY_MS, Record

pytestmark = pytest.mark.backends

# What every record says of the LLM calls of traces without any.
NO_LLM = {
    "llm_calls": 0,
    "input_tokens": 0,
    "output_tokens": 0,
    "total_tokens": 0,
    "cost": None,
    "unpriced_calls": 0,
}
NO_FEEDBACK = {"feedback_count": 0, "negative_feedback": 0, "satisfaction": None, "feedback": {}}


def by_session(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.session is not None:
            groups[r.session].append(r)
    return groups


def test_list_sessions_pages_through_every_session_most_recent_first(
    dataset: list[Record],
) -> None:
    groups = by_session(dataset)
    seen = []
    token = None
    while True:
        page = sessiontrace.list_sessions(max_results=7, page_token=token)
        seen.extend(page)
        token = page.next_page_token
        if token is None:
            break
    expected_order = sorted(
        groups, key=lambda s: max((r.start_ms, r.trace_id) for r in groups[s]), reverse=True
    )
    assert [s.session_id for s in seen] == expected_order
    for s in seen:
        rs = groups[s.session_id]
        assert s.first_seen_ms == min(r.start_ms for r in rs)
        assert s.last_seen_ms == max(r.start_ms for r in rs)
        assert s.turns == len(rs)
        assert s.errors == sum(r.state == "ERROR" for r in rs)
        assert s.error_rate == pytest.approx(s.errors / len(rs))
        assert s.total_duration_ms == pytest.approx(sum(r.duration_ms for r in rs))
        assert s.mean_duration_ms == pytest.approx(statistics.mean(r.duration_ms for r in rs))
        assert s.user_ids == tuple(sorted({r.user for r in rs if r.user is not None}))
        first = min(rs, key=lambda r: (r.start_ms, r.trace_id))
        assert s.first_request_preview == f'{{"message":"{first.message}"}}'


@pytest.mark.parametrize(
    ("order_by", "key"),
    [
        (["turns DESC"], lambda rs, s: (-len(rs), s)),
        (["errors DESC"], lambda rs, s: (-sum(r.state == "ERROR" for r in rs), s)),
        (["first_seen ASC"], lambda rs, s: (min(r.start_ms for r in rs), s)),
        (["session_id"], lambda rs, s: (s,)),
        (["mean_duration_ms DESC"], lambda rs, s: (-statistics.mean(r.duration_ms for r in rs), s)),
    ],
)
def test_list_sessions_other_orders(dataset: list[Record], order_by: list[str], key) -> None:  # type: ignore[no-untyped-def]
    groups = by_session(dataset)
    first = sessiontrace.list_sessions(order_by=order_by, max_results=10)
    second = sessiontrace.list_sessions(
        order_by=order_by, max_results=10, page_token=first.next_page_token
    )
    expected = sorted(groups, key=lambda s: key(groups[s], s))[:20]
    assert [s.session_id for s in [*first, *second]] == expected


def test_list_sessions_with_a_filter_counts_matching_traces(dataset: list[Record]) -> None:
    page = sessiontrace.list_sessions(filter_string="trace.status = 'ERROR'", max_results=100)
    errors = by_session([r for r in dataset if r.state == "ERROR"])
    assert {s.session_id: s.turns for s in page} == {k: len(v) for k, v in errors.items()}
    assert all(s.errors == s.turns for s in page)


def test_session_summary_and_flow(dataset: list[Record]) -> None:
    rs = sorted(by_session(dataset)["session-3"], key=lambda r: (r.start_ms, r.trace_id))
    summary = sessiontrace.get_session_summary("session-3")
    assert summary is not None and summary.turns == len(rs)
    flow = sessiontrace.session_flow("session-3")
    assert [t.to_dict() for t in flow] == [
        {
            "turn": i,
            "trace_id": r.trace_id,
            "timestamp": r.start_ms,
            "duration_ms": r.duration_ms,
            "status": r.state,
            "request": {"message": r.message},
            "response": r.response,
            "name": "chat",
            "user_id": r.user,
            "tags": r.tags,
            **NO_LLM,
            "feedback": (),
        }
        for i, r in enumerate(rs, 1)
    ]
    assert sessiontrace.get_session_summary("no-such-session") is None
    assert sessiontrace.session_flow("no-such-session") == []


def test_list_users(dataset: list[Record]) -> None:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in dataset:
        if r.user is not None:
            groups[r.user].append(r)
    page = sessiontrace.list_users(max_results=100)
    assert page.next_page_token is None
    expected = sorted(groups, key=lambda u: max((r.start_ms, r.trace_id) for r in groups[u]))
    assert [u.user_id for u in page] == expected[::-1]
    for u in page:
        rs = groups[u.user_id]
        assert (u.traces, u.sessions, u.errors) == (
            len(rs),
            len({r.session for r in rs if r.session}),
            sum(r.state == "ERROR" for r in rs),
        )
        assert u.mean_latency_ms == pytest.approx(statistics.mean(r.duration_ms for r in rs))
        assert (u.first_seen_ms, u.last_seen_ms) == (
            min(r.start_ms for r in rs),
            max(r.start_ms for r in rs),
        )
    by_traces = sessiontrace.list_users(order_by=["traces DESC"], max_results=3)
    assert [u.user_id for u in by_traces] == sorted(groups, key=lambda u: (-len(groups[u]), u))[:3]


@pytest.mark.parametrize("days", [1, 3, 7, None])
def test_user_report_matches_analyze_user_behavior(dataset: list[Record], days: int | None) -> None:
    now = BASE_MS + 9 * DAY_MS
    report = sessiontrace.user_report("user-5", days=days, now_ms=now)
    assert report is not None
    every = [r for r in dataset if r.user == "user-5"]
    window = [r for r in every if days is None or r.start_ms > now - days * DAY_MS]
    assert report.traces == len(window)
    assert report.sessions == len({r.session for r in window if r.session})
    assert report.errors == sum(r.state == "ERROR" for r in window)
    if window:
        assert report.mean_latency_ms == pytest.approx(
            statistics.mean(r.duration_ms for r in window)
        )
    assert (report.first_seen_ms, report.last_seen_ms) == (
        min(r.start_ms for r in every),
        max(r.start_ms for r in every),
    )
    daily = Counter(
        datetime.datetime.fromtimestamp(r.start_ms / 1000, datetime.timezone.utc).date().isoformat()
        for r in window
    )
    assert {d.date: d.traces for d in report.daily_activity} == dict(daily)
    assert [d.date for d in report.daily_activity] == sorted(daily)
    categories = Counter(r.tags["query_category"] for r in window if r.tags)
    assert report.tags == ({"query_category": dict(categories)} if categories else {})
    assert (
        report.to_dict()["daily_activity"][0].keys()
        == {"date", "traces", "errors", *NO_LLM, *NO_FEEDBACK}
        or not window
    )


def test_user_report_for_unknown_user_is_none() -> None:
    assert sessiontrace.user_report("nobody") is None
    with pytest.raises(ValueError, match="days"):
        sessiontrace.user_report("nobody", days=-1)


def test_metadata_breakdown(dataset: list[Record]) -> None:
    rows = sessiontrace.metadata_breakdown("app_version")
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in dataset:
        groups[r.app_version].append(r)
    assert [v.value for v in rows] == sorted(groups, key=lambda v: (-len(groups[v]), v))
    for v in rows:
        rs = groups[v.value]
        assert v.traces == len(rs)
        assert v.users == len({r.user for r in rs if r.user})
        assert v.errors == sum(r.state == "ERROR" for r in rs)
        assert v.mean_latency_ms == pytest.approx(statistics.mean(r.duration_ms for r in rs))
    staging = sessiontrace.metadata_breakdown("app_version", "metadata.environment = 'staging'")
    assert sum(v.traces for v in staging) == sum(r.environment == "staging" for r in dataset)
    users = sessiontrace.metadata_breakdown("mlflow.trace.user", max_results=2)
    counts = Counter(r.user for r in dataset if r.user)
    assert [(u.value, u.traces) for u in users] == sorted(
        counts.items(), key=lambda kv: (-kv[1], kv[0])
    )[:2]
    assert sessiontrace.metadata_breakdown("no_such_key") == []


def test_bad_input_is_a_clear_error(dataset: list[Record]) -> None:
    with pytest.raises(FilterSyntaxError):
        sessiontrace.list_sessions(filter_string="user ==")
    with pytest.raises(FilterSyntaxError, match="cannot order by 'bogus'"):
        sessiontrace.list_sessions(order_by=["bogus DESC"])
    with pytest.raises(FilterSyntaxError, match="expected ASC or DESC"):
        sessiontrace.list_users(order_by=["traces up"])
    with pytest.raises(ValueError, match="max_results"):
        sessiontrace.list_users(max_results=0)
    page = sessiontrace.list_sessions(max_results=2)
    with pytest.raises(ValueError, match="different query"):
        sessiontrace.list_users(page_token=page.next_page_token)


def test_results_are_frozen_and_serialisable(dataset: list[Record]) -> None:
    page = sessiontrace.list_sessions(max_results=1)
    summary = page.items[0]
    with pytest.raises(AttributeError):
        summary.turns = 0  # type: ignore[misc]
    assert page.to_dict()["items"][0]["session_id"] == summary.session_id
    assert isinstance(page.to_dict()["next_page_token"], str)


def test_every_record_to_dict_is_what_asdict_gives(dataset: list[Record]) -> None:
    # The records build their dicts by hand (asdict is slow): a field added to a record
    # but not to its to_dict(), or a container shared instead of copied, fails here.
    now = BASE_MS + 9 * DAY_MS
    report = sessiontrace.user_report("user-5", days=None, now_ms=now)
    assert report is not None and report.tags
    records = [
        *sessiontrace.list_sessions(max_results=5),
        *sessiontrace.session_flow("session-3"),
        *sessiontrace.list_users(max_results=5),
        report,
        *report.daily_activity,
        *sessiontrace.metadata_breakdown("app_version"),
        # no LLM calls in this dataset: tests/cost/ has those
        sessiontrace.ModelSummary("gpt-4o-mini", "openai", 1, 1, 2, 30, 4, 34, 0.5, 1),
        # no feedback in this dataset: tests/feedback/ has that
        sessiontrace.FeedbackStats("thumbs", 3, 2, 1, 2 / 3, None),
        sessiontrace.DailyFeedback("2025-12-13", None),
    ]
    kinds = {type(r).__name__ for r in records}
    exported = {n for n in sessiontrace._analytics.__all__ if n[0].isupper()}
    assert kinds == exported
    for record in records:
        as_dict = record.to_dict()
        assert as_dict == dataclasses.asdict(record)
        assert list(as_dict) == [f.name for f in dataclasses.fields(record)]
    turn = sessiontrace.session_flow("session-3")[0]
    turn.to_dict()["request"]["message"] = "changed"
    assert turn.request["message"] != "changed"
