"""feedback.<name> and expectation.<name> filters, run on both stores."""

from __future__ import annotations

from typing import Any

import pytest

import sessiontrace
from sessiontrace import FilterSyntaxError

pytestmark = pytest.mark.backends


def _trace(user: str) -> str:
    with sessiontrace.user_session(user_id=user), sessiontrace.start_span("chat") as span:
        return span.trace_id


@pytest.fixture
def traces(store: Any) -> dict[str, str]:
    """Six traces: their feedback, one overridden, one an expectation."""
    t = {name: _trace("user-123" if name != "other" else "user-9") for name in
         ["up", "down", "score", "text", "other", "none"]}  # fmt: skip
    sessiontrace.log_feedback(trace_id=t["up"], name="thumbs_up", value=True)
    sessiontrace.log_feedback(trace_id=t["down"], name="thumbs_up", value=False)
    sessiontrace.log_feedback(trace_id=t["other"], name="thumbs_up", value=False)
    old = sessiontrace.log_feedback(trace_id=t["score"], name="relevance", value=0.2)
    sessiontrace.override_feedback(trace_id=t["score"], assessment_id=old.assessment_id, value=0.9)
    sessiontrace.log_feedback(trace_id=t["text"], name="comment", value="it's great")
    sessiontrace.log_feedback(trace_id=t["text"], name="count", value=4)
    sessiontrace.log_expectation(trace_id=t["text"], name="expected", value="Paris")
    sessiontrace.flush()
    return t


def _ids(filter_string: str) -> set[str]:
    return {x.info.trace_id for x in sessiontrace.search_traces(filter_string, return_type="list")}


def test_the_issue_example(traces: dict[str, str]) -> None:
    assert _ids("feedback.thumbs_up = false AND user = 'user-123'") == {traces["down"]}
    assert _ids("feedback.thumbs_up = true") == {traces["up"]}
    assert _ids("feedback.thumbs_up = FALSE") == {traces["down"], traces["other"]}
    assert _ids("feedback.thumbs_up != false") == {traces["up"]}


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        # only the valid (overriding) value counts
        ("feedback.relevance > 0.5", {"score"}),
        ("feedback.relevance < 0.5", set()),
        ("feedback.relevance >= 0.9", {"score"}),
        ("feedback.relevance <= 0.2", set()),
        ("feedback.count > 3", {"text"}),
        ("feedback.count = '4'", {"text"}),  # MLflow's quoted form of any value
        ("feedback.thumbs_up = 'true'", {"up"}),
        ("feedback.thumbs_up > 0", set()),  # booleans are not numbers here
        ("feedback.comment = 'it''s great'", {"text"}),
        ("feedback.comment != 'nope'", {"text"}),
        ("feedback.comment LIKE 'it%'", {"text"}),
        ("feedback.comment LIKE 'IT%'", set()),
        ("feedback.comment ILIKE 'IT%'", {"text"}),
        ("feedback.comment RLIKE 'gr[e]at$'", {"text"}),
        ("feedback.thumbs_up IS NOT NULL", {"up", "down", "other"}),
        ("feedback.thumbs_up IS NULL AND user = 'user-123'", {"score", "text", "none"}),
        ("expectation.expected = 'Paris'", {"text"}),
        ("feedback.expected = 'Paris'", set()),  # an expectation, not a feedback
        ("expectation.thumbs_up IS NOT NULL", set()),
        ("feedback.`thumbs_up` = true OR feedback.relevance > 0.5", {"up", "score"}),
        ("NOT feedback.thumbs_up = false AND user = 'user-123'", {"up", "score", "text", "none"}),
        ("feedback.nothing = 'x'", set()),
    ],
)
def test_filters(traces: dict[str, str], filter_string: str, expected: set[str]) -> None:
    assert _ids(filter_string) == {traces[k] for k in expected}


def test_overridden_value_matches_again_once_its_override_is_deleted(store: Any) -> None:
    tid = _trace("u")
    old = sessiontrace.log_feedback(trace_id=tid, name="relevance", value=0.2)
    new = sessiontrace.override_feedback(trace_id=tid, assessment_id=old.assessment_id, value=0.9)
    assert _ids("feedback.relevance < 0.5") == set()
    sessiontrace.delete_assessment(tid, new.assessment_id)
    assert _ids("feedback.relevance < 0.5") == {tid}


def test_filters_in_analytics(traces: dict[str, str]) -> None:
    sessions = sessiontrace.list_users(filter_string="feedback.thumbs_up = false")
    assert sorted(u.user_id for u in sessions) == ["user-123", "user-9"]


@pytest.mark.parametrize(
    ("filter_string", "message"),
    [
        # MLflow's messages, for what MLflow rejects
        (
            "feedback.x = 5",
            "Expected a quoted string value for feedback (e.g. 'my-value'). Got value 5",
        ),
        (
            "expectation.x != 1.5",
            "Expected a quoted string value for expectation (e.g. 'my-value'). Got value 1.5",
        ),
        (
            "feedback.x > 'a'",
            "Expected a numeric value for feedback when using comparator '>'. Got value 'a'",
        ),
        (
            "feedback.x <= true",
            "Expected a numeric value for feedback when using comparator '<='. Got value true",
        ),
        (
            "feedback.x LIKE true",
            "Expected a quoted string value for feedback (e.g. 'my-value'). Got value true",
        ),
        ("feedback.x IN ('a')", "assessment.x comparator 'IN' not one of"),
        ("feedback.x NOT IN ('a')", "assessment.x comparator 'NOT IN' not one of"),
        ("feedback.`` = 'a'", "Assessment field name cannot be empty"),
        ("feedback.x = yes", "Expected a quoted string value for feedback"),
    ],
)
def test_misuses_get_mlflows_messages(store: Any, filter_string: str, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        sessiontrace.search_traces(filter_string)
    assert message in str(info.value)


def test_cannot_order_by_feedback(store: Any) -> None:
    with pytest.raises(FilterSyntaxError, match="cannot order by feedback"):
        sessiontrace.search_traces(order_by=["feedback.x DESC"])


def test_hostile_names_and_values_stay_bound(store: Any) -> None:
    tid = _trace("u")
    name = "x'); DROP TABLE traces; --"
    sessiontrace.log_feedback(trace_id=tid, name=name, value="a'b\"")
    assert _ids("feedback.`x'); DROP TABLE traces; --` = 'a''b\"'") == {tid}
    assert store.count_traces() == 1


def test_a_nul_in_a_value_cannot_fail_a_search(store: Any) -> None:
    """PostgreSQL's text cannot hold NUL: the JSON escape is stored, and read with a
    replacement character, as span attributes are."""
    tid = _trace("u")
    sessiontrace.log_feedback(trace_id=tid, name="c", value="a\u0000b")
    assert _ids("feedback.c LIKE 'a%'") == {tid}
    assert _ids("feedback.c = 'x'") == set()
    got = sessiontrace.get_trace(tid).info.assessments[0].value  # type: ignore[union-attr]
    assert got == "a\u0000b"
