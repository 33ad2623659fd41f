"""Finished-trace records: what traced code hands to the pipeline and every sink receives.

Three types, one per kind of pipeline item:

- ``TraceRecord``: a trace whose root span has ended, with all its spans;
- ``SpanRecord``: one span; on its own (not inside a ``TraceRecord``) it is a span
  that ended after its trace was handed over (a thread or task that outlived the
  root), which a store appends to the trace it already has;
- ``TagChange``: a tag set (``value`` a str) or deleted (``value`` None) on a trace
  already handed over;
- ``AssessmentChange``: feedback or an expectation logged, overridden, updated or
  deleted, sent to a remote server (a local store is written at once).

Records are named tuples: immutable, no per-instance ``__dict__``, and made on the
app's thread at the cost of one tuple. Their dicts and lists (metadata, tags,
attributes, events) belong to the record: nothing changes them once the record is
made (tracing copies on write), so a sink may read them from any thread. Inputs,
outputs and attribute values are JSON-able already (inputs and outputs as JSON text,
encoded at capture). Being tuples, records compare equal field by field.

This module imports nothing from the package: tracing produces records, the
pipeline carries them, sinks consume them, and none of those needs the others.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["AssessmentChange", "Record", "SpanRecord", "TagChange", "TraceRecord"]

_new = tuple.__new__


class SpanRecord(NamedTuple):
    """A span as recorded: times in nanoseconds since the epoch, ``end_ns`` None
    while it was still running when its trace was handed over."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    span_type: str
    start_ns: int
    end_ns: int | None
    status: str
    status_message: str
    inputs_json: str | None
    outputs_json: str | None
    attributes: dict[str, Any] | None
    events: list[dict[str, Any]] | None

    def with_attributes(self, attributes: dict[str, Any] | None) -> SpanRecord:
        """The same span with other attributes (how pricing adds the cost)."""
        # ``_replace`` costs a Python-level dict round trip; a slice does not.
        return _new(SpanRecord, (*self[:11], attributes, self[12]))


class TraceRecord(NamedTuple):
    """A finished trace: its root span (also in ``spans``) and all its spans in the
    order they started."""

    trace_id: str
    start_ns: int
    end_ns: int
    state: str
    root: SpanRecord
    spans: tuple[SpanRecord, ...]
    metadata: dict[str, str]
    tags: dict[str, str]
    request_preview: str | None
    response_preview: str | None
    client_request_id: str | None

    def with_spans(self, spans: tuple[SpanRecord, ...]) -> TraceRecord:
        """The same trace with other versions of its spans (same ids)."""
        root_id = self.root.span_id
        root = next((s for s in spans if s.span_id == root_id), self.root)
        return _new(TraceRecord, (*self[:4], root, spans, *self[6:]))


class TagChange(NamedTuple):
    """Set (``value`` a str) or delete (``value`` None) a tag on a handed-over trace."""

    trace_id: str
    key: str
    value: str | None


class AssessmentChange(NamedTuple):
    """An assessment written (``op`` "put"), overriding the one ``assessment_id``
    names ("override"), replacing its fields ("update"), or deleted ("delete").
    ``assessment`` is the new one in ``Assessment.to_dictionary()``'s form (None for
    "delete"); for "put" ``assessment_id`` is its id."""

    trace_id: str
    op: str
    assessment_id: str
    assessment: dict[str, Any] | None


Record = TraceRecord | SpanRecord | TagChange | AssessmentChange
"""Any item the pipeline carries to a sink."""
