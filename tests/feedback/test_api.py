"""The public assessment API on live and logged traces, on both stores."""

from __future__ import annotations

from typing import Any

import pytest

import sessiontrace
from sessiontrace import (
    AssessmentNotFoundError,
    AssessmentSource,
    Expectation,
    Feedback,
    TraceNotFoundError,
)

pytestmark = pytest.mark.backends

USER = AssessmentSource(source_type="HUMAN", source_id="user-123")


def _logged_trace() -> str:
    with (
        sessiontrace.user_session(user_id="user-123", session_id="s-1"),
        sessiontrace.start_span("chat") as span,
    ):
        tid = span.trace_id
    return tid


def test_log_feedback_on_a_logged_trace(store: Any) -> None:
    tid = _logged_trace()
    fb = sessiontrace.log_feedback(
        trace_id=tid, name="thumbs_up", value=True, source=USER, rationale="answered my question"
    )
    assert isinstance(fb, Feedback) and fb.trace_id == tid and fb.assessment_id
    assert sessiontrace.get_assessment(tid, fb.assessment_id) == fb
    trace = sessiontrace.get_trace(tid)
    assert trace is not None
    assert trace.info.assessments == [fb]
    d = trace.info.to_dict()["assessments"][0]
    assert d["assessment_name"] == "thumbs_up" and d["feedback"] == {"value": True}
    assert d["source"] == {"source_type": "HUMAN", "source_id": "user-123"}
    assert d["rationale"] == "answered my question" and d["valid"] is True


def test_log_feedback_on_a_live_trace_before_its_row_exists(store: Any) -> None:
    with sessiontrace.start_span("chat") as span:
        tid = span.trace_id
        fb = sessiontrace.log_feedback(trace_id=tid, name="quality", value=0.8)
        # written at once, keyed by trace id, though the trace is not stored yet
        assert store.trace_owner(tid) is None
        assert store.get_assessment(tid, fb.assessment_id).value == 0.8
    sessiontrace.flush()
    trace = sessiontrace.get_trace(tid)
    assert trace is not None and [a.value for a in trace.info.assessments] == [0.8]


def test_log_feedback_defaults_to_the_active_then_the_last_trace(store: Any) -> None:
    with sessiontrace.start_span("chat") as span:
        inside = sessiontrace.log_feedback(name="x", value=1)
        assert inside.trace_id == span.trace_id
    after = sessiontrace.log_feedback(name="y", value=2)
    assert after.trace_id == span.trace_id
    assert after.source.source_type == "CODE" and after.source.source_id == "default"


def test_a_trace_still_queued_is_found_after_a_flush(store: Any) -> None:
    tid = _logged_trace()  # handed to the pipeline, maybe not written yet
    assert sessiontrace.log_feedback(trace_id=tid, value="ok").trace_id == tid


def test_unknown_trace_raises(store: Any) -> None:
    with pytest.raises(TraceNotFoundError):
        sessiontrace.log_feedback(trace_id="tr-unknown", value=True)
    with pytest.raises(TraceNotFoundError):
        sessiontrace.log_expectation(trace_id="tr-unknown", name="e", value=1)
    assert store.assessments_for(["tr-unknown"]) == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": float("nan")}, "finite"),
        ({"value": float("inf")}, "finite"),
        ({"value": object()}, "JSON-able"),
        ({"value": {1: "a"}}, "keys"),
        ({"value": True, "name": ""}, "name"),
        ({"value": True, "name": "x" * 300}, "at most"),
        ({"value": None}, "value or an error"),
        ({"value": True, "source": "HUMAN"}, "AssessmentSource"),
        ({"value": True, "metadata": ["a"]}, "metadata"),
        ({"value": True, "rationale": 5}, "rationale"),
    ],
)
def test_bad_input_is_a_clear_error(store: Any, kwargs: dict[str, Any], message: str) -> None:
    tid = _logged_trace()
    with pytest.raises(ValueError, match=message):
        sessiontrace.log_feedback(trace_id=tid, **kwargs)
    sessiontrace.flush()
    assert store.assessments_for([tid]) == {}


