"""``search_traces``: MLflow's call, answered by one indexed SQL query."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from .._entities import (
    METADATA_SESSION,
    METADATA_USER,
    Span,
    Trace,
    decode_spans,
    span_dicts,
    with_assessments,
)
from .._serialize import loads_marked_many, loads_strings
from .._store._dialect import Dialect
from ._compile import NOT_NULL_COLUMNS, Compiled, compile_order_by, compile_search, pattern_errors
from ._frame import frame_from_columns
from ._paging import check_offset, check_values, decode_token, encode_token, fingerprint
from ._parser import OrderKey, parse_order_by

if TYPE_CHECKING:
    import pandas

    from .._store._base import Store

__all__ = ["FRAME_COLUMNS", "TraceList", "search_traces", "traces_to_frame"]

# MLflow 3's columns, in its order; then the flattened ones older tutorials use.
FRAME_COLUMNS = [
    "trace_id",
    "trace",
    "client_request_id",
    "state",
    "request_time",
    "execution_duration",
    "request",
    "response",
    "trace_metadata",
    "tags",
    "spans",
    "assessments",
]
INFO_COLUMNS = [
    "info.trace_id",
    "info.request_id",
    "info.client_request_id",
    "info.state",
    "info.status",
    "info.request_time",
    "info.timestamp_ms",
    "info.execution_duration",
    "info.execution_time_ms",
    "info.trace_metadata",
    "info.tags",
    "info.request_preview",
    "info.response_preview",
    # The trace's LLM calls (0 without any) and their cost in USD (NaN when none
    # was priced), from the trace row's columns.
    "info.llm_calls",
    "info.input_tokens",
    "info.output_tokens",
    "info.total_tokens",
    "info.cost",
    "info.unpriced_calls",
]
_LLM_INFO = INFO_COLUMNS[-6:]
ALWAYS_METADATA = (f"metadata.{METADATA_USER}", f"metadata.{METADATA_SESSION}")
PANDAS_HINT = (
    "search_traces(return_type='pandas') needs pandas: pip install 'sessiontrace[pandas]' "
    "(or pass return_type='list' for Trace objects)"
)


class TraceList(list[Trace]):
    """A list of ``Trace`` with the token of the next page (``None`` on the last)."""

    next_page_token: str | None = None

    @property
    def token(self) -> str | None:  # the name MLflow's PagedList uses
        return self.next_page_token


def _resolve_store(store: Store | None) -> Store:
    if store is not None:
        return store
    from .. import _runtime

    _runtime.flush(_runtime.settings().shutdown_timeout)
    return _runtime.get_store()


def _search_rows(
    store: Store,
    select: str,
    filter_string: str | None,
    order_by: Sequence[str] | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[Any], str | None]:
    """The matching rows of ``select`` (columns on ``traces t``), in order, and the
    next page's token. One statement: the filter, the order and the page."""
    if isinstance(order_by, str):
        order_by = [order_by]
    if max_results is not None and (
        isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1
    ):
        raise ValueError(f"max_results must be a positive integer or None, not {max_results!r}")
    where, order, order_sql, order_params, types = _compiled(
        filter_string, tuple(order_by or ()), store.dialect
    )
    params: dict[str, Any] = {**where.params, **order_params}
    # The page token's tie to its query; only pages need it (a hash of the query text).
    paged = page_token is not None or max_results is not None
    query_id = fingerprint("traces", filter_string or "", list(order_by or [])) if paged else ""
    keyset = types is not None
    conditions = [where.sql]
    offset = 0
    if page_token is not None:
        state = decode_token(page_token, query_id)
        if types is not None:
            values = check_values(state, types)
            conditions.append(_after(order, values, params))
        else:
            offset = check_offset(state)
    # The sort keys go last, for the next page's token; ``select`` is a constant of ours.
    keys = ", ".join(expr for expr, _ in order) if keyset and max_results is not None else "NULL"
    sql = (
        f"SELECT {select}, {keys} FROM traces t WHERE {' AND '.join(conditions)} "  # noqa: S608
        f"ORDER BY {order_sql} LIMIT :_limit OFFSET :_offset"
    )
    params["_limit"] = _NO_LIMIT if max_results is None else max_results + 1
    params["_offset"] = offset
    with pattern_errors(where):
        rows = store.connection().execute(sql, params).fetchall()
    token = None
    if max_results is not None and len(rows) > max_results:
        rows = rows[:max_results]
        if keyset:
            token = encode_token(query_id, k=list(rows[-1][-len(order) :]))
        else:
            token = encode_token(query_id, o=offset + max_results)
    return rows, token


