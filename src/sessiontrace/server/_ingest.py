"""Validate ingest batches (the wire format of ``sessiontrace._export._wire``).

Validation is strict about shape and sizes and says where a payload is wrong; the
validated items become the same records (``TraceRecord``, ``SpanRecord``,
``TagChange``, ``AssessmentChange``) that the in-process pipeline hands to the store,
so both paths write identical rows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .._assessments import Assessment
from .._records import AssessmentChange, SpanRecord, TagChange, TraceRecord
from .._serialize import dumps

__all__ = ["Batch", "IngestError", "parse_batch"]

_ID = Annotated[str, Field(min_length=1, max_length=256)]
_KEY = Annotated[str, Field(min_length=1, max_length=1000)]
_VALUE = Annotated[str, Field(max_length=8000)]
_NS = Annotated[int, Field(ge=0, lt=2**63)]
_Status = Literal["OK", "ERROR", "UNSET"]
_MAX_SPANS = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireEvent(_Model):
    name: Annotated[str, Field(max_length=1000)]
    timestamp_ns: _NS
    attributes: dict[str, Any] = Field(default_factory=dict)


class WireSpan(_Model):
    span_id: _ID
    parent_id: _ID | None = None
    name: Annotated[str, Field(max_length=1000)]
    span_type: Annotated[str, Field(max_length=100)] = "UNKNOWN"
    start_ns: _NS
    end_ns: _NS | None = None
    status: _Status = "UNSET"
    status_message: Annotated[str, Field(max_length=20_000)] = ""
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: Annotated[list[WireEvent], Field(max_length=10_000)] = Field(default_factory=list)


class WireTrace(_Model):
    kind: Literal["trace"]
    trace_id: _ID
    start_ns: _NS
    end_ns: _NS
    state: Literal["OK", "ERROR"]
    metadata: dict[_KEY, _VALUE] = Field(default_factory=dict)
    tags: dict[_KEY, _VALUE] = Field(default_factory=dict)
    client_request_id: Annotated[str, Field(max_length=1000)] | None = None
    request_preview: Annotated[str, Field(max_length=10_000)] | None = None
    response_preview: Annotated[str, Field(max_length=10_000)] | None = None
    # Exactly one root span: checked while converting (_to_record), where the
    # spans are walked anyway; a validator called back from pydantic-core per trace
    # cost more than the check.
    spans: Annotated[list[WireSpan], Field(min_length=1, max_length=_MAX_SPANS)]


class WireLateSpan(WireSpan):
    kind: Literal["span"]
    trace_id: _ID


class WireTagOp(_Model):
    kind: Literal["tag"]
    trace_id: _ID
    key: _KEY
    value: _VALUE | None


_TEXT = Annotated[str, Field(max_length=20_000)]


class WireSource(_Model):
    source_type: Annotated[str, Field(max_length=100)]
    source_id: _KEY | None = None


class WireAssessmentError(_Model):
    error_code: Annotated[str, Field(max_length=1000)]
    error_message: _TEXT | None = None
    stack_trace: _TEXT | None = None


class WireFeedbackValue(_Model):
    value: Any = None
    error: WireAssessmentError | None = None


class WireAssessment(_Model):
    """``Assessment.to_dictionary()``'s shape, bounded; its values are checked again
    when it becomes an ``Assessment``."""

    assessment_id: _ID | None = None
    assessment_name: Annotated[str, Field(min_length=1, max_length=256)]
    trace_id: _ID | None = None
    span_id: _ID | None = None
    source: WireSource
    create_time: Annotated[str, Field(max_length=64)] | int | None = None
    last_update_time: Annotated[str, Field(max_length=64)] | int | None = None
    feedback: WireFeedbackValue | None = None
    expectation: dict[str, Any] | None = None
    rationale: _TEXT | None = None
    metadata: Annotated[dict[_KEY, _VALUE], Field(max_length=100)] | None = None
    overrides: _ID | None = None
    valid: bool | None = None


class WireAssessmentOp(_Model):
    kind: Literal["assessment"]
    trace_id: _ID
    op: Literal["put", "override", "update", "delete"]
    assessment_id: _ID
    assessment: WireAssessment | None = None


_Item = Annotated[
    WireTrace | WireLateSpan | WireTagOp | WireAssessmentOp, Field(discriminator="kind")
]


class Batch(_Model):
    version: Literal[1]
    items: list[_Item]


_batch = TypeAdapter(Batch)


class IngestError(ValueError):
    """A payload that does not validate; ``errors`` is a short list of what and where."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid batch")
        self.errors = errors


