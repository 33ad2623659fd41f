"""Read-side records: what ``get_trace`` and ``search_traces`` return.

Shaped like MLflow 3's ``Trace`` / ``TraceInfo`` / ``TraceData`` / ``Span`` so that
analysis code written against MLflow's documentation runs unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._assessments import Assessment
from ._serialize import loads, loads_marked

__all__ = [
    "METADATA_SESSION",
    "METADATA_USER",
    "Span",
    "SpanEvent",
    "SpanStatus",
    "SpanType",
    "Trace",
    "TraceData",
    "TraceInfo",
    "TraceState",
]

METADATA_USER = "mlflow.trace.user"
METADATA_SESSION = "mlflow.trace.session"


class TraceState:
    """Trace states, as plain strings ("OK", "ERROR", "IN_PROGRESS")."""

    OK = "OK"
    ERROR = "ERROR"
    IN_PROGRESS = "IN_PROGRESS"


class SpanStatus:
    """Span status codes, as plain strings."""

    OK = "OK"
    ERROR = "ERROR"
    UNSET = "UNSET"


class SpanType:
    """The span types MLflow defines; any other string is accepted too."""

    LLM = "LLM"
    CHAT_MODEL = "CHAT_MODEL"
    CHAIN = "CHAIN"
    AGENT = "AGENT"
    TOOL = "TOOL"
    RETRIEVER = "RETRIEVER"
    EMBEDDING = "EMBEDDING"
    RERANKER = "RERANKER"
    PARSER = "PARSER"
    MEMORY = "MEMORY"
    UNKNOWN = "UNKNOWN"
    HTTP = "HTTP"


@dataclasses.dataclass(frozen=True)
class SpanEvent:
    name: str
    timestamp_ns: int
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Span:
    """A finished span. Times are nanoseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    span_type: str
    start_time_ns: int
    end_time_ns: int | None
    status: str
    status_message: str
    inputs: Any
    outputs: Any
    attributes: dict[str, Any]
    events: list[SpanEvent]

    @property
    def request_id(self) -> str:
        return self.trace_id

    @property
    def duration_ms(self) -> float | None:
        if self.end_time_ns is None:
            return None
        return (self.end_time_ns - self.start_time_ns) / 1e6

    def get_attribute(self, key: str) -> Any:
        return self.attributes.get(key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    if not TYPE_CHECKING:  # keeps mypy's check of attribute names

        def __getattr__(self, name: str) -> Any:
            # A span read from the store decodes a JSON field when it is first read,
            # as MLflow's spans do: listing a user's traces parses no inputs.
            stored = self.__dict__.get("_stored_json")
            if stored is None or name not in _LAZY_FIELDS:
                raise AttributeError(f"'Span' object has no attribute {name!r}")
            value = _LAZY_FIELDS[name](loads(stored[_LAZY_ORDER[name]]))
            return self.__dict__.setdefault(name, value)  # first decode wins under threads


@dataclasses.dataclass
class TraceInfo:
    """A trace's summary row. ``request_time`` and ``execution_duration`` are ms."""

    trace_id: str
    request_time: int
    execution_duration: int | None
    state: str
    trace_metadata: dict[str, str]
    tags: dict[str, str]
    client_request_id: str | None = None
    request_preview: str | None = None
    response_preview: str | None = None
    name: str | None = None
    # Feedback and expectations on this trace, oldest first (``log_feedback``).
    assessments: list[Assessment] = dataclasses.field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.trace_id

    @property
    def timestamp_ms(self) -> int:
        return self.request_time

    @property
    def execution_time_ms(self) -> int | None:
        return self.execution_duration

    @property
    def status(self) -> str:
        return self.state

    @property
    def user_id(self) -> str | None:
        return self.trace_metadata.get(METADATA_USER)

    @property
    def session_id(self) -> str | None:
        return self.trace_metadata.get(METADATA_SESSION)

    @property
    def request_metadata(self) -> dict[str, str]:
        return self.trace_metadata

    @property
    def token_usage(self) -> dict[str, int] | None:
        """The trace's summed LLM token usage (``input_tokens``, ``output_tokens``,
        ``total_tokens``, cache counts when reported), as MLflow's ``TraceInfo``
        gives it from the ``mlflow.trace.tokenUsage`` metadata; ``None`` without."""
        text = self.trace_metadata.get("mlflow.trace.tokenUsage")
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def to_dict(self) -> dict[str, Any]:
        # asdict's answer, but the assessments in MLflow's dictionary form.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["trace_metadata"] = dict(self.trace_metadata)
        d["tags"] = dict(self.tags)
        d["assessments"] = [a.to_dictionary() for a in self.assessments]
        return d


@dataclasses.dataclass
class TraceData:
    spans: list[Span]

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # A trace read from the store keeps its spans as the JSON text of its row
            # (``spans_from_text``) until they are first read.
            stored = self.__dict__.get("_stored_spans")
            if stored is None or name != "spans":
                raise AttributeError(f"'TraceData' object has no attribute {name!r}")
            return self.__dict__.setdefault("spans", spans_from_text(*stored))

    @property
    def request(self) -> str | None:
        root = _root(self.spans)
        return None if root is None or root.inputs is None else _json_text(root.inputs)

    @property
    def response(self) -> str | None:
        root = _root(self.spans)
        return None if root is None or root.outputs is None else _json_text(root.outputs)


@dataclasses.dataclass
class Trace:
    info: TraceInfo
    data: TraceData

    def search_spans(self, *, name: str | None = None, span_type: str | None = None) -> list[Span]:
        return [
            s
            for s in self.data.spans
            if (name is None or s.name == name) and (span_type is None or s.span_type == span_type)
        ]

    def search_assessments(
        self,
        name: str | None = None,
        *,
        span_id: str | None = None,
        all: bool = False,  # MLflow's names
        type: str | None = None,
    ) -> list[Assessment]:
        """The trace's assessments of that name, span and type (``"feedback"`` or
        ``"expectation"``); only valid (not overridden) ones unless ``all=True``."""
        return [
            a
            for a in self.info.assessments
            if (name is None or a.name == name)
            and (span_id is None or a.span_id == span_id)
            and (all or a.valid in (True, None))
            and (type is None or a.kind == type)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info.to_dict(),
            "data": {"spans": [s.to_dict() for s in self.data.spans]},
        }

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # A DataFrame's ``trace`` column holds traces built from their store row
            # when first read (``lazy_trace``): the frame's other columns come
            # straight from the rows.
            stored = self.__dict__.get("_stored_trace")
            if stored is None or name not in ("info", "data"):
                raise AttributeError(f"'Trace' object has no attribute {name!r}")
            build, row = stored
            info, data = build(row)
            self.__dict__.setdefault("info", info)
            self.__dict__.setdefault("data", data)
            return self.__dict__[name]


def _root(spans: list[Span]) -> Span | None:
    for span in spans:
        if span.parent_id is None:
            return span
    return None


def _json_text(value: Any) -> str:
    from ._serialize import dumps

    return dumps(value)


def _attributes(value: Any) -> dict[str, Any]:
    return value or {}


def _events(value: Any) -> list[SpanEvent]:
    return [SpanEvent(e["name"], e["timestamp_ns"], e.get("attributes") or {}) for e in value or []]


# A stored span's JSON fields, in the store's column order: decoded (``loads``; NULL is
# None), then shaped by these.
_LAZY_FIELDS = {
    "inputs": lambda value: value,
    "outputs": lambda value: value,
    "attributes": _attributes,
    "events": _events,
}
_LAZY_ORDER = {name: i for i, name in enumerate(_LAZY_FIELDS)}
_LAZY_NAMES = tuple(_LAZY_FIELDS)


def decode_spans(spans: list[Span]) -> None:
    """Decode the JSON fields of many stored spans at once (a DataFrame needs them all).

    The texts go through one JSON parse, as the elements of one array, instead of
    one parse a field; what that parse cannot read (text the stdlib wrote with NaN,
    say) is decoded field by field, as a single read would. Each stored text is one
    JSON value (the store writes them with ``dumps``), so the array has one element
    a field. For spans fresh from the store that no other thread reads meanwhile.
    """
    texts: list[str] = []
    todo: list[Span] = []
    for span in spans:
        state = span.__dict__
        stored = state.get("_stored_json")
        if stored is None:
            continue
        if "inputs" in state or "outputs" in state or "attributes" in state or "events" in state:
            _decode_one_by_one(span)  # partly decoded already
            continue
        inputs, outputs, attributes, events = stored
        texts.append(
            f"{'null' if inputs is None else inputs},{'null' if outputs is None else outputs},"
            f"{'null' if attributes is None else attributes},{'null' if events is None else events}"
        )
        todo.append(span)
    if not todo:
        return
    try:
        values = loads("[" + ",".join(texts) + "]")
        if not isinstance(values, list) or len(values) != 4 * len(todo):
            raise ValueError("not one value a field")
    except ValueError:
        for span in todo:
            _decode_one_by_one(span)
        return
    for k, span in enumerate(todo):
        inputs, outputs, attributes, events = values[4 * k : 4 * k + 4]
        state = span.__dict__
        state["inputs"] = inputs
        state["outputs"] = outputs
        state["attributes"] = _attributes(attributes)
        state["events"] = _events(events)


def _decode_one_by_one(span: Span) -> None:
    for name in _LAZY_NAMES:
        getattr(span, name)


_new = object.__new__


def lazy_trace_data(trace_id: str, text: str) -> TraceData:
    """A ``TraceData`` whose spans are built from ``text`` (the trace row's JSON
    array of spans) when first read."""
    data = _new(TraceData)
    data.__dict__["_stored_spans"] = (trace_id, text)
    return data


def lazy_trace(build: Callable[[Any], tuple[TraceInfo, TraceData]], row: Any) -> Trace:
    """A ``Trace`` whose info and data are ``build(row)``, made when first read."""
    trace = _new(Trace)
    trace.__dict__["_stored_trace"] = (build, row)
    return trace


def with_assessments(trace: Trace, assessments: list[Assessment]) -> None:
    """Give ``trace`` its assessments, now or (a ``lazy_trace``) when it is built."""
    state = trace.__dict__
    if "info" in state:
        state["info"].assessments = assessments
        return
    build, row = state["_stored_trace"]

    def built(r: Any) -> tuple[TraceInfo, TraceData]:
        info, data = build(r)
        info.assessments = assessments
        return info, data

    state["_stored_trace"] = (built, row)


_start = operator.itemgetter("start_time_ns")


def span_dicts(trace_id: str, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decoded stored spans, made what ``Span.to_dict()`` gives (in place), in start
    order.

    The store writes a span as an object with ``Span``'s fields but ``trace_id``;
    ``attributes`` is always an object and ``events`` a list. Spans added to a trace
    after it was written go at the end of its array: hence the (stable) sort.
    """
    for d in spans:
        d["trace_id"] = trace_id
        events = d["events"]
        if events:
            d["events"] = [
                {
                    "name": e["name"],
                    "timestamp_ns": e["timestamp_ns"],
                    "attributes": e.get("attributes") or {},
                }
                for e in events
            ]
    if len(spans) > 1:
        spans.sort(key=_start)
    return spans


def span_from_dict(d: dict[str, Any]) -> Span:
    """A ``Span`` from one of ``span_dicts``' dicts (the dict is not kept)."""
    span = _new(Span)
    span.__dict__.update(d)
    events = d["events"]
    span.__dict__["events"] = (
        [SpanEvent(e["name"], e["timestamp_ns"], e["attributes"]) for e in events] if events else []
    )
    return span


def spans_from_text(trace_id: str, text: str) -> list[Span]:
    """The spans of a trace row's JSON array, in start order."""
    return [span_from_dict(d) for d in span_dicts(trace_id, loads_marked(text))]


def span_from_row(row: tuple[Any, ...]) -> Span:
    """A ``Span`` from a stored row (see the store's column order); the JSON fields
    (inputs, outputs, attributes, events) are decoded when first read."""
    span = _new(Span)
    # What the frozen dataclass's __init__ does, without an object.__setattr__ a field.
    span.__dict__.update(
        trace_id=row[0],
        span_id=row[1],
        parent_id=row[2],
        name=row[3],
        span_type=row[4],
        start_time_ns=row[5],
        end_time_ns=row[6],
        status=row[7],
        status_message=row[8] or "",
        _stored_json=row[9:13],
    )
    return span