# "No limit" in both engines (SQLite's LIMIT -1 is an error on PostgreSQL).
_NO_LIMIT = 2**63 - 1


@functools.lru_cache(maxsize=128)
def _compiled(
    filter_string: str | None, order_by: tuple[str, ...], dialect: Dialect
) -> tuple[Compiled, list[tuple[str, bool]], str, dict[str, Any], list[type] | None]:
    """The filter, the order (as pairs and as SQL) and its parameters, and the types
    of the sort values when the order allows keyset pagination (else ``None``).

    Dashboards repeat the same few queries; parsing is pure, so cache it. Callers
    copy the parameter dicts before adding to them.
    """
    keys: list[OrderKey] = [parse_order_by(o) for o in order_by]
    order, order_params = compile_order_by(keys, dialect=dialect)
    # Keyset pagination when every sort key is a NOT NULL column (the default order
    # is): the next page starts where the last one ended, at any depth, from the index.
    # An expression is "t.<column>", with the dialect's COLLATE after a text column.
    columns = [expr[2:].split(" ", 1)[0] if expr.startswith("t.") else "" for expr, _ in order]
    types: list[type] | None = None
    if all(c in NOT_NULL_COLUMNS for c in columns):
        types = [int if c == "request_time" else str for c in columns]
    order_sql = ", ".join(
        dialect.order_term(expr, asc, nullable=c not in NOT_NULL_COLUMNS)
        for (expr, asc), c in zip(order, columns, strict=True)
    )
    where = compile_search(filter_string, dialect=dialect)
    return where, order, order_sql, order_params, types


def _after(order: list[tuple[str, bool]], values: list[Any], params: dict[str, Any]) -> str:
    """Rows strictly after ``values`` in ``order`` (expanded row-value comparison)."""
    names = []
    for i, value in enumerate(values):
        names.append(f":_k{i}")
        params[f"_k{i}"] = value
    first_expr, first_asc = order[0]
    terms = [f"{first_expr} {'>=' if first_asc else '<='} {names[0]}"]  # lets the index seek
    alternatives = []
    for i, (expr, asc) in enumerate(order):
        equal = [f"{order[j][0]} = {names[j]}" for j in range(i)]
        alternatives.append(" AND ".join([*equal, f"{expr} {'>' if asc else '<'} {names[i]}"]))
    terms.append("(" + " OR ".join(f"({a})" for a in alternatives) + ")")
    return " AND ".join(terms)


@overload
def search_traces(
    filter_string: str | None = ...,
    order_by: Sequence[str] | None = ...,
    max_results: int | None = ...,
    page_token: str | None = ...,
    *,
    return_type: Literal["list"],
    include_spans: bool = ...,
    store: Store | None = ...,
) -> TraceList: ...


@overload
def search_traces(
    filter_string: str | None = ...,
    order_by: Sequence[str] | None = ...,
    max_results: int | None = ...,
    page_token: str | None = ...,
    *,
    return_type: Literal["pandas"],
    include_spans: bool = ...,
    store: Store | None = ...,
) -> pandas.DataFrame: ...


@overload
def search_traces(
    filter_string: str | None = ...,
    order_by: Sequence[str] | None = ...,
    max_results: int | None = ...,
    page_token: str | None = ...,
    return_type: None = ...,
    include_spans: bool = ...,
    *,
    store: Store | None = ...,
) -> pandas.DataFrame | TraceList: ...


def search_traces(
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
    return_type: Literal["pandas", "list"] | None = None,
    include_spans: bool = True,
    *,
    store: Store | None = None,
) -> pandas.DataFrame | TraceList:
    """Traces matching an MLflow-style filter, newest first unless ``order_by`` says otherwise.

    ``return_type`` is ``"pandas"`` (the default when pandas is installed) for a
    DataFrame with MLflow 3's columns plus ``metadata.<key>`` and ``info.*``
    columns, or ``"list"`` for ``Trace`` objects. ``max_results=None`` returns every
    match; with a number, the next page's token is ``result.next_page_token`` (a
    list) or ``df.attrs["next_page_token"]`` (a DataFrame). A bad filter raises
    ``FilterSyntaxError`` pointing at the character.

    >>> df = sessiontrace.search_traces(
    ...     filter_string="metadata.`mlflow.trace.user` = 'user-123' AND trace.timestamp_ms > 0",
    ...     order_by=["trace.timestamp_ms DESC"],
    ... )
    >>> df["metadata.mlflow.trace.session"].nunique()
    """
    if return_type is None:
        return_type = "pandas" if importlib.util.find_spec("pandas") is not None else "list"
    if return_type not in ("pandas", "list"):
        raise ValueError(f"return_type must be 'pandas' or 'list', not {return_type!r}")
    if return_type == "pandas" and importlib.util.find_spec("pandas") is None:
        raise ImportError(PANDAS_HINT)
    resolved = _resolve_store(store)
    rows, token = _search_rows(
        resolved, resolved.trace_select(), filter_string, order_by, max_results, page_token
    )
    if return_type == "list":
        result = TraceList(resolved.traces_from_rows(rows, include_spans=include_spans))
        result.next_page_token = token
        return result
    df = _frame_from_rows(rows, resolved) if include_spans else None
    if df is None:
        df = traces_to_frame(resolved.traces_from_rows(rows, include_spans=include_spans))
    df.attrs["next_page_token"] = token
    return df


