"""``log_feedback`` and its siblings: MLflow 3's assessment API on our stores.

Each call writes at once, on the caller's thread, in its own transaction, keyed by
trace id: a live trace (started, not finished) takes feedback before its trace row
exists. A trace id that is neither live nor stored (after a flush of what is
queued) raises ``TraceNotFoundError``. With an http(s) tracking URI the change
goes through the pipeline, behind the trace it is about, as an
``AssessmentChange`` the server applies; reading assessments back then happens on
the server (its UI and JSON API).
"""

from __future__ import annotations

from typing import Any

from . import _runtime, _tracing
from ._assessments import (
    DEFAULT_FEEDBACK_NAME,
    Assessment,
    AssessmentError,
    AssessmentSource,
    Expectation,
    Feedback,
    new_assessment_id,
)
from ._records import AssessmentChange
from ._store import TraceNotFoundError
from ._store._assess import update_fields

__all__ = [
    "delete_assessment",
    "get_assessment",
    "log_expectation",
    "log_feedback",
    "override_feedback",
    "update_assessment",
]


def _trace_id(trace_id: str | None) -> str:
    """The id given, else the active trace's, else the last finished one's."""
    if trace_id is None:
        span = _tracing.get_current_active_span()
        trace_id = span.trace_id if span is not None else _tracing.get_last_active_trace_id()
        if trace_id is None:
            raise ValueError("trace_id is required: no trace is active or was logged yet")
    if not isinstance(trace_id, str) or not trace_id:
        raise ValueError(f"trace_id must be a non-empty str, got {trace_id!r}")
    return trace_id


def _require_trace(trace_id: str) -> None:
    """Raise ``TraceNotFoundError`` unless the trace is live or stored (a local store)."""
    live = _tracing._live_traces.get(trace_id)
    if live is not None and not live.done:
        return
    store = _runtime.get_store()
    if store.trace_owner(trace_id) is not None:
        return
    _runtime.flush(_runtime.settings().shutdown_timeout)  # it may still be queued
    if store.trace_owner(trace_id) is None:
        raise TraceNotFoundError(trace_id)


def _log(trace_id: str, assessment: Assessment) -> Assessment:
    assessment.trace_id = trace_id
    if not _runtime.store_is_local():
        assessment.assessment_id = new_assessment_id()
        _runtime.submit(
            AssessmentChange(trace_id, "put", assessment.assessment_id, assessment.to_dictionary())
        )
        return assessment
    _require_trace(trace_id)
    return _runtime.get_store().put_assessment(assessment)


def log_feedback(
    trace_id: str | None = None,
    name: str = DEFAULT_FEEDBACK_NAME,
    value: Any = None,
    source: AssessmentSource | None = None,
    error: Exception | AssessmentError | None = None,
    rationale: str | None = None,
    metadata: dict[str, Any] | None = None,
    span_id: str | None = None,
) -> Feedback:
    """Record feedback on a trace, live or logged: a user's thumbs up, a judge's score.

    ``value`` is a bool, a finite number, a str, or a JSON-able list or dict; or give
    ``error`` (an exception or ``AssessmentError``) when there is no value. The source
    defaults to ``CODE``, as MLflow's. Returns the stored ``Feedback`` (with its
    ``assessment_id``); ``trace_id`` defaults to the active, else the last, trace.

    >>> sessiontrace.log_feedback(
    ...     trace_id=tid, name="thumbs_up", value=True, rationale="answered my question",
    ...     source=sessiontrace.AssessmentSource(source_type="HUMAN", source_id="user-123"),
    ... )
    """
    if value is None and error is None:
        raise ValueError("log_feedback needs a value or an error")
    feedback = Feedback(
        name=name,
        value=value,
        error=error,
        source=source,
        rationale=rationale,
        metadata=metadata,
        span_id=span_id,
    )
    stored = _log(_trace_id(trace_id), feedback)
    assert isinstance(stored, Feedback)
    return stored


def log_expectation(
    trace_id: str | None = None,
    name: str = "expectation",
    value: Any = None,
    source: AssessmentSource | None = None,
    metadata: dict[str, Any] | None = None,
    span_id: str | None = None,
) -> Expectation:
    """Record the expected outcome of a trace (a ground-truth answer); the source
    defaults to ``HUMAN``, as MLflow's."""
    expectation = Expectation(
        name=name, value=value, source=source, metadata=metadata, span_id=span_id
    )
    stored = _log(_trace_id(trace_id), expectation)
    assert isinstance(stored, Expectation)
    return stored


def get_assessment(trace_id: str, assessment_id: str) -> Assessment:
    """The assessment with that id on that trace; ``AssessmentNotFoundError`` if none.
    (With an http(s) tracking URI: ``ValueError``, as ``get_trace``: read on the server.)"""
    return _runtime.get_store().get_assessment(trace_id, assessment_id)


def update_assessment(trace_id: str, assessment_id: str, assessment: Assessment) -> Assessment:
    """Change an assessment in place: its name and value (and a feedback's error)
    become ``assessment``'s, as do its rationale and metadata when given (metadata
    keys are merged). Its id, source and creation time stay."""
    if not isinstance(assessment, Assessment):
        raise TypeError(f"assessment must be a Feedback or an Expectation, got {assessment!r}")
    if not _runtime.store_is_local():
        _runtime.submit(
            AssessmentChange(trace_id, "update", assessment_id, assessment.to_dictionary())
        )
        return assessment
    store = _runtime.get_store()
    changes = update_fields(store.connection().execute, trace_id, assessment_id, assessment)
    return store.update_assessment(trace_id, assessment_id, **changes)


def override_feedback(
    trace_id: str,
    assessment_id: str,
    value: Any,
    rationale: str | None = None,
    source: AssessmentSource | None = None,
    metadata: dict[str, Any] | None = None,
) -> Feedback:
    """Correct a feedback, keeping the original as MLflow does: a new feedback with
    the old one's name and span, whose ``overrides`` names the old one, which is
    marked ``valid=False`` (filters and roll-ups then count only the new one).
    Deleting the new one makes the old one valid again."""
    new = Feedback(
        name=DEFAULT_FEEDBACK_NAME,
        value=value,
        rationale=rationale,
        source=source,
        metadata=metadata,
        overrides=assessment_id,
    )
    new.trace_id = trace_id
    if not _runtime.store_is_local():
        new.assessment_id = new_assessment_id()
        _runtime.submit(AssessmentChange(trace_id, "override", assessment_id, new.to_dictionary()))
        return new
    store = _runtime.get_store()
    old = store.get_assessment(trace_id, assessment_id)
    if not isinstance(old, Feedback):
        raise ValueError(f"The assessment with ID {assessment_id} is not a feedback assessment.")
    new.name, new.span_id = old.name, old.span_id
    stored = store.override_assessment(trace_id, assessment_id, new)
    assert isinstance(stored, Feedback)
    return stored


def delete_assessment(trace_id: str, assessment_id: str) -> None:
    """Delete an assessment (``AssessmentNotFoundError`` if there is none). Deleting
    an override makes the feedback it overrode valid again, as in MLflow."""
    if not _runtime.store_is_local():
        _runtime.submit(AssessmentChange(trace_id, "delete", assessment_id, None))
        return
    _runtime.get_store().delete_assessment(trace_id, assessment_id)