def test_bad_source_type() -> None:
    with pytest.raises(ValueError, match="Invalid assessment source type"):
        AssessmentSource(source_type="ROBOT")
    assert AssessmentSource(source_type="llm_judge").source_type == "LLM_JUDGE"
    assert AssessmentSource(source_type="AI_JUDGE").source_type == "LLM_JUDGE"


def test_log_expectation(store: Any) -> None:
    tid = _logged_trace()
    e = sessiontrace.log_expectation(trace_id=tid, name="expected_answer", value=["Paris"])
    assert isinstance(e, Expectation) and e.source.source_type == "HUMAN"
    got = sessiontrace.get_assessment(tid, e.assessment_id)
    assert isinstance(got, Expectation) and got.value == ["Paris"]
    assert got.to_dictionary()["expectation"] == {
        "serialized_value": {"serialization_format": "JSON_FORMAT", "value": '["Paris"]'}
    }
    with pytest.raises(ValueError, match="must be specified"):
        sessiontrace.log_expectation(trace_id=tid, name="e", value=None)


def test_override_feedback_keeps_the_original(store: Any) -> None:
    tid = _logged_trace()
    judge = AssessmentSource(source_type="LLM_JUDGE", source_id="gpt-4")
    old = sessiontrace.log_feedback(trace_id=tid, name="relevance", value=0.6, source=judge)
    new = sessiontrace.override_feedback(
        trace_id=tid, assessment_id=old.assessment_id, value=0.9, rationale="better", source=USER
    )
    assert new.name == "relevance" and new.overrides == old.assessment_id and new.valid
    info = sessiontrace.get_trace(tid).info  # type: ignore[union-attr]
    by_id = {a.assessment_id: a for a in info.assessments}
    assert by_id[old.assessment_id].valid is False and by_id[old.assessment_id].value == 0.6
    assert by_id[new.assessment_id].valid is True
    e = sessiontrace.log_expectation(trace_id=tid, name="e", value=1)
    with pytest.raises(ValueError, match="not a feedback assessment"):
        sessiontrace.override_feedback(trace_id=tid, assessment_id=e.assessment_id, value=2)
    with pytest.raises(AssessmentNotFoundError):
        sessiontrace.override_feedback(trace_id=tid, assessment_id="a-nope", value=2)
    sessiontrace.delete_assessment(tid, new.assessment_id)
    assert sessiontrace.get_assessment(tid, old.assessment_id).valid is True


def test_update_assessment(store: Any) -> None:
    tid = _logged_trace()
    fb = sessiontrace.log_feedback(
        trace_id=tid, name="thumbs_up", value=True, source=USER, metadata={"a": "1"}
    )
    updated = sessiontrace.update_assessment(
        tid,
        fb.assessment_id,
        Feedback(name="thumbs_up", value=False, rationale="wrong", metadata={"b": "2"}),
    )
    assert updated.assessment_id == fb.assessment_id and updated.value is False
    assert updated.source == USER  # kept
    got = sessiontrace.get_assessment(tid, fb.assessment_id)
    assert got.value is False and got.rationale == "wrong" and got.metadata == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="Cannot update assessment type"):
        sessiontrace.update_assessment(tid, fb.assessment_id, Expectation(name="x", value=1))


def test_delete_assessment(store: Any) -> None:
    tid = _logged_trace()
    fb = sessiontrace.log_feedback(trace_id=tid, value=True)
    sessiontrace.delete_assessment(tid, fb.assessment_id)
    with pytest.raises(AssessmentNotFoundError):
        sessiontrace.get_assessment(tid, fb.assessment_id)
    with pytest.raises(AssessmentNotFoundError):
        sessiontrace.delete_assessment(tid, fb.assessment_id)


