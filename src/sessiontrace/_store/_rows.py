"""Rows: what the SQL stores write for a batch of finished traces, and how a row
read back becomes a ``Trace``. Backend-neutral: SQLite and PostgreSQL write the
same rows (each with its own statements) and read the same columns.

Writing runs on the pipeline's writer thread: ``build_rows`` turns a batch of
items (finished traces, spans that ended after their trace, tag changes) into the
rows of the four tables, with each trace's LLM totals rolled up from its spans.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._entities import (
    METADATA_SESSION,
    METADATA_USER,
    Span,
    Trace,
    TraceData,
    TraceInfo,
    lazy_trace,
    lazy_trace_data,
    span_from_row,
)
from .._records import AssessmentChange, SpanRecord, TagChange, TraceRecord
from .._serialize import InexactJSON, dumps, dumps_marked_array, loads, loads_strings
from ..llm._keys import MODEL, TRACE_COST, TRACE_TOKEN_USAGE, USAGE
from ..llm._rollup import LLMCall, Totals, llm_call, rollup

__all__ = [
    "LLM_COLUMNS",
    "PREVIEW_CHARS",
    "SPAN_COLUMNS",
    "TRACE_COLUMNS",
    "Rows",
    "TraceNotFoundError",
    "build_rows",
    "info_from_row",
    "llm_totals",
    "trace_from_row",
]

_new = object.__new__
_quote = json.encoder.encode_basestring  # a str as JSON text (C, where available)
_U64 = 2**64  # orjson reads integers below this (and from -2**63) exactly

PREVIEW_CHARS = 1000
ID_KEYS = (METADATA_USER, METADATA_SESSION)

TRACE_COLUMNS = (
    "trace_id, request_time, execution_time_ms, state, name, user_id, session_id, "
    "client_request_id, request_preview, response_preview"
)
# Columns 13 to 18 of a trace_select() row: the trace's LLM totals.
LLM_COLUMNS = (
    "t.input_tokens, t.output_tokens, t.total_tokens, t.cost, t.llm_calls, t.unpriced_calls"
)


def select_columns(metadata: str, tags: str) -> str:
    """A store's ``trace_select()``: ``TRACE_COLUMNS`` of ``traces t``, then the SQL
    giving the metadata and tags as JSON (columns 10 and 11), the spans array (12)
    and the LLM totals (13 to 18), which ``info_from_row`` and ``traces_from_rows`` read."""
    columns = ", ".join(f"t.{c}" for c in TRACE_COLUMNS.split(", "))
    return f"{columns}, {metadata}, {tags}, t.spans, {LLM_COLUMNS}"


SPAN_COLUMNS = (
    "trace_id, span_id, parent_id, name, span_type, start_ns, end_ns, status, "
    "status_message, inputs, outputs, attributes, events"
)
SPAN_ROW_LENGTH = len(SPAN_COLUMNS.split(", "))
# The LLM columns of a span row, after SPAN_COLUMNS.
SPAN_LLM_COLUMNS = "model, provider, input_tokens, output_tokens, total_tokens, cost, llm"
# The columns of a trace row as build_rows makes it (then the six LLM totals, on
# the rows of traces with LLM calls).
TRACE_ROW_COLUMNS = (
    "trace_id, request_time, end_time, execution_time_ms, state, name, user_id, session_id, "
    "client_request_id, request_preview, response_preview, root_span_id, metadata, tags, spans"
)
TRACE_LLM_COLUMNS = "input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls"


class TraceNotFoundError(KeyError):
    """No trace with that id is in the store."""


# -- writing --------------------------------------------------------------------------


class Rows:
    """One batch's rows, table by table.

    ``null`` (given to ``build_rows``) stands for NULL in the often-NULL text
    columns: SQLite's writer binds 0 there and turns it back with ``nullif`` (binding
    None costs sqlite3 an adapter lookup); PostgreSQL's binds None.
    """

    __slots__ = (
        "assessments",
        "keys_in_json",
        "late",
        "llm_span_rows",
        "llm_trace_rows",
        "metadata_rows",
        "recompute",
        "span_rows",
        "tag_deletes",
        "tag_ops",
        "tag_rows",
        "trace_rows",
    )

    def __init__(self) -> None:
        self.trace_rows: list[tuple[Any, ...]] = []
        # traces and spans with LLM calls: the rows above plus their LLM columns
        self.llm_trace_rows: list[tuple[Any, ...]] = []
        self.span_rows: list[tuple[Any, ...]] = []
        self.llm_span_rows: list[tuple[Any, ...]] = []
        # (trace_id, metadata JSON) or (trace_id, key, value): see build_rows
        self.metadata_rows: list[tuple[Any, ...]] = []
        self.tag_rows: list[tuple[Any, ...]] = []
        self.tag_deletes: list[tuple[str, str]] = []
        self.tag_ops: set[str] = set()  # traces whose tags changed after they were written
        # spans that ended after their trace was written: (JSON text, full row, row
        # without the content the trace's spans array has)
        self.late: list[tuple[Any, ...]] = []
        self.recompute: set[str] = set()  # traces whose LLM totals late spans change
        # True: the traces' metadata and tags are only in their rows' JSON copies
        # (metadata_rows hold (trace_id, JSON); tag_rows only tag changes): the store
        # unpacks them into the key/value tables itself
        self.keys_in_json = False
        # AssessmentChange records (from a remote client), applied after the rest
        self.assessments: list[AssessmentChange] = []

    def cleaned(self) -> Rows:
        """The same rows with lone surrogates (half an emoji from a truncated byte
        stream, which UTF-8 cannot hold) replaced by ``?``, and NUL characters
        (which PostgreSQL's text cannot hold) by U+FFFD. Rare: only a failed write
        pays for it."""
        out = Rows()
        out.trace_rows = _clean_rows(self.trace_rows)
        out.llm_trace_rows = _clean_rows(self.llm_trace_rows)
        out.span_rows = _clean_rows(self.span_rows)
        out.llm_span_rows = _clean_rows(self.llm_span_rows)
        out.metadata_rows = _clean_rows(self.metadata_rows)
        out.tag_rows = _clean_rows(self.tag_rows)
        out.tag_deletes = [(_clean(t), _clean(k)) for t, k in self.tag_deletes]
        out.tag_ops = {_clean(t) for t in self.tag_ops}
        out.late = [(_clean(t), *_clean_rows([full, bare])) for t, full, bare in self.late]
        out.recompute = {_clean(t) for t in self.recompute}
        out.keys_in_json = self.keys_in_json
        out.assessments = self.assessments
        return out


def build_rows(
    items: Iterable[Any], *, null: Any, metadata_json: bool, trace_tag_rows: bool = True
) -> Rows:
    """The rows of a batch of records (``TraceRecord``, late ``SpanRecord``,
    ``TagChange``). ``metadata_json``: one ``(trace_id, metadata JSON)`` row a trace
    (the store unpacks it) instead of a ``(trace_id, key, value)`` row a key; either
    way without the user and session, which are columns of ``traces``.
    ``trace_tag_rows=False`` (with ``metadata_json``): no tag rows for the traces'
    own tags either, which the store unpacks from the trace rows' JSON (the work
    leaves the app's process; ``Rows.keys_in_json``)."""
    out = Rows()
    out.keys_in_json = metadata_json and not trace_tag_rows
    trace_rows, llm_trace_rows = out.trace_rows, out.llm_trace_rows
    span_rows, llm_span_rows = out.span_rows, out.llm_span_rows
    metadata_rows, tag_rows = out.metadata_rows, out.tag_rows
    for item in items:
        if isinstance(item, TraceRecord):
            texts = []
            calls: dict[str, tuple[int, LLMCall | None]] | None = None
            start = len(span_rows)
            for span in item.spans:
                row, text = span_row(span, null, content=False)
                span_rows.append(row)
                texts.append(text)
                attrs = span.attributes
                if attrs and (USAGE in attrs or MODEL in attrs):  # an LLM call
                    if calls is None:
                        calls = {}
                    calls[span.span_id] = (len(span_rows) - 1, llm_call(attrs))
            spans = dumps_marked_array(texts)
            tid = item.trace_id
            metadata = item.metadata
            totals = None if calls is None else _trace_totals(item.spans, calls)
            if calls is not None and totals is not None:
                metadata = with_llm_metadata(metadata, totals)
                moved = set()
                for sid, (position, call) in calls.items():
                    if call is not None:
                        llm_span_rows.append(
                            span_rows[position] + _llm_values(call, totals.counted[sid])
                        )
                        moved.add(position)
                span_rows[start:] = [
                    r for i, r in enumerate(span_rows[start:], start) if i not in moved
                ]
            rows = trace_rows
            if metadata_json:
                md = dumps(metadata)
                metadata_rows.append((tid, md))
                tags = dumps(item.tags) if item.tags else "{}"
                row = _trace_row(item, md, tags, spans, null)
            else:
                tags = dumps(item.tags) if item.tags else "{}"
                row = _trace_row(item, dumps(metadata), tags, spans, null)
                metadata_rows.extend([(tid, k, v) for k, v in metadata.items() if k not in ID_KEYS])
            if totals is not None:
                row += trace_llm_values(totals)
                rows = llm_trace_rows
            rows.append(row)
            if item.tags and trace_tag_rows:
                tag_rows.extend([(tid, k, v) for k, v in item.tags.items()])
        elif isinstance(item, SpanRecord):
            stripped, text = span_row(item, null, content=False)
            full = span_row(item, null)[0]
            attrs = item.attributes
            if attrs and (USAGE in attrs or MODEL in attrs):
                call = llm_call(attrs)
                if call is not None:
                    # counted for now; the totals computed again after the insert
                    # set the flag of every LLM span of the trace
                    extra = _llm_values(call, 1)
                    full, stripped = full + extra, stripped + extra
                    out.recompute.add(item.trace_id)
            out.late.append((text, full, stripped))
        elif isinstance(item, TagChange):
            out.tag_ops.add(item.trace_id)
            if item.value is None:
                out.tag_deletes.append((item.trace_id, item.key))
            else:
                tag_rows.append((item.trace_id, item.key, item.value))
        elif isinstance(item, AssessmentChange):
            out.assessments.append(item)
        else:
            raise TypeError(f"cannot store {type(item).__name__}")
    return out


def span_row(span: SpanRecord, null: Any, *, content: bool = True) -> tuple[tuple[Any, ...], str]:
    """The span's row in the spans table (without its content unless ``content``)
    and the span as a JSON object for its trace's array (``_entities.span_dicts``).

    The object has ``Span``'s fields but ``trace_id``; inputs and outputs are JSON
    text already (encoded at capture), spliced in as they are. The object is an
    ``InexactJSON`` when a part is (see ``dumps_marked_array``).
    """
    # One unpacking in SpanRecord's field order: cheaper than reading a named tuple's
    # fields one by one, on the writer thread for every span.
    (
        trace_id,
        span_id,
        parent_id,
        name,
        span_type,
        start_ns,
        end_ns,
        status,
        message,
        inputs,
        outputs,
        attributes,
        events,
    ) = span
    message = message or ""
    attributes_json = dumps(attributes) if attributes else None
    events_json = dumps(events) if events else None
    text = (
        f'{{"span_id":{_quote(span_id)},'
        f'"parent_id":{"null" if parent_id is None else _quote(parent_id)},'
        f'"name":{_quote(name)},"span_type":{_quote(span_type)},'
        f'"start_time_ns":{int(start_ns)},'
        f'"end_time_ns":{"null" if end_ns is None else int(end_ns)},'
        f'"status":{_quote(status)},"status_message":{_quote(message)},'
        f'"inputs":{inputs or "null"},"outputs":{outputs or "null"},'
        f'"attributes":{attributes_json or "{}"},"events":{events_json or "[]"}}}'
    )
    if (
        type(inputs) is InexactJSON
        or type(outputs) is InexactJSON
        or type(attributes_json) is InexactJSON
        or type(events_json) is InexactJSON
        or not 0 <= start_ns < _U64
        or not (end_ns is None or 0 <= end_ns < _U64)
    ):
        text = InexactJSON(text)
    row = (
        trace_id,
        span_id,
        null if parent_id is None else parent_id,
        name,
        span_type,
        start_ns,
        end_ns,
        status,
        (message or null) if content else null,
        null if inputs is None or not content else inputs,
        null if outputs is None or not content else outputs,
        null if attributes_json is None else attributes_json,
        null if events_json is None or not content else events_json,
    )
    return row, text


def _trace_row(t: TraceRecord, metadata: Any, tags: Any, spans: str, null: Any) -> tuple[Any, ...]:
    # in TraceRecord's field order, as span_row does
    (
        trace_id,
        start_ns,
        end_ns,
        state,
        root,
        _spans,
        md,
        _tags,
        request_preview,
        response_preview,
        client_request_id,
    ) = t
    if request_preview is None:
        inputs = root.inputs_json
        request_preview = null if inputs is None else inputs[:PREVIEW_CHARS]
    if response_preview is None:
        outputs = root.outputs_json
        response_preview = null if outputs is None else outputs[:PREVIEW_CHARS]
    return (
        trace_id,
        start_ns // 1_000_000,
        None if end_ns is None else end_ns // 1_000_000,
        None if end_ns is None else (end_ns - start_ns) / 1e6,
        state,
        root.name,
        md.get(METADATA_USER, null),
        md.get(METADATA_SESSION, null),
        null if client_request_id is None else client_request_id,
        request_preview,
        response_preview,
        root.span_id,
        metadata,
        tags,
        spans,
    )


def _llm_values(call: LLMCall, counted: int) -> tuple[Any, ...]:
    """The spans table's LLM columns (model ... llm) of one call."""
    return (
        call.model,
        call.provider,
        call.input_tokens if call.has_usage else None,
        call.output_tokens if call.has_usage else None,
        call.total_tokens if call.has_usage else None,
        call.total_cost,
        counted,
    )


def _trace_totals(
    spans: Sequence[Any], calls: dict[str, tuple[int, LLMCall | None]]
) -> Totals | None:
    return rollup(
        (s.span_id, s.parent_id, calls[s.span_id][1] if s.span_id in calls else None) for s in spans
    )


def trace_llm_values(totals: Totals) -> tuple[Any, ...]:
    """A trace row's LLM columns (``TRACE_LLM_COLUMNS`` order)."""
    return (
        totals.input_tokens,
        totals.output_tokens,
        totals.total_tokens,
        totals.cost,
        totals.llm_calls,
        totals.unpriced_calls,
    )


def with_llm_metadata(metadata: dict[str, str], totals: Totals) -> dict[str, str]:
    """The trace's metadata with MLflow's ``mlflow.trace.tokenUsage``/``cost`` (JSON)."""
    md = dict(metadata)
    if totals.token_usage_json is not None:
        md[TRACE_TOKEN_USAGE] = totals.token_usage_json
    if totals.cost_json is not None:
        md[TRACE_COST] = totals.cost_json
    return md


def totals_from_span_rows(rows: Iterable[tuple[str, str | None, str | None]]) -> Totals | None:
    """A trace's LLM totals from its spans table rows ``(span_id, parent_id,
    attributes JSON)``: how a store computes them again after late spans."""
    spans = []
    for span_id, parent_id, attributes in rows:
        call = None
        if attributes and (USAGE in attributes or MODEL in attributes):
            call = llm_call(loads(attributes))
        spans.append((span_id, parent_id, call))
    return rollup(spans)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        # lone surrogates -> "?", NUL -> U+FFFD
        return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return value


def _clean_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(_clean(v) for v in row) for row in rows]