def parse_batch(body: bytes, *, max_items: int) -> list[Any]:
    """Validate a JSON body and turn it into store items; raises ``IngestError``."""
    from pydantic import ValidationError

    try:
        batch = _batch.validate_json(body)
    except ValidationError as exc:
        errors = [
            {
                "loc": ".".join(str(p) for p in err["loc"]),
                "msg": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False)[:20]
        ]
        raise IngestError(errors) from None
    if len(batch.items) > max_items:
        raise IngestError(
            [{"loc": "items", "msg": f"at most {max_items} items a batch", "type": "too_long"}]
        )
    bad = [
        {"loc": f"items.{i}.assessment.assessment", "msg": message, "type": "value_error"}
        for i, item in enumerate(batch.items)
        if isinstance(item, WireAssessmentOp) and (message := _assessment_error(item))
    ]
    if bad:
        raise IngestError(bad[:20])
    items = [_to_record(item) for item in batch.items]
    wrong = [i for i, item in enumerate(items) if item is None]
    if wrong:
        raise IngestError(
            [
                {
                    "loc": f"items.{i}.trace.spans",
                    "msg": "Value error, a trace needs exactly one root span (parent_id null)",
                    "type": "value_error",
                }
                for i in wrong[:20]
            ]
        )
    return items


def _span_record(trace_id: str, wire: WireSpan) -> SpanRecord:
    inputs, outputs, attributes, events = wire.inputs, wire.outputs, wire.attributes, wire.events
    return SpanRecord(
        trace_id=trace_id,
        span_id=wire.span_id,
        parent_id=wire.parent_id,
        name=wire.name,
        span_type=wire.span_type,
        start_ns=wire.start_ns,
        end_ns=wire.end_ns,
        status=wire.status,
        status_message=wire.status_message,
        inputs_json=None if inputs is None else dumps(inputs),
        outputs_json=None if outputs is None else dumps(outputs),
        attributes=attributes or None,  # a frozen model's own dict: never changed
        events=[e.model_dump() for e in events] if events else None,
    )


def _assessment_error(item: WireAssessmentOp) -> str:
    """What is wrong with an assessment change ("" when nothing): a missing
    assessment, or one ``Assessment`` refuses (a NaN, an unknown source type)."""
    if item.assessment is None:
        return "" if item.op == "delete" else f"Value error, {item.op} needs an assessment"
    try:
        Assessment.from_dictionary(item.assessment.model_dump(exclude_none=True))
    except (ValueError, TypeError, KeyError) as exc:
        return f"Value error, {exc}"[:500]
    return ""


def _to_record(item: WireTrace | WireLateSpan | WireTagOp | WireAssessmentOp) -> Any:
    """The record of ``item``; ``None`` for a trace without exactly one root."""
    if isinstance(item, WireTagOp):
        return TagChange(item.trace_id, item.key, item.value)
    if isinstance(item, WireAssessmentOp):
        a = item.assessment
        return AssessmentChange(
            item.trace_id,
            item.op,
            item.assessment_id,
            None if a is None else a.model_dump(exclude_none=True),
        )
    if isinstance(item, WireLateSpan):
        return _span_record(item.trace_id, item)
    trace_id = item.trace_id
    spans = tuple([_span_record(trace_id, s) for s in item.spans])
    roots = [s for s in spans if s.parent_id is None]
    if len(roots) != 1:
        return None
    return TraceRecord(
        trace_id=trace_id,
        start_ns=item.start_ns,
        end_ns=item.end_ns,
        state=item.state,
        root=roots[0],
        spans=spans,
        metadata=dict(item.metadata),
        tags=dict(item.tags),
        request_preview=item.request_preview,
        response_preview=item.response_preview,
        client_request_id=item.client_request_id,
    )