def test_every_read_path_fills_assessments(store: Any) -> None:
    tids = [_logged_trace() for _ in range(3)]
    fb = sessiontrace.log_feedback(trace_id=tids[1], name="thumbs_up", value=False)
    listed = sessiontrace.search_traces(return_type="list")
    by_id = {t.info.trace_id: t.info.assessments for t in listed}
    assert by_id == {tids[0]: [], tids[1]: [fb], tids[2]: []}
    loaded = store.load_traces(tids, include_spans=False)
    assert [t.info.assessments for t in loaded] == [[], [fb], []]
    no_spans = sessiontrace.search_traces(return_type="list", include_spans=False)
    assert {t.info.trace_id: t.info.assessments for t in no_spans} == by_id


def test_feedback_round_trips_mlflow_dictionary() -> None:
    fb = Feedback(
        name="q",
        value={"a": [1, 2]},
        source=USER,
        rationale="r",
        metadata={"k": "v"},
        span_id="s",
        create_time_ms=1_700_000_000_123,
        last_update_time_ms=1_700_000_000_000,
    )
    fb.trace_id, fb.assessment_id = "tr-1", "a-1"
    d = fb.to_dictionary()
    assert d["create_time"] == "2023-11-14T22:13:20.123Z"
    assert d["last_update_time"] == "2023-11-14T22:13:20Z"
    assert sessiontrace.Assessment.from_dictionary(d) == fb


def test_dataframe_assessments_column(store: Any) -> None:
    pytest.importorskip("pandas")
    tids = [_logged_trace() for _ in range(2)]
    fb = sessiontrace.log_feedback(trace_id=tids[0], name="thumbs_up", value=False, source=USER)
    for include_spans in (True, False):
        df = sessiontrace.search_traces(include_spans=include_spans)
        by_id = dict(zip(df["trace_id"], df["assessments"], strict=True))
        assert by_id[tids[1]] == []
        assert by_id[tids[0]] == [fb.to_dictionary()]
        traces = dict(zip(df["trace_id"], df["trace"], strict=True))
        assert traces[tids[0]].info.assessments == [fb]  # built when first read
        assert traces[tids[1]].info.assessments == []


def test_trace_search_assessments(store: Any) -> None:
    tid = _logged_trace()
    old = sessiontrace.log_feedback(trace_id=tid, name="q", value=1, span_id="s1")
    new = sessiontrace.override_feedback(trace_id=tid, assessment_id=old.assessment_id, value=2)
    e = sessiontrace.log_expectation(trace_id=tid, name="q", value="x")
    trace = sessiontrace.get_trace(tid)
    assert trace is not None

    def ids(found: list[Any]) -> list[str]:  # in creation order; ties in a ms by id
        return sorted(str(a.assessment_id) for a in found)

    assert ids(trace.search_assessments("q")) == ids([new, e])
    assert ids(trace.search_assessments("q", all=True)) == ids([old, new, e])
    assert trace.search_assessments(type="expectation") == [e]
    found = trace.search_assessments(span_id="s1", all=True, type="feedback")
    assert ids(found) == ids([old, new])


def test_text_no_store_can_hold_is_cleaned_not_refused(store: Any) -> None:
    """A NUL (PostgreSQL's text cannot hold one) and a lone surrogate (UTF-8 cannot
    encode it), in a name, rationale, source id or value, on both stores."""
    tid = _logged_trace()
    fb = sessiontrace.log_feedback(
        trace_id=tid,
        name="n\x00",
        value="v\ud800\x00",
        rationale="r\x00\ud83d",
        source=AssessmentSource(source_type="HUMAN", source_id="u\x00"),
        metadata={"k\ud800": "x\x00"},
    )
    got = sessiontrace.get_assessment(tid, fb.assessment_id)
    assert got.name == "n\ufffd" and got.rationale == "r\ufffd?"
    assert got.value == "v?\x00"  # JSON escapes the NUL: kept
    assert got.source.source_id == "u\ufffd" and got.metadata == {"k?": "x\x00"}