# -- reading --------------------------------------------------------------------------


def traces_from_rows(
    rows: Sequence[Sequence[Any]],
    infos: list[TraceInfo],
    *,
    include_spans: bool,
    span_rows: Callable[[list[str]], Iterable[tuple[Any, ...]]],
) -> list[Trace]:
    """Traces from ``trace_select()`` rows and their ``infos``, in order. The spans come
    with the row (built into ``Span`` objects when first read); a row without its
    spans array (written before schema 3, or a late span's trace never written
    itself) gets them from ``span_rows(trace_ids)``: rows of the spans table in
    ``SPAN_COLUMNS`` order, in start order."""
    if not include_spans:
        return [Trace(info, TraceData([])) for info in infos]
    spans: dict[str, list[Span]] = {}
    older = [row[0] for row in rows if row[12] is None]
    if older:
        for row in span_rows(older):
            spans.setdefault(row[0], []).append(span_from_row(row))
    return [
        Trace(
            info,
            TraceData(spans.get(info.trace_id, []))
            if row[12] is None
            else lazy_trace_data(info.trace_id, row[12]),
        )
        for info, row in zip(infos, rows, strict=True)
    ]


def _trace_parts(row: Sequence[Any]) -> tuple[TraceInfo, TraceData]:
    return info_from_row(row), lazy_trace_data(row[0], row[12])