def _decoded_preview(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:  # a preview cut at its length limit is not valid JSON
        return text


def _root_io(
    spans: list[dict[str, Any]], request_preview: str | None, response_preview: str | None
) -> tuple[Any, Any]:
    for span in spans:
        if span["parent_id"] is None:
            return span["inputs"], span["outputs"]
    return _decoded_preview(request_preview), _decoded_preview(response_preview)


def _frame_spans(traces: Sequence[Trace]) -> list[list[dict[str, Any]]]:
    """Each trace's spans as ``Span.to_dict()`` gives them, for the ``spans`` column.

    Traces fresh from the store still hold their spans as the JSON text of their row:
    those texts are decoded together, in one parse, straight into the column's dicts
    (the ``Trace`` objects keep their text, so the frame's dicts are nobody else's).
    """
    out: list[list[dict[str, Any]] | None] = [None] * len(traces)
    stored: list[int] = []
    texts: list[str] = []
    spans: list[Span] = []
    for k, trace in enumerate(traces):
        state = trace.data.__dict__
        if "spans" not in state and "_stored_spans" in state:
            stored.append(k)
            texts.append(state["_stored_spans"][1])
        else:
            spans += trace.data.spans
    if texts:
        for k, decoded in zip(stored, loads_marked_many(texts), strict=True):
            out[k] = span_dicts(traces[k].info.trace_id, decoded)
    if len(stored) < len(traces):
        decode_spans(spans)
        for k, trace in enumerate(traces):
            if out[k] is None:
                out[k] = [_span_dict(span) for span in trace.data.spans]
    return cast("list[list[dict[str, Any]]]", out)


_SPAN_FIELDS = tuple(f.name for f in dataclasses.fields(Span))
_span_values = operator.itemgetter(*_SPAN_FIELDS)


def _span_dict(span: Span) -> dict[str, Any]:
    # Span.to_dict() (dataclasses.asdict) deep-copies every input and output; a frame
    # of a user's traces does not need copies of values nobody else holds. The JSON
    # fields are decoded already (decode_spans), so every field is in __dict__.
    row = dict(zip(_SPAN_FIELDS, _span_values(span.__dict__), strict=True))
    if row["events"]:
        row["events"] = [dataclasses.asdict(e) for e in row["events"]]
    else:
        row["events"] = []
    return row


_MISSING = float("nan")
_ALIASES = {
    "info.trace_id": "trace_id",
    "info.request_id": "trace_id",
    "info.client_request_id": "client_request_id",
    "info.state": "state",
    "info.status": "state",
    "info.request_time": "request_time",
    "info.timestamp_ms": "request_time",
    "info.execution_duration": "execution_duration",
    "info.execution_time_ms": "execution_duration",
    "info.trace_metadata": "trace_metadata",
    "info.tags": "tags",
}  # what DataFrame.from_records puts where a row lacks a key


def traces_to_frame(traces: Sequence[Trace]) -> pandas.DataFrame:
    """One row per trace: MLflow 3's columns, ``info.*`` and ``metadata.<key>``."""
    import pandas as pd

    if not traces:
        names = FRAME_COLUMNS + INFO_COLUMNS + sorted(ALWAYS_METADATA)
        return cast("pandas.DataFrame", pd.DataFrame.from_records([], columns=names))
    # Column by column: a list per column, each built once and shared by its aliases
    # (info.request_id is trace_id, ...), then one DataFrame call; no dict per row.
    spans = _frame_spans(traces)
    infos = [trace.info for trace in traces]
    trace_id = [i.trace_id for i in infos]
    client_request_id = [i.client_request_id for i in infos]
    state = [i.state for i in infos]
    request_time = [i.request_time for i in infos]
    duration = [i.execution_duration for i in infos]
    metadata = [i.trace_metadata for i in infos]
    tags = [i.tags for i in infos]
    llm = [i.__dict__.get("_llm") or _NO_LLM for i in infos]  # see _store.info_from_row
    return _assemble(
        {
            "assessments": [[a.to_dictionary() for a in i.assessments] for i in infos],
            **_llm_columns(list(zip(*llm, strict=True))),
            "trace_id": trace_id,
            "trace": list(traces),
            "client_request_id": client_request_id,
            "state": state,
            "request_time": request_time,
            "execution_duration": duration,
            "trace_metadata": metadata,
            "tags": tags,
            "spans": spans,
            "info.request_preview": [i.request_preview for i in infos],
            "info.response_preview": [i.response_preview for i in infos],
        }
    )


def _frame_from_rows(rows: list[Any], store: Store) -> pandas.DataFrame | None:
    """The frame of ``trace_select()`` rows, column by column from the rows; ``None``
    unless every row has its metadata, tags and spans as JSON (no ``Trace`` needed).

    The ``trace`` column's traces are built from their row when first read (with
    the assessments read here, one query for the page).
    """
    if not rows or any(row[10] is None or row[12] is None for row in rows):
        return None
    from .._store._rows import trace_from_row

    columns = list(zip(*rows, strict=False))  # rows may carry trailing sort keys
    found = store.assessments_for(columns[0])
    traces = [trace_from_row(row) for row in rows]
    if found:
        for trace, tid in zip(traces, columns[0], strict=True):
            if tid in found:
                with_assessments(trace, found[tid])
    metadata = loads_strings("[" + ",".join(columns[10]) + "]")
    for md, user, session in zip(metadata, columns[5], columns[6], strict=True):
        # Rows written by schema 1 keep user and session in their columns only.
        if user is not None and METADATA_USER not in md:
            md[METADATA_USER] = user
        if session is not None and METADATA_SESSION not in md:
            md[METADATA_SESSION] = session
    trace_ids = columns[0]
    decoded = loads_marked_many(columns[12])
    return _assemble(
        {
            **_llm_columns(columns[13:19]),
            "assessments": [[a.to_dictionary() for a in found.get(t, ())] for t in trace_ids],
            "trace_id": list(trace_ids),
            "trace": traces,
            "client_request_id": list(columns[7]),
            "state": list(columns[3]),
            "request_time": list(columns[1]),
            "execution_duration": [None if ms is None else round(ms) for ms in columns[2]],
            "trace_metadata": metadata,
            "tags": loads_strings("[" + ",".join(columns[11]) + "]"),
            "spans": [span_dicts(t, s) for t, s in zip(trace_ids, decoded, strict=True)],
            "info.request_preview": list(columns[8]),
            "info.response_preview": list(columns[9]),
        }
    )


_NO_LLM = (None, None, None, None, None, None)


def _llm_columns(columns: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """The ``info.*`` LLM columns from the trace rows' columns 13 to 18 (input, output,
    total tokens, cost, calls, unpriced calls; NULL for a trace without LLM calls)."""
    inp, out, total, cost, calls, unpriced = columns
    return {
        "info.llm_calls": [v or 0 for v in calls],
        "info.input_tokens": [v or 0 for v in inp],
        "info.output_tokens": [v or 0 for v in out],
        "info.total_tokens": [v or 0 for v in total],
        "info.cost": [_MISSING if v is None else float(v) for v in cost],
        "info.unpriced_calls": [v or 0 for v in unpriced],
    }


def _assemble(values: dict[str, list[Any]]) -> pandas.DataFrame:
    """The frame's columns from one list per distinct column; aliases share a list."""
    metadata = values["trace_metadata"]
    io = [
        _root_io(s, request, response)
        for s, request, response in zip(
            values["spans"],
            values["info.request_preview"],
            values["info.response_preview"],
            strict=True,
        )
    ]
    values["request"] = [r for r, _ in io]
    values["response"] = [r for _, r in io]
    columns: dict[str, list[Any]] = {
        name: values[_ALIASES.get(name, name)] for name in FRAME_COLUMNS + INFO_COLUMNS
    }
    keys: set[str] = set()
    for md in metadata:
        keys.update(md)
    for key in sorted({*keys, *(c[len("metadata.") :] for c in ALWAYS_METADATA)}):
        columns[f"metadata.{key}"] = [md.get(key, _MISSING) for md in metadata]
    return frame_from_columns(columns)
