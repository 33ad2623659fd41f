"""The JSON wire format for finished traces: a plain serialisation of what the store gets.

One batch is ``{"version": 1, "items": [...]}``; the items keep the pipeline's order
(a tag edit after the trace it edits) and each has a ``kind``:

- ``"trace"``: ``trace_id``, ``start_ns``, ``end_ns``, ``state``, ``metadata``,
  ``tags``, ``client_request_id``, ``request_preview``, ``response_preview`` and
  ``spans`` (the root span has ``parent_id`` null);
- ``"span"``: a child span that finished after its trace was logged, with ``trace_id``;
- ``"tag"``: ``trace_id``, ``key``, ``value`` (null deletes the tag);
- ``"assessment"``: ``trace_id``, ``op`` (``put``, ``override``, ``update``,
  ``delete``), ``assessment_id`` and ``assessment`` (MLflow's dictionary form of a
  feedback or expectation; null for ``delete``).

A span is ``span_id``, ``parent_id``, ``name``, ``span_type``, ``start_ns``,
``end_ns``, ``status``, ``status_message``, ``inputs``, ``outputs``, ``attributes``
and ``events``; inputs and outputs are JSON values. Times are integer nanoseconds
since the epoch. Inputs and outputs are already JSON text in the record (encoded
at capture), so they are spliced in as they are instead of being decoded and encoded
again on the app's writer thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .._records import AssessmentChange, SpanRecord, TagChange, TraceRecord
from .._serialize import dumps

__all__ = ["WIRE_VERSION", "encode_batch", "encode_item"]

WIRE_VERSION = 1

_str = json.JSONEncoder(ensure_ascii=False).encode


def _opt(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _mapping(value: dict[str, Any] | None) -> str:
    return "{}" if not value else _str(value)


def _span(span: SpanRecord, *, with_trace_id: bool) -> str:
    head = f'{{"trace_id":{_str(span.trace_id)},' if with_trace_id else "{"
    attributes, events = span.attributes, span.events
    return (
        f'{head}"span_id":{_str(span.span_id)},"parent_id":{_opt(span.parent_id)},'
        f'"name":{_str(span.name)},"span_type":{_str(span.span_type)},'
        f'"start_ns":{int(span.start_ns)},'
        f'"end_ns":{"null" if span.end_ns is None else int(span.end_ns)},'
        f'"status":{_str(span.status)},"status_message":{_str(span.status_message or "")},'
        f'"inputs":{span.inputs_json or "null"},"outputs":{span.outputs_json or "null"},'
        f'"attributes":{dumps(attributes) if attributes else "{}"},'
        f'"events":{dumps(events) if events else "[]"}}}'
    )


def encode_item(item: Any) -> str:
    """One record (``TraceRecord``, late ``SpanRecord``, ``TagChange`` or
    ``AssessmentChange``) as JSON text."""
    if isinstance(item, TraceRecord):
        spans = ",".join([_span(s, with_trace_id=False) for s in item.spans])
        return (
            f'{{"kind":"trace","trace_id":{_str(item.trace_id)},'
            f'"start_ns":{int(item.start_ns)},'
            f'"end_ns":{"null" if item.end_ns is None else int(item.end_ns)},'
            f'"state":{_str(item.state)},"metadata":{_mapping(item.metadata)},'
            f'"tags":{_mapping(item.tags)},"client_request_id":{_opt(item.client_request_id)},'
            f'"request_preview":{_opt(item.request_preview)},'
            f'"response_preview":{_opt(item.response_preview)},"spans":[{spans}]}}'
        )
    if isinstance(item, SpanRecord):
        return '{"kind":"span",' + _span(item, with_trace_id=True)[1:]
    if isinstance(item, TagChange):
        return (
            f'{{"kind":"tag","trace_id":{_str(item.trace_id)},"key":{_str(item.key)},'
            f'"value":{_opt(item.value)}}}'
        )
    if isinstance(item, AssessmentChange):
        return (
            f'{{"kind":"assessment","trace_id":{_str(item.trace_id)},"op":{_str(item.op)},'
            f'"assessment_id":{_str(item.assessment_id)},'
            f'"assessment":{"null" if item.assessment is None else _str(item.assessment)}}}'
        )
    raise TypeError(f"cannot export {type(item).__name__}")


def encode_batch(items: Iterable[Any]) -> bytes:
    """A whole batch as UTF-8 JSON bytes."""
    return join_encoded([encode_item(i) for i in items])


def join_encoded(encoded: Sequence[str]) -> bytes:
    # "replace": a lone surrogate in a captured string must not fail the whole batch.
    text = f'{{"version":{WIRE_VERSION},"items":[' + ",".join(encoded) + "]}"
    return text.encode("utf-8", "replace")