def trace_from_row(row: Sequence[Any]) -> Trace:
    """The ``Trace`` of a ``trace_select()`` row holding its spans' JSON, built from
    the row when first read."""
    return lazy_trace(_trace_parts, row)


def info_from_row(row: Sequence[Any]) -> TraceInfo:
    """A ``TraceInfo`` from a row in ``TRACE_COLUMNS`` order, then optionally the
    metadata and the tags as JSON objects, the spans and the LLM totals."""
    (
        trace_id,
        request_time,
        execution_ms,
        state,
        name,
        user_id,
        session_id,
        client_request_id,
        request_preview,
        response_preview,
    ) = row[:10]
    metadata: dict[str, str] = {}
    if user_id is not None:
        metadata[METADATA_USER] = user_id
    if session_id is not None:
        metadata[METADATA_SESSION] = session_id
    tags: dict[str, str] = {}
    if len(row) > 10:
        if row[10] is not None:
            metadata.update(loads_strings(row[10]))
        if row[11] is not None:
            tags = loads_strings(row[11])
    info = _new(TraceInfo)
    # What the dataclass's __init__ does, keyword by keyword; a search builds many.
    info.__dict__.update(
        trace_id=trace_id,
        request_time=request_time,
        execution_duration=None if execution_ms is None else round(execution_ms),
        state=state,
        trace_metadata=metadata,
        tags=tags,
        client_request_id=client_request_id,
        request_preview=request_preview,
        response_preview=response_preview,
        name=name,
        assessments=[],
    )
    if len(row) > 18 and row[17] is not None:
        # A trace with LLM calls: its totals ride along, not as a field (to_dict() and
        # equality keep MLflow's shape); llm_totals() reads them.
        info.__dict__["_llm"] = row[13:19]
    return info


_NO_LLM = (None, None, None, None, None, None)


def llm_totals(info: TraceInfo) -> dict[str, Any]:
    """A stored trace's LLM totals: ``llm_calls``, ``input_tokens``, ``output_tokens``,
    ``total_tokens`` (0 without LLM calls), ``cost`` (``None`` when nothing was
    priced) and ``unpriced_calls``."""
    inp, out, total, cost, calls, unpriced = info.__dict__.get("_llm") or _NO_LLM
    return {
        "llm_calls": calls or 0,
        "input_tokens": inp or 0,
        "output_tokens": out or 0,
        "total_tokens": total or 0,
        "cost": cost,
        "unpriced_calls": unpriced or 0,
    }


def chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
