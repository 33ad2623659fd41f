"""Feedback roll-ups on both stores: exact numbers on a constructed store (see
``_rollup_data``), sort orders with ties and NULLs, and a Hypothesis check that
every roll-up equals a recomputation from the raw rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiontrace
from sessiontrace import FeedbackStats
from sessiontrace._analytics import daily_activity

from ._rollup_data import (
    BASE_MS,
    D0,
    D1,
    D2,
    DAY_MS,
    NOW_MS,
    TRACES,
    Assessments,
    assessments,
    rollup_store,
    write_traces,
)

pytestmark = pytest.mark.backends
__all__ = ["assessments", "rollup_store"]  # fixtures

THUMBS_S1 = FeedbackStats("thumbs", 2, 1, 1, 0.5, None)
SCORE_S1 = FeedbackStats("score", 2, 0, 0, None, 3.0)
COMMENT_S1 = FeedbackStats("comment", 1, 0, 0, None, None)
NONE: dict[str, Any] = {
    "feedback_count": 0,
    "negative_feedback": 0,
    "satisfaction": None,
    "feedback": {},
}


def _fields(record: Any) -> dict[str, Any]:
    return {k: getattr(record, k) for k in NONE}


def test_session_summaries(rollup_store: Assessments) -> None:
    by_id = {s.session_id: s for s in sessiontrace.list_sessions()}
    assert _fields(by_id["s1"]) == {
        "feedback_count": 5,  # the overridden thumbs-up is left out
        "negative_feedback": 1,
        "satisfaction": 0.5,
        "feedback": {"comment": COMMENT_S1, "score": SCORE_S1, "thumbs": THUMBS_S1},
    }
    assert list(by_id["s1"].feedback) == ["comment", "score", "thumbs"]
    assert _fields(by_id["s2"]) == {
        "feedback_count": 1,
        "negative_feedback": 1,
        "satisfaction": 0.0,
        "feedback": {"thumbs": FeedbackStats("thumbs", 1, 0, 1, 0.0, None)},
    }
    assert by_id["s3"].feedback == {"thumbs": FeedbackStats("thumbs", 2, 2, 0, 1.0, None)}
    assert _fields(by_id["s4"]) == NONE  # a trace without feedback
    assert _fields(by_id["s5"]) == NONE  # an overridden value and an expectation only
    assert sessiontrace.get_session_summary("s1") == by_id["s1"]


def test_a_filter_counts_only_the_matching_traces_feedback(rollup_store: Assessments) -> None:
    (s1,) = sessiontrace.list_sessions(f"trace.timestamp_ms < {BASE_MS + 2 * 3_600_000}")
    assert s1.session_id == "s1"
    assert s1.feedback == {
        "score": FeedbackStats("score", 1, 0, 0, None, 4.0),
        "thumbs": FeedbackStats("thumbs", 1, 1, 0, 1.0, None),
    }
    assert s1.satisfaction == 1.0 and s1.negative_feedback == 0


def test_user_summaries_and_report(rollup_store: Assessments) -> None:
    by_id = {u.user_id: u for u in sessiontrace.list_users()}
    assert _fields(by_id["u2"]) == {
        "feedback_count": 3,
        "negative_feedback": 1,
        "satisfaction": 2 / 3,
        "feedback": {"thumbs": FeedbackStats("thumbs", 3, 2, 1, 2 / 3, None)},
    }
    assert by_id["u1"].feedback_count == 5 and by_id["u1"].satisfaction == 0.5
    assert _fields(by_id["u3"]) == NONE
    report = sessiontrace.user_report("u1", days=None, now_ms=NOW_MS)
    assert report is not None
    assert _fields(report) == _fields(by_id["u1"])
    assert [(d.date, d.feedback_count) for d in report.daily_activity] == [(D0, 5)]
    # the window: t1 started more than two days before NOW_MS, t2 did not
    report = sessiontrace.user_report("u1", days=2, now_ms=NOW_MS)
    assert report is not None
    assert report.feedback == {
        "comment": COMMENT_S1,
        "score": FeedbackStats("score", 1, 0, 0, None, 2.0),
        "thumbs": FeedbackStats("thumbs", 1, 0, 1, 0.0, None),
    }
    assert report.daily_activity[0].feedback == report.feedback
    empty = sessiontrace.user_report("u3", days=None, now_ms=NOW_MS)
    assert empty is not None and _fields(empty) == NONE


def test_metadata_breakdown(rollup_store: Assessments) -> None:
    rows = {r.value: r for r in sessiontrace.metadata_breakdown("app_version")}
    assert (rows["1.0"].feedback_count, rows["1.0"].negative_feedback) == (5, 1)
    assert rows["1.0"].satisfaction == 0.5
    assert rows["2.0"].feedback == {"thumbs": FeedbackStats("thumbs", 3, 2, 1, 2 / 3, None)}
    by_user = {r.value: r for r in sessiontrace.metadata_breakdown("mlflow.trace.user")}
    assert by_user["u2"].feedback == rows["2.0"].feedback
    assert _fields(by_user["u4"]) == NONE
    filtered = sessiontrace.metadata_breakdown("app_version", "user = 'u2'")
    assert [(r.value, r.feedback_count) for r in filtered] == [("2.0", 3)]


def test_daily_activity_and_feedback_over_time(rollup_store: Assessments) -> None:
    days = daily_activity(days=10, now_ms=NOW_MS)
    assert [(d.date, d.traces, d.feedback_count, d.negative_feedback) for d in days] == [
        (D0, 2, 5, 1),
        (D1, 2, 3, 1),
        (D2, 2, 0, 0),
    ]
    over = sessiontrace.feedback_over_time()
    assert [(d.date, d.value, d.feedback_count, d.satisfaction) for d in over] == [
        (D0, None, 5, 0.5),
        (D1, None, 3, 2 / 3),
    ]
    assert over[0].feedback == {"comment": COMMENT_S1, "score": SCORE_S1, "thumbs": THUMBS_S1}
    by_version = sessiontrace.feedback_over_time(metadata_key="app_version")
    assert [(d.date, d.value, d.feedback_count) for d in by_version] == [
        (D0, "1.0", 5),
        (D1, "2.0", 3),
    ]
    assert [(d.date, d.value) for d in sessiontrace.feedback_over_time(user_id="u2")] == [
        (D1, None)
    ]
    thumbs = sessiontrace.feedback_over_time(name="thumbs", metadata_key="mlflow.trace.user")
    assert [(d.date, d.value, d.feedback_count) for d in thumbs] == [
        (D0, "u1", 2),
        (D1, "u2", 3),
    ]
    assert sessiontrace.feedback_over_time(name="nope") == ()
    recent = sessiontrace.feedback_over_time(days=2, now_ms=NOW_MS)
    assert [(d.date, d.feedback_count) for d in recent] == [(D0, 3), (D1, 3)]
    assert sessiontrace.feedback_over_time("user = 'u1'", days=1, now_ms=NOW_MS) == ()


@pytest.mark.parametrize(
    "kwargs",
    [{"days": 0}, {"days": True}, {"user_id": ""}, {"metadata_key": 3}, {"name": ""}],
)
def test_feedback_over_time_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sessiontrace.feedback_over_time(**kwargs)


def test_session_flow_lists_each_turns_feedback(rollup_store: Assessments) -> None:
    turns = sessiontrace.session_flow("s1")
    assert [[(f["name"], f["value"], f["valid"]) for f in t.feedback] for t in turns] == [
        [("thumbs", True, True), ("score", 4, True)],
        [("thumbs", True, False), ("thumbs", False, True), ("score", 2, True),
         ("comment", "meh", True)],
    ]  # fmt: skip
    first = turns[0].feedback[0]
    assert first == {
        "assessment_id": "a-000001",
        "name": "thumbs",
        "value": True,
        "rationale": None,
        "source_type": "HUMAN",
        "source_id": "src-1",
        "create_time_ms": BASE_MS + 1,
        "valid": True,
    }
    assert sessiontrace.session_flow("s4")[0].feedback == ()
    # the expectation is not feedback
    assert [f["valid"] for f in sessiontrace.session_flow("s5")[0].feedback] == [False]


def test_feedback_before_its_trace_counts_once_the_trace_arrives(
    rollup_store: Assessments,
) -> None:
    rollup_store.add([("tr-late", "thumbs", False, 1, "feedback")])
    assert "s6" not in {s.session_id for s in sessiontrace.list_sessions()}
    assert sum(d.feedback_count for d in sessiontrace.feedback_over_time()) == 8
    write_traces([("tr-late", "u1", "s6", "1.0", BASE_MS + 2 * DAY_MS + 5)])
    s6 = sessiontrace.get_session_summary("s6")
    assert s6 is not None and (s6.feedback_count, s6.negative_feedback) == (1, 1)
    u1 = next(u for u in sessiontrace.list_users() if u.user_id == "u1")
    assert (u1.feedback_count, u1.satisfaction) == (6, 1 / 3)
    assert sum(d.feedback_count for d in sessiontrace.feedback_over_time()) == 9


def test_rollups_of_feedback_logged_through_the_public_api(assessments: Assessments) -> None:
    """log_feedback, override_feedback, log_expectation and delete_assessment, live and
    logged traces: only valid feedback with a value counts."""
    human = sessiontrace.AssessmentSource(source_type="HUMAN", source_id="u1")
    with sessiontrace.user_session(user_id="u1", session_id="live"):
        with sessiontrace.start_span("turn"):
            live = sessiontrace.get_current_active_span()
            assert live is not None
            sessiontrace.log_feedback(trace_id=live.trace_id, name="thumbs", value=False)
        with sessiontrace.start_span("turn"):
            pass
    assert sessiontrace.flush(10)
    later = sessiontrace.get_last_active_trace_id()
    assert later is not None
    first = sessiontrace.log_feedback(trace_id=later, name="thumbs", value=False, source=human)
    sessiontrace.override_feedback(later, first.assessment_id, value=True)
    sessiontrace.log_feedback(trace_id=later, name="stars", value=5, rationale="great")
    gone = sessiontrace.log_feedback(trace_id=later, name="stars", value=1)
    sessiontrace.delete_assessment(later, gone.assessment_id)
    sessiontrace.log_feedback(trace_id=later, name="judge", error=RuntimeError("timed out"))
    sessiontrace.log_expectation(trace_id=later, name="thumbs", value=False)
    summary = sessiontrace.get_session_summary("live")
    assert summary is not None
    assert summary.feedback == {
        "stars": FeedbackStats("stars", 1, 0, 0, None, 5.0),
        "thumbs": FeedbackStats("thumbs", 2, 1, 1, 0.5, None),
    }
    turns = sessiontrace.session_flow("live")
    feedback = turns[1].feedback
    # Oldest first; values logged in the same millisecond keep no order among
    # themselves, except that an override follows the feedback it overrides.
    assert sorted((f["name"], str(f["value"]), f["valid"]) for f in feedback) == [
        ("judge", "None", True),
        ("stars", "5", True),
        ("thumbs", "False", False),
        ("thumbs", "True", True),
    ]
    thumbs = [f for f in feedback if f["name"] == "thumbs"]
    assert [(f["value"], f["valid"]) for f in thumbs] == [(False, False), (True, True)]
    assert thumbs[0]["source_id"] == "u1"
    assert next(f for f in feedback if f["name"] == "stars")["rationale"] == "great"


def test_model_breakdown_counts_each_feedback_once_per_model(assessments: Assessments) -> None:
    usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}

    def call(model: str) -> None:
        attributes = {"mlflow.chat.tokenUsage": usage, "mlflow.llm.model": model}
        with sessiontrace.start_span("llm", span_type="LLM", attributes=attributes):
            pass

    ids = []
    for models in (["m-1", "m-1", "m-2"], ["m-2"], ["m-1"]):
        with sessiontrace.start_span("turn"):
            for model in models:
                call(model)
        ids.append(sessiontrace.get_last_active_trace_id())
    assert sessiontrace.flush(10)
    assessments.add(
        [
            (ids[0], "thumbs", False, 1, "feedback"),
            (ids[0], "score", 3, 1, "feedback"),
            (ids[1], "thumbs", True, 1, "feedback"),
            (ids[1], "thumbs", False, 0, "feedback"),
        ]
    )
    by_model = {m.model: m for m in sessiontrace.model_breakdown()}
    assert by_model["m-1"].llm_calls == 3
    assert by_model["m-1"].feedback == {  # trace 0 called m-1 twice: its feedback counts once
        "score": FeedbackStats("score", 1, 0, 0, None, 3.0),
        "thumbs": FeedbackStats("thumbs", 1, 0, 1, 0.0, None),
    }
    assert (by_model["m-2"].feedback_count, by_model["m-2"].satisfaction) == (3, 0.5)
    only = sessiontrace.model_breakdown("trace.timestamp_ms >= 0 AND session IS NULL")
    assert {m.model: m.feedback_count for m in only} == {"m-1": 2, "m-2": 3}
    assert {m.model: m.to_dict() for m in only} == {m.model: dataclasses.asdict(m) for m in only}


# -- ordering -------------------------------------------------------------------------


def _session_ids(order_by: Any, size: int = 50) -> list[str]:
    out, token = [], None
    while True:
        page = sessiontrace.list_sessions(order_by=order_by, max_results=size, page_token=token)
        out += [s.session_id for s in page]
        token = page.next_page_token
        if token is None:
            return out


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # ties (s1 and s2 have one thumbs-down each) break by session id
        ("negative_feedback DESC", ["s1", "s2", "s3", "s4", "s5"]),
        ("negative_feedback ASC", ["s3", "s4", "s5", "s1", "s2"]),
        ("negative_feedback", ["s1", "s2", "s3", "s4", "s5"]),  # measures: largest first
        ("feedback_count DESC", ["s1", "s3", "s2", "s4", "s5"]),
        ("feedback_count ASC", ["s4", "s5", "s2", "s3", "s1"]),
        # no boolean feedback (NULL satisfaction) sorts last both ways
        ("satisfaction ASC", ["s2", "s1", "s3", "s4", "s5"]),
        ("satisfaction DESC", ["s3", "s1", "s2", "s4", "s5"]),
        (["negative_feedback DESC", "satisfaction DESC"], ["s1", "s2", "s3", "s4", "s5"]),
        (["satisfaction ASC", "session_id DESC"], ["s2", "s1", "s3", "s5", "s4"]),
    ],
)
def test_sessions_sort_by_feedback(
    rollup_store: Assessments, order_by: Any, expected: list[str]
) -> None:
    assert _session_ids(order_by) == expected
    assert _session_ids(order_by, size=2) == expected  # across pages


def test_users_and_versions_sort_by_feedback(rollup_store: Assessments) -> None:
    def users(order_by: str) -> list[str]:
        return [u.user_id for u in sessiontrace.list_users(order_by=order_by)]

    assert users("satisfaction ASC") == ["u1", "u2", "u3", "u4"]
    assert users("satisfaction DESC") == ["u2", "u1", "u3", "u4"]
    assert users("negative_feedback DESC") == ["u1", "u2", "u3", "u4"]
    assert users("feedback_count DESC") == ["u1", "u2", "u3", "u4"]
    # the sort's join must not change the other aggregates
    assert [u.traces for u in sessiontrace.list_users(order_by="feedback_count")] == [2, 2, 1, 1]

    def versions(order_by: str, key: str = "app_version") -> list[str]:
        return [r.value for r in sessiontrace.metadata_breakdown(key, order_by=order_by)]

    assert versions("satisfaction") == ["2.0", "1.0"]
    assert versions("satisfaction ASC") == ["1.0", "2.0"]
    assert versions("negative_feedback") == ["1.0", "2.0"]  # a tie: by value
    assert versions("feedback_count ASC") == ["2.0", "1.0"]
    assert versions("satisfaction ASC", "mlflow.trace.user") == ["u1", "u2", "u3", "u4"]
    traces = {r.value: r.traces for r in sessiontrace.metadata_breakdown("app_version")}
    assert {r.value: r.traces for r in sessiontrace.metadata_breakdown(
        "app_version", order_by="feedback_count")} == traces  # fmt: skip


def test_feedback_sort_keys_are_checked(rollup_store: Assessments) -> None:
    with pytest.raises(sessiontrace.FilterSyntaxError, match="cannot order by 'feedback'"):
        sessiontrace.list_sessions(order_by="feedback DESC")
    with pytest.raises(sessiontrace.FilterSyntaxError):
        sessiontrace.model_breakdown(order_by="satisfaction")


def test_records_are_their_dicts(rollup_store: Assessments) -> None:
    report = sessiontrace.user_report("u1", days=None, now_ms=NOW_MS)
    records: list[Any] = [
        *sessiontrace.list_sessions(),
        *sessiontrace.session_flow("s1"),
        *sessiontrace.list_users(),
        report,
        *sessiontrace.metadata_breakdown(),
        *sessiontrace.feedback_over_time(metadata_key="app_version"),
        THUMBS_S1,
    ]
    for record in records:
        assert record.to_dict() == dataclasses.asdict(record)
        assert list(record.to_dict()) == [f.name for f in dataclasses.fields(record)]


# -- the roll-ups equal a recomputation from the raw rows --------------------------------

FEEDBACK_ROWS = st.lists(
    st.tuples(
        st.sampled_from([t[0] for t in TRACES] + ["tr-missing"]),
        st.sampled_from(["thumbs", "score", "note", "Thumbs"]),
        st.one_of(
            st.booleans(),
            st.integers(-5, 5),
            st.floats(-10, 10, allow_nan=False).map(lambda f: round(f, 3)),
            st.sampled_from(["ok", "bad", None]),
        ),
        st.sampled_from([1, 1, 1, 0]),
        st.sampled_from(["feedback", "feedback", "feedback", "expectation"]),
    ),
    max_size=25,
)


def _recompute(
    rows: list[tuple[str, str, Any, int, str]], key: Callable[[tuple[Any, ...]], Any]
) -> dict[Any, dict[str, Any]]:
    """Per group: the fields a roll-up must have, computed in Python."""
    traces = {t[0]: t for t in TRACES}
    groups: dict[Any, dict[str, list[Any]]] = {}
    for trace_id, name, value, valid, kind in rows:
        if trace_id not in traces or not valid or kind != "feedback" or value is None:
            continue
        tally = groups.setdefault(key(traces[trace_id]), {}).setdefault(name, [])
        tally.append(value)
    out = {}
    for group, names in groups.items():
        stats = {}
        for name in sorted(names):
            values = names[name]
            pos = sum(1 for v in values if v is True)
            neg = sum(1 for v in values if v is False)
            nums = [v for v in values if type(v) in (int, float)]
            stats[name] = (
                len(values),
                pos,
                neg,
                pos / (pos + neg) if pos + neg else None,
                sum(nums) / len(nums) if nums else None,
            )
        pos = sum(s[1] for s in stats.values())
        neg = sum(s[2] for s in stats.values())
        out[group] = {
            "feedback_count": sum(s[0] for s in stats.values()),
            "negative_feedback": neg,
            "satisfaction": pos / (pos + neg) if pos + neg else None,
            "feedback": stats,
        }
    return out


def _got(record: Any) -> dict[str, Any]:
    fields = _fields(record)
    fields["feedback"] = {
        n: (s.count, s.positive, s.negative, s.positive_rate, s.mean)
        for n, s in record.feedback.items()
    }
    return fields


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return bool(a == b)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=FEEDBACK_ROWS)
def test_rollups_equal_a_recomputation_from_the_rows(
    assessments: Assessments, rows: list[tuple[str, str, Any, int, str]]
) -> None:
    if sessiontrace.get_session_summary("s1") is None:
        write_traces(TRACES)  # once per test; every example rewrites the feedback
    assessments.clear()
    assessments.add(rows)
    checks: list[tuple[Callable[[tuple[Any, ...]], Any], dict[Any, Any]]] = [
        (lambda t: t[2], {s.session_id: _got(s) for s in sessiontrace.list_sessions()}),
        (lambda t: t[1], {u.user_id: _got(u) for u in sessiontrace.list_users()}),
        (lambda t: t[3], {r.value: _got(r) for r in sessiontrace.metadata_breakdown()}),
        (
            lambda t: (_date(t[4]), t[3]),
            {
                (d.date, d.value): _got(d)
                for d in sessiontrace.feedback_over_time(metadata_key="app_version")
            },
        ),
    ]
    for key, got in checks:
        expected = _recompute(rows, key)
        for group, fields in got.items():
            assert _close(fields, expected.get(group, {**NONE})), (group, fields)
        assert set(expected) <= set(got)
    negative = [s.session_id for s in sessiontrace.list_sessions(order_by="negative_feedback")]
    counts = _recompute(rows, lambda t: t[2])
    assert negative == sorted(
        negative, key=lambda s: (-counts.get(s, NONE)["negative_feedback"], s)
    )
    least = [s.session_id for s in sessiontrace.list_sessions(order_by="satisfaction ASC")]

    def satisfaction_order(session: str) -> tuple[Any, ...]:
        rate = counts.get(session, NONE)["satisfaction"]
        return (rate is None, rate or 0.0, session)

    assert least == sorted(least, key=satisfaction_order)


def _date(ms: int) -> str:
    return {0: D0, 1: D1, 2: D2}[(ms - BASE_MS) // DAY_MS]
