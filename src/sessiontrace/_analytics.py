"""Analytics over the store: sessions, users and metadata values, aggregated in SQL.

Public API (re-exported from ``sessiontrace``)::

    list_sessions(filter_string=None, order_by=None, max_results=50, page_token=None)
        -> Page[SessionSummary]
    get_session_summary(session_id) -> SessionSummary | None
    session_flow(session_id) -> list[SessionTurn]
    list_users(filter_string=None, order_by=None, max_results=50, page_token=None)
        -> Page[UserSummary]
    user_report(user_id, days=7) -> UserReport | None
    metadata_breakdown(key="app_version", filter_string=None) -> list[MetadataValueSummary]
    model_breakdown(filter_string=None) -> list[ModelSummary]
    feedback_over_time(filter_string=None, user_id=None, metadata_key=None, name=None,
                       days=None) -> tuple[DailyFeedback, ...]

Every function also takes ``store=`` (a ``Store``: SQLite or PostgreSQL; the
configured one by default, after writing what is queued). ``filter_string`` is the
``search_traces`` language: the aggregates then count only the matching traces.
Results are small frozen dataclasses with ``to_dict()``. Times are milliseconds
since the epoch, durations milliseconds; "last seen" is the start of the latest
trace. Every record also has the LLM calls of its traces: ``llm_calls``,
``input_tokens``, ``output_tokens``, ``total_tokens`` (0 without calls), ``cost``
in USD (``None`` when none was priced: unknown is never $0) and ``unpriced_calls``
(calls without a cost, so ``cost`` covers ``llm_calls - unpriced_calls`` of them).
The records of groups also have their traces' users' feedback: ``feedback_count``,
``negative_feedback``, ``satisfaction`` and ``feedback`` (a ``FeedbackStats`` per
name), counting only valid feedback with a value; session turns list theirs.
Nothing here loads every trace into Python: each call is a few indexed
queries, the default (most recent first) pages of sessions and users included.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._entities import METADATA_SESSION, METADATA_USER
from ._search._compile import Compiled, compile_filter, compile_search, pattern_errors
from ._search._errors import FilterSyntaxError
from ._search._paging import (
    Page,
    check_offset,
    check_values,
    decode_token,
    encode_token,
    fingerprint,
)
from ._serialize import loads, loads_marked, loads_strings

if TYPE_CHECKING:
    from ._store._base import Store
    from ._store._dialect import Dialect

__all__ = [
    "DailyActivity",
    "DailyFeedback",
    "FeedbackStats",
    "MetadataValueSummary",
    "ModelSummary",
    "SessionSummary",
    "SessionTurn",
    "UserReport",
    "UserSummary",
    "feedback_over_time",
    "get_session_summary",
    "list_sessions",
    "list_users",
    "metadata_breakdown",
    "model_breakdown",
    "session_flow",
    "user_report",
]

DAY_MS = 86_400_000
# Both engines count errors with an aggregate FILTER (PostgreSQL has no sum(boolean)),
# and bucket days by integer day number, formatted here (PostgreSQL's date functions
# follow the session's time zone; days are UTC).
_ERRORS = "count(*) FILTER (WHERE t.state = 'ERROR')"
_DAY = f"t.request_time / {DAY_MS}"
_EPOCH = datetime.date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _day(number: int) -> str:
    """A day number (days since 1970-01-01) as YYYY-MM-DD."""
    return (_EPOCH + datetime.timedelta(days=number)).isoformat()


def _copy_json(value: Any) -> Any:
    """A copy of decoded JSON, as ``dataclasses.asdict`` would make, minus its generality."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


# Each record spells out its ``to_dict()``: ``dataclasses.asdict`` recurses into every
# field and deep-copies each value, about 10 us a summary, 0.5 ms for a page of 50.
# A test pins every ``to_dict()`` to ``asdict``'s answer.


class _LLMTotals:
    """The LLM fields every analytics record ends with (declared on each record, since
    its positional fields come first), and how ``to_dict`` writes them."""

    __slots__ = ()
    llm_calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float | None
    unpriced_calls: int

    def _llm_dict(self) -> dict[str, Any]:
        return {
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
            "unpriced_calls": self.unpriced_calls,
        }


@dataclasses.dataclass(frozen=True)
class FeedbackStats:
    """The valid (not overridden) feedback of one name on a group of traces.

    ``count`` counts every value; ``positive``/``negative`` the boolean ``True``/
    ``False`` ones, ``positive_rate`` is ``positive / (positive + negative)`` and
    ``mean`` the mean of the numbers (booleans left out); each ``None`` without such
    values. String and JSON values count in ``count`` only."""

    name: str
    count: int
    positive: int
    negative: int
    positive_rate: float | None
    mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "positive": self.positive,
            "negative": self.negative,
            "positive_rate": self.positive_rate,
            "mean": self.mean,
        }


class _FeedbackTotals:
    """The feedback fields of a group's record: ``feedback_count`` (valid feedback on
    its traces), ``negative_feedback`` (boolean ``False`` values), ``satisfaction``
    (the share of ``True`` among all boolean values, ``None`` without any) and
    ``feedback`` (a ``FeedbackStats`` per name, names in order)."""

    __slots__ = ()
    feedback_count: int
    negative_feedback: int
    satisfaction: float | None
    feedback: Mapping[str, FeedbackStats]

    def _feedback_dict(self) -> dict[str, Any]:
        return {
            "feedback_count": self.feedback_count,
            "negative_feedback": self.negative_feedback,
            "satisfaction": self.satisfaction,
            "feedback": {k: v.to_dict() for k, v in self.feedback.items()},
        }


@dataclasses.dataclass(frozen=True)
class SessionSummary(_LLMTotals, _FeedbackTotals):
    """One conversation: its turns (traces), users, timing and errors."""

    session_id: str
    user_ids: tuple[str, ...]
    first_seen_ms: int
    last_seen_ms: int
    turns: int
    errors: int
    error_rate: float
    total_duration_ms: float | None
    mean_duration_ms: float | None
    first_request_preview: str | None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user_ids": tuple(self.user_ids),
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "turns": self.turns,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "total_duration_ms": self.total_duration_ms,
            "mean_duration_ms": self.mean_duration_ms,
            "first_request_preview": self.first_request_preview,
            **self._llm_dict(),
            **self._feedback_dict(),
        }

    @property
    def user_id(self) -> str | None:
        """The session's user when it has exactly one, else ``None``."""
        return self.user_ids[0] if len(self.user_ids) == 1 else None


@dataclasses.dataclass(frozen=True)
class SessionTurn(_LLMTotals):
    """One turn of a conversation; ``request``/``response`` are the root span's
    decoded inputs and outputs, ``tags`` the trace's tags."""

    turn: int
    trace_id: str
    timestamp: int
    duration_ms: int | None
    status: str
    request: Any
    response: Any
    name: str | None
    user_id: str | None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "trace_id": self.trace_id,
            "timestamp": self.timestamp,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "request": _copy_json(self.request),
            "response": _copy_json(self.response),
            "name": self.name,
            "user_id": self.user_id,
            "tags": dict(self.tags),
            **self._llm_dict(),
            "feedback": tuple(_copy_json(f) for f in self.feedback),
        }


@dataclasses.dataclass(frozen=True)
class UserSummary(_LLMTotals, _FeedbackTotals):
    user_id: str
    first_seen_ms: int
    last_seen_ms: int
    sessions: int
    traces: int
    errors: int
    error_rate: float
    mean_latency_ms: float | None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "sessions": self.sessions,
            "traces": self.traces,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "mean_latency_ms": self.mean_latency_ms,
            **self._llm_dict(),
            **self._feedback_dict(),
        }


@dataclasses.dataclass(frozen=True)
class DailyActivity(_LLMTotals, _FeedbackTotals):
    date: str  # YYYY-MM-DD, UTC
    traces: int
    errors: int
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "traces": self.traces,
            "errors": self.errors,
            **self._llm_dict(),
            **self._feedback_dict(),
        }


@dataclasses.dataclass(frozen=True)
class UserReport(_LLMTotals, _FeedbackTotals):
    """A user's activity in the last ``days`` days (``first_seen_ms``/``last_seen_ms``
    cover all time). ``tags`` maps each tag key to value counts, most common first."""

    user_id: str
    days: int | None
    since_ms: int | None
    until_ms: int
    first_seen_ms: int
    last_seen_ms: int
    traces: int
    sessions: int
    errors: int
    error_rate: float
    mean_latency_ms: float | None
    daily_activity: tuple[DailyActivity, ...]
    tags: Mapping[str, Mapping[str, int]]
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "days": self.days,
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "traces": self.traces,
            "sessions": self.sessions,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "mean_latency_ms": self.mean_latency_ms,
            "daily_activity": tuple(d.to_dict() for d in self.daily_activity),
            "tags": {k: dict(v) for k, v in self.tags.items()},
            **self._llm_dict(),
            **self._feedback_dict(),
        }


@dataclasses.dataclass(frozen=True)
class MetadataValueSummary(_LLMTotals, _FeedbackTotals):
    """Traces carrying one value of a metadata key (an app version, an environment)."""

    key: str
    value: str
    traces: int
    users: int
    errors: int
    error_rate: float
    mean_latency_ms: float | None
    first_seen_ms: int
    last_seen_ms: int
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "traces": self.traces,
            "users": self.users,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "mean_latency_ms": self.mean_latency_ms,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            **self._llm_dict(),
            **self._feedback_dict(),
        }


@dataclasses.dataclass(frozen=True)
class ModelSummary(_LLMTotals, _FeedbackTotals):
    """The LLM calls of one model (and provider) that count in their traces' totals.

    ``model`` is ``None`` for calls that reported usage without a model name. The
    feedback fields count the feedback on the traces with a call of the model."""

    model: str | None
    provider: str | None
    traces: int
    users: int
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "traces": self.traces,
            "users": self.users,
            **self._llm_dict(),
            **self._feedback_dict(),
        }


# A record's LLM fields, in LLM_FIELDS order, over the traces ``t`` of a GROUP BY: the
# trace rows' own columns (NULL on traces without LLM calls), never their JSON.
_LLM_SQL = (
    "coalesce(sum(t.llm_calls), 0), coalesce(sum(t.input_tokens), 0), "
    "coalesce(sum(t.output_tokens), 0), coalesce(sum(t.total_tokens), 0), sum(t.cost), "
    "coalesce(sum(t.unpriced_calls), 0)"
)
_LLM_COLUMNS = (
    "coalesce(t.llm_calls, 0), coalesce(t.input_tokens, 0), coalesce(t.output_tokens, 0), "
    "coalesce(t.total_tokens, 0), t.cost, coalesce(t.unpriced_calls, 0)"
)
LLM_FIELD_NAMES = (
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "unpriced_calls",
)


def _llm(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(LLM_FIELD_NAMES, values, strict=True))


# -- feedback -----------------------------------------------------------------------

# Roll-ups count the valid (not overridden) feedback with a value (not only an error)
# on the traces ``t`` they group: each assessment is joined to its trace, so feedback
# written before its trace row counts once the row arrives. Per group and name: every
# value, the True and False ones, and the sum and number of the numbers (booleans
# have value_bool set).
_FEEDBACK = "a.kind = 'feedback' AND a.valid = 1 AND a.value_json IS NOT NULL"
_FEEDBACK_SQL = (
    "a.name, count(*), count(*) FILTER (WHERE a.value_bool = 1), "
    "count(*) FILTER (WHERE a.value_bool = 0), "
    "sum(a.value_num) FILTER (WHERE a.value_bool IS NULL), "
    "count(a.value_num) FILTER (WHERE a.value_bool IS NULL)"
)
# The same over the rows ``x`` of a subquery with the assessments' name and values.
_FEEDBACK_SQL_X = _FEEDBACK_SQL.replace("a.", "x.")
# Ordering groups by feedback: each trace's valid feedback counted once (the join
# keeps one row a trace), only when an order key asks for it.
_FEEDBACK_JOIN = (
    " LEFT JOIN (SELECT a.trace_id, count(*) AS n, "
    "count(*) FILTER (WHERE a.value_bool = 1) AS pos, "
    "count(*) FILTER (WHERE a.value_bool = 0) AS neg FROM assessments a "
    "WHERE a.kind = 'feedback' AND a.valid = 1 AND a.value_json IS NOT NULL "
    "GROUP BY a.trace_id) f "
    "ON f.trace_id = t.trace_id"
)
_FEEDBACK_ORDER = {
    "feedback_count": "coalesce(sum(f.n), 0)",
    "negative_feedback": "coalesce(sum(f.neg), 0)",
    # a double on both engines (PostgreSQL's sum of bigints is numeric)
    "satisfaction": "CAST(sum(f.pos) AS DOUBLE PRECISION) / nullif(sum(f.pos) + sum(f.neg), 0)",
}
# Keys whose NULLs (groups without boolean feedback) sort last in either direction:
# "satisfaction ASC" lists the least satisfied first, not those never asked.
_NULLS_LAST = frozenset({"satisfaction"})

# name -> [count, positive, negative, sum of numbers, numbers]
_Tally = dict[str, list[Any]]


def _feedback_sql(
    groups: Sequence[str], where: str, join: str = "", *, traces_first: bool = False
) -> str:
    """Valid feedback per ``groups`` (expressions over ``t``, ``a`` and ``join``'s
    tables) and name, on the traces matching ``where``.

    ``traces_first`` for a page's few keys: the traces are found first (by their
    session or user index), then each one's feedback. SQLite, without statistics,
    would otherwise read every feedback row through the ``(kind, name, valid)``
    index; its CROSS JOIN keeps the order as written, which PostgreSQL, planning
    with statistics, reads as a plain join."""
    keys = ", ".join(f"{expr} AS k{i}" for i, expr in enumerate(groups))
    by = ", ".join(f"k{i}" for i in range(len(groups)))
    source = (
        f"traces t CROSS JOIN assessments a{join} WHERE a.trace_id = t.trace_id AND"
        if traces_first
        else f"assessments a JOIN traces t ON t.trace_id = a.trace_id{join} WHERE"
    )
    return (
        f"SELECT {keys}, {_FEEDBACK_SQL} FROM {source} "  # noqa: S608
        f"{_FEEDBACK} AND {where} GROUP BY {by}, a.name"
    )


def _tally(rows: Iterable[Sequence[Any]], width: int = 1) -> dict[Any, _Tally]:
    """``_feedback_sql``'s rows by group key (a tuple for ``width`` > 1), then name."""
    out: dict[Any, _Tally] = {}
    for row in rows:
        key = row[0] if width == 1 else tuple(row[:width])
        out.setdefault(key, {})[row[width]] = list(row[width + 1 :])
    return out


def _merge(into: _Tally, more: _Tally) -> None:
    for name, (n, pos, neg, total, numbers) in more.items():
        have = into.setdefault(name, [0, 0, 0, None, 0])
        have[0] += n
        have[1] += pos
        have[2] += neg
        if total is not None:
            have[3] = total if have[3] is None else have[3] + total
        have[4] += numbers


def _feedback_fields(tally: _Tally | None) -> dict[str, Any]:
    """A record's feedback fields from its group's tally (none: the defaults)."""
    if not tally:
        return {}
    stats = {}
    count = positive = negative = 0
    for name in sorted(tally):
        n, pos, neg, total, numbers = tally[name]
        stats[name] = FeedbackStats(
            name,
            n,
            pos,
            neg,
            pos / (pos + neg) if pos + neg else None,
            total / numbers if numbers else None,
        )
        count += n
        positive += pos
        negative += neg
    return {
        "feedback_count": count,
        "negative_feedback": negative,
        "satisfaction": positive / (positive + negative) if positive + negative else None,
        "feedback": stats,
    }


def _order_term(dialect: Dialect, key: str, expr: str, ascending: bool) -> str:
    term = dialect.order_term(expr, ascending)
    if key in _NULLS_LAST:
        return f"CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END, {term}"
    return term


# -- shared helpers -----------------------------------------------------------------


def _store(store: Store | None) -> Store:
    if store is not None:
        return store
    from . import _runtime

    _runtime.flush(_runtime.settings().shutdown_timeout)
    return _runtime.get_store()


def _check_limit(max_results: int) -> int:
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise ValueError(f"max_results must be a positive integer, not {max_results!r}")
    return max_results


def _rate(errors: int, total: int) -> float:
    return errors / total if total else 0.0


def _parse_group_order(
    order_by: Sequence[str] | str | None, allowed: Mapping[str, str]
) -> list[tuple[str, bool]]:
    """``["turns DESC", ...]`` to (key, ascending) pairs over ``allowed`` keys."""
    if order_by is None:
        return [("last_seen", False)]
    if isinstance(order_by, str):
        order_by = [order_by]
    keys: list[tuple[str, bool]] = []
    for text in order_by:
        if not isinstance(text, str):
            raise TypeError(f"order_by entries must be str, not {type(text).__name__}")
        words = text.split()
        if not words or len(words) > 2:
            raise FilterSyntaxError(
                "order_by entries are '<key> [ASC|DESC]'", text, len(text) if words else 0
            )
        if words[0] not in allowed:
            raise FilterSyntaxError(
                f"cannot order by {words[0]!r}; use one of {', '.join(allowed)}",
                text,
                text.index(words[0]),
            )
        # Ids sort A-Z by default; every measure sorts largest (or latest) first.
        ascending = words[0] in ("session_id", "user_id", "model")
        if len(words) == 2:
            direction = words[1].upper()
            if direction not in ("ASC", "DESC"):
                raise FilterSyntaxError(
                    f"expected ASC or DESC, found {words[1]!r}", text, text.rindex(words[1])
                )
            ascending = direction == "ASC"
        keys.append((words[0], ascending))
    return keys or [("last_seen", False)]


_GROUP_ORDER = {
    "last_seen": "max(t.request_time)",
    "first_seen": "min(t.request_time)",
    "traces": "count(*)",
    "errors": _ERRORS,
    "total_duration_ms": "sum(t.execution_time_ms)",
    "mean_duration_ms": "avg(t.execution_time_ms)",
    "cost": "sum(t.cost)",
    "total_tokens": "sum(t.total_tokens)",
    "input_tokens": "sum(t.input_tokens)",
    "output_tokens": "sum(t.output_tokens)",
    "llm_calls": "sum(t.llm_calls)",
    "unpriced_calls": "sum(t.unpriced_calls)",
    **_FEEDBACK_ORDER,
}
_SESSION_ORDER = {**_GROUP_ORDER, "turns": "count(*)", "session_id": "t.session_id"}
_SESSION_ORDER.pop("traces")
_USER_ORDER = {**_GROUP_ORDER, "sessions": "count(DISTINCT t.session_id)", "user_id": "t.user_id"}
_USER_ORDER["mean_latency_ms"] = _USER_ORDER.pop("mean_duration_ms")
_USER_ORDER.pop("total_duration_ms")


def _group_page(
    store: Store,
    column: str,
    order_keys: Mapping[str, str],
    filter_string: str | None,
    order_by: Sequence[str] | str | None,
    max_results: int,
    page_token: str | None,
) -> tuple[list[str], str | None, Compiled]:
    """One page of distinct ``column`` values (session or user ids) and the next token.

    The default order, most recently active first, walks the request-time index
    newest first and keeps each group's newest trace (one index probe per row), so
    the first page reads a few hundred index entries however large the store is.
    Any other order aggregates every group and sorts.
    """
    _check_limit(max_results)
    keys = _parse_group_order(order_by, order_keys)
    dialect = store.dialect
    where = compile_search(filter_string, dialect=dialect, alias="t", prefix="p")
    query_id = fingerprint(column, filter_string or "", [list(k) for k in keys])
    conn = store.connection()
    params: dict[str, Any] = {**where.params, "_limit": max_results + 1}
    state = decode_token(page_token, query_id) if page_token is not None else None

    if keys == [("last_seen", False)]:
        newer = compile_search(filter_string, dialect=dialect, alias="u", prefix="q")
        params.update(newer.params)
        after = ""
        if state is not None:
            rt, tid = check_values(state, [int, str])
            params.update(_rt=rt, _tid=tid)
            after = "AND t.request_time <= :_rt AND (t.request_time < :_rt OR t.trace_id < :_tid)"
        sql = (
            f"SELECT t.{column}, t.request_time, t.trace_id FROM traces t "  # noqa: S608
            f"WHERE t.{column} IS NOT NULL AND {where.sql} {after} "
            f"AND NOT EXISTS (SELECT 1 FROM traces u WHERE u.{column} = t.{column} "
            f"AND u.request_time >= t.request_time AND {newer.sql} "
            "AND (u.request_time > t.request_time OR u.trace_id > t.trace_id)) "
            "ORDER BY t.request_time DESC, t.trace_id DESC LIMIT :_limit"
        )
        with pattern_errors(where):
            rows = conn.execute(sql, params).fetchall()
        token = None
        if len(rows) > max_results:
            rows = rows[:max_results]
            token = encode_token(query_id, k=[rows[-1][1], rows[-1][2]])
        return [r[0] for r in rows], token, where

    offset = check_offset(state) if state is not None else 0
    order_sql = ", ".join(_order_term(dialect, k, order_keys[k], asc) for k, asc in keys)
    join = _FEEDBACK_JOIN if any(k in _FEEDBACK_ORDER for k, _ in keys) else ""
    params["_offset"] = offset
    sql = (
        f"SELECT t.{column} FROM traces t{join} WHERE t.{column} IS NOT NULL "  # noqa: S608
        f"AND {where.sql} GROUP BY t.{column} ORDER BY {order_sql}, t.{column} "
        "LIMIT :_limit OFFSET :_offset"
    )
    with pattern_errors(where):
        ids = [r[0] for r in conn.execute(sql, params)]
    token = None
    if len(ids) > max_results:
        ids = ids[:max_results]
        token = encode_token(query_id, o=offset + max_results)
    return ids, token, where


def _in_list(dialect: Dialect, expr: str, values: Sequence[str], params: dict[str, Any]) -> str:
    """``expr IN`` the ids of a page, bound as ``_v0, _v1, ...`` (SQLite) or one
    array ``_v0`` (PostgreSQL: one statement text whatever the page's length)."""

    def bind(value: Any) -> str:
        name = f"_v{len(params) - base}"
        params[name] = value
        return f":{name}"

    base = len(params)
    return dialect.in_list(expr, values, bind)


# -- sessions -----------------------------------------------------------------------


def _session_summaries(
    store: Store, session_ids: Sequence[str], where: Compiled
) -> list[SessionSummary]:
    if not session_ids:
        return []
    d = store.dialect
    params = dict(where.params)
    members = _in_list(d, "t.session_id", session_ids, params)
    users = d.json_array_agg.format(expr="DISTINCT t.user_id", where="t.user_id IS NOT NULL")
    sql = (
        "SELECT t.session_id, min(t.request_time), max(t.request_time), count(*), "  # noqa: S608
        f"{_ERRORS}, sum(t.execution_time_ms), avg(t.execution_time_ms), {users}, "
        "(SELECT f.request_preview FROM traces f WHERE f.session_id = t.session_id "
        f" ORDER BY f.request_time, f.trace_id LIMIT 1), {_LLM_SQL} "
        f"FROM traces t WHERE {members} AND {where.sql} "
        "GROUP BY t.session_id"
    )
    by_id: dict[str, SessionSummary] = {}
    conn = store.connection()
    with pattern_errors(where):
        rows = conn.execute(sql, params).fetchall()
        feedback = _tally(
            conn.execute(
                _feedback_sql(["t.session_id"], f"{members} AND {where.sql}", traces_first=True),
                params,
            )
        )
    for row in rows:
        sid, first, last, turns, errors, total, mean, users, preview = row[:9]
        # Positional: the LLM fields follow in LLM_FIELD_NAMES order (no dict a row).
        by_id[sid] = SessionSummary(
            sid,
            tuple(sorted(loads_strings(users))) if users else (),
            first,
            last,
            turns,
            errors,
            _rate(errors, turns),
            total,
            mean,
            preview,
            *row[9:],
            **_feedback_fields(feedback.get(sid)),
        )
    return [by_id[s] for s in session_ids if s in by_id]


def list_sessions(
    filter_string: str | None = None,
    order_by: Sequence[str] | str | None = None,
    max_results: int = 50,
    page_token: str | None = None,
    *,
    store: Store | None = None,
) -> Page[SessionSummary]:
    """Sessions, most recently active first: one ``SessionSummary`` each.

    ``order_by`` takes ``"<key> [ASC|DESC]"`` with keys ``last_seen``, ``first_seen``,
    ``turns``, ``errors``, ``total_duration_ms``, ``mean_duration_ms``, ``session_id``,
    and the LLM totals ``cost``, ``total_tokens``, ``input_tokens``, ``output_tokens``,
    ``llm_calls``, ``unpriced_calls`` (``"cost DESC"``: the most expensive first), and
    the feedback ``negative_feedback``, ``satisfaction``, ``feedback_count``
    (``"negative_feedback DESC"``: the sessions with thumbs-down first; sessions
    without boolean feedback sort last by ``satisfaction`` either way).
    With a ``filter_string`` only matching traces are counted.

    >>> page = sessiontrace.list_sessions(filter_string="user = 'user-123'")
    >>> [(s.session_id, s.turns) for s in page]
    """
    st = _store(store)
    ids, token, where = _group_page(
        st, "session_id", _SESSION_ORDER, filter_string, order_by, max_results, page_token
    )
    return Page(tuple(_session_summaries(st, ids, where)), token)


def get_session_summary(session_id: str, *, store: Store | None = None) -> SessionSummary | None:
    """The summary of one session, or ``None`` if it has no traces."""
    st = _store(store)
    found = _session_summaries(st, [session_id], compile_filter(None, dialect=st.dialect))
    return found[0] if found else None


def session_flow(session_id: str, *, store: Store | None = None) -> list[SessionTurn]:
    """A conversation turn by turn, oldest first (the seed's ``analyze_session_flow``).

    >>> [t.to_dict() for t in sessiontrace.session_flow("session-abc-0")]
    [{'turn': 1, 'trace_id': 'tr-...', 'timestamp': 1765560306051, 'duration_ms': 2570, ...}]
    """
    st = _store(store)
    rows = (
        st.connection()
        .execute(
            "SELECT t.trace_id, t.request_time, t.execution_time_ms, t.state, t.name, t.user_id, "  # noqa: S608
            f"t.root_span_id, t.spans, s.inputs, s.outputs, t.request_preview, t.response_preview, "
            f"{st.dialect.tags_json}, {_LLM_COLUMNS} FROM traces t "
            "LEFT JOIN spans s ON t.spans IS NULL AND s.trace_id = t.trace_id "
            "AND s.span_id = t.root_span_id WHERE t.session_id = ? "
            "ORDER BY t.request_time, t.trace_id",
            (session_id,),
        )
        .fetchall()
    )
    feedback = _turn_feedback(st, session_id) if rows else {}
    turns = []
    for n, (tid, ts, ms, state, name, user, root_id, spans, inputs, outputs, *rest) in enumerate(
        rows, 1
    ):
        req_p, resp_p, tags, calls, tokens_in, tokens_out, tokens, cost, unpriced = rest
        if spans is not None:  # the root span's inputs and outputs, from the spans array
            root = next((s for s in loads_marked(spans) if s["span_id"] == root_id), None)
            request, response = (None, None) if root is None else (root["inputs"], root["outputs"])
        else:  # a trace written before schema 3: its root span's row
            request = None if inputs is None else loads(inputs)
            response = None if outputs is None else loads(outputs)
        turns.append(
            SessionTurn(
                n,
                tid,
                ts,
                None if ms is None else round(ms),
                state,
                _preview(req_p) if request is None else request,
                _preview(resp_p) if response is None else response,
                name,
                user,
                {} if tags is None else loads_strings(tags),
                calls,
                tokens_in,
                tokens_out,
                tokens,
                cost,
                unpriced,
                feedback.get(tid, ()),
            )
        )
    return turns


def _turn_feedback(store: Store, session_id: str) -> dict[str, tuple[dict[str, Any], ...]]:
    """The feedback on a session's traces by trace id, oldest first, overridden
    values included (``valid`` False)."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for (
        tid,
        aid,
        name,
        value,
        rationale,
        source_type,
        source_id,
        created,
        valid,
    ) in store.connection().execute(
        "SELECT a.trace_id, a.assessment_id, a.name, a.value_json, a.rationale, "
        "a.source_type, a.source_id, a.create_time_ms, a.valid "
        "FROM traces t CROSS JOIN assessments a "  # the session's traces first
        "WHERE t.session_id = ? AND a.trace_id = t.trace_id AND a.kind = 'feedback' "
        # An override made in the same millisecond still follows what it overrides.
        "ORDER BY a.create_time_ms, a.overrides IS NOT NULL, a.assessment_id",
        (session_id,),
    ):
        by_trace.setdefault(tid, []).append(
            {
                "assessment_id": aid,
                "name": name,
                "value": loads(value),
                "rationale": rationale,
                "source_type": source_type,
                "source_id": source_id,
                "create_time_ms": created,
                "valid": bool(valid),
            }
        )
    return {tid: tuple(items) for tid, items in by_trace.items()}


def _preview(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- users --------------------------------------------------------------------------


def _user_summaries(store: Store, user_ids: Sequence[str], where: Compiled) -> list[UserSummary]:
    if not user_ids:
        return []
    params = dict(where.params)
    members = _in_list(store.dialect, "t.user_id", user_ids, params)
    sql = (
        "SELECT t.user_id, min(t.request_time), max(t.request_time), "  # noqa: S608
        f"count(DISTINCT t.session_id), count(*), {_ERRORS}, "
        f"avg(t.execution_time_ms), {_LLM_SQL} "
        f"FROM traces t WHERE {members} AND {where.sql} GROUP BY t.user_id"
    )
    by_id = {}
    conn = store.connection()
    with pattern_errors(where):
        rows = conn.execute(sql, params).fetchall()
        feedback = _tally(
            conn.execute(
                _feedback_sql(["t.user_id"], f"{members} AND {where.sql}", traces_first=True),
                params,
            )
        )
    for row in rows:
        uid, first, last, sessions, traces, errors, mean = row[:7]
        by_id[uid] = UserSummary(
            uid,
            first,
            last,
            sessions,
            traces,
            errors,
            _rate(errors, traces),
            mean,
            *row[7:],
            **_feedback_fields(feedback.get(uid)),
        )
    return [by_id[u] for u in user_ids if u in by_id]


def list_users(
    filter_string: str | None = None,
    order_by: Sequence[str] | str | None = None,
    max_results: int = 50,
    page_token: str | None = None,
    *,
    store: Store | None = None,
) -> Page[UserSummary]:
    """Users, most recently active first: one ``UserSummary`` each.

    ``order_by`` keys: ``last_seen``, ``first_seen``, ``traces``, ``sessions``,
    ``errors``, ``mean_latency_ms``, ``user_id``, and the LLM totals ``cost``,
    ``total_tokens``, ``input_tokens``, ``output_tokens``, ``llm_calls``,
    ``unpriced_calls``, and ``negative_feedback``, ``satisfaction``, ``feedback_count``
    (users without boolean feedback sort last by ``satisfaction`` either way).

    >>> sessiontrace.list_users(order_by="cost DESC", max_results=10)   # the most expensive
    >>> sessiontrace.list_users(order_by="satisfaction ASC")   # the least satisfied first
    """
    st = _store(store)
    ids, token, where = _group_page(
        st, "user_id", _USER_ORDER, filter_string, order_by, max_results, page_token
    )
    return Page(tuple(_user_summaries(st, ids, where)), token)


def user_report(
    user_id: str,
    days: int | None = 7,
    *,
    now_ms: int | None = None,
    store: Store | None = None,
) -> UserReport | None:
    """A user's activity over the last ``days`` days (``None``: all time), or ``None``
    if the user has no traces at all: the seed's ``analyze_user_behavior`` in SQL.

    >>> report = sessiontrace.user_report("user-123", days=7)
    >>> report.traces, report.sessions, report.error_rate, report.daily_activity
    """
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
        raise ValueError(f"days must be a non-negative integer or None, not {days!r}")
    conn = _store(store).connection()
    until = int(time.time() * 1000) if now_ms is None else now_ms
    since = None if days is None else until - days * DAY_MS
    seen = conn.execute(
        "SELECT min(request_time), max(request_time) FROM traces WHERE user_id = ?", (user_id,)
    ).fetchone()
    if seen[0] is None:
        return None
    window = "t.user_id = :u" + ("" if since is None else " AND t.request_time > :since")
    params = {"u": user_id, "since": since}
    traces, sessions, errors, mean, *llm = conn.execute(
        f"SELECT count(*), count(DISTINCT t.session_id), {_ERRORS}, "  # noqa: S608
        f"avg(t.execution_time_ms), {_LLM_SQL} FROM traces t WHERE {window}",
        params,
    ).fetchone()
    by_day = _tally(conn.execute(_feedback_sql([_DAY], window, traces_first=True), params))
    daily = tuple(
        DailyActivity(_day(day), n, e, *rest, **_feedback_fields(by_day.get(day)))
        for day, n, e, *rest in conn.execute(
            f"SELECT {_DAY} AS day, count(*), {_ERRORS}, {_LLM_SQL} "  # noqa: S608
            f"FROM traces t WHERE {window} GROUP BY day ORDER BY day",
            params,
        )
    )
    feedback: _Tally = {}
    for tally in by_day.values():
        _merge(feedback, tally)
    tags: dict[str, dict[str, int]] = {}
    for key, value, n in conn.execute(
        "SELECT g.key, g.value, count(*) AS n FROM traces t "  # noqa: S608
        f"JOIN trace_tags g ON g.trace_id = t.trace_id WHERE {window} "
        "GROUP BY g.key, g.value ORDER BY g.key, n DESC, g.value",
        params,
    ):
        tags.setdefault(key, {})[value] = n
    return UserReport(
        user_id=user_id,
        days=days,
        since_ms=since,
        until_ms=until,
        first_seen_ms=seen[0],
        last_seen_ms=seen[1],
        traces=traces,
        sessions=sessions,
        errors=errors,
        error_rate=_rate(errors, traces),
        mean_latency_ms=mean,
        daily_activity=daily,
        tags=tags,
        **_llm(llm),
        **_feedback_fields(feedback),
    )


def daily_activity(
    filter_string: str | None = None,
    *,
    days: int = 30,
    now_ms: int | None = None,
    store: Store | None = None,
) -> tuple[DailyActivity, ...]:
    """Traces, errors and LLM calls, tokens and cost per UTC day over the last ``days``
    days, over all users (the users page's cost-over-time chart); days without traces
    are left out. ``filter_string`` counts only the matching traces."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer, not {days!r}")
    st = _store(store)
    where = compile_search(filter_string, dialect=st.dialect)
    until = int(time.time() * 1000) if now_ms is None else now_ms
    params: dict[str, Any] = {**where.params, "_since": until - days * DAY_MS}
    conn = st.connection()
    window = f"t.request_time > :_since AND {where.sql}"
    with pattern_errors(where):
        rows = conn.execute(
            f"SELECT {_DAY} AS day, count(*), {_ERRORS}, {_LLM_SQL} FROM traces t "  # noqa: S608
            f"WHERE {window} GROUP BY day ORDER BY day",
            params,
        ).fetchall()
        by_day = _tally(conn.execute(_feedback_sql([_DAY], window), params))
    return tuple(
        DailyActivity(_day(day), n, e, **_llm(rest), **_feedback_fields(by_day.get(day)))
        for day, n, e, *rest in rows
    )


# -- metadata values ------------------------------------------------------------------


_VALUE_ORDER = {
    "traces": "n",
    "users": "count(DISTINCT t.user_id)",
    "errors": _ERRORS,
    "mean_latency_ms": "avg(t.execution_time_ms)",
    "first_seen": "min(t.request_time)",
    "last_seen": "max(t.request_time)",
    **{k: v for k, v in _GROUP_ORDER.items() if k in LLM_FIELD_NAMES},
    **_FEEDBACK_ORDER,
}


def _order_sql(
    dialect: Dialect,
    order_by: Sequence[str] | str | None,
    allowed: Mapping[str, str],
    default: Sequence[tuple[str, bool]],
    tie: Sequence[tuple[str, bool]],
) -> tuple[str, bool]:
    """ORDER BY terms: ``order_by``'s keys (else ``default``), then ``tie``; and
    whether a key orders by feedback (the query then needs ``_FEEDBACK_JOIN``)."""
    if order_by is None:
        return ", ".join(dialect.order_term(expr, asc) for expr, asc in default), False
    keys = _parse_group_order(order_by, allowed)
    terms = [_order_term(dialect, k, allowed[k], asc) for k, asc in keys]
    terms += [dialect.order_term(expr, asc) for expr, asc in tie]
    return ", ".join(terms), any(k in _FEEDBACK_ORDER for k, _ in keys)


def metadata_breakdown(
    key: str = "app_version",
    filter_string: str | None = None,
    *,
    order_by: Sequence[str] | str | None = None,
    max_results: int = 100,
    store: Store | None = None,
) -> list[MetadataValueSummary]:
    """Traces, distinct users, errors, latency and LLM calls, tokens and cost for each
    value of a metadata key, most traces first; traces without the key are left out.

    ``order_by`` keys: ``traces``, ``users``, ``errors``, ``mean_latency_ms``,
    ``first_seen``, ``last_seen``, the LLM totals (``"cost DESC"``) and
    ``negative_feedback``, ``satisfaction``, ``feedback_count``.

    >>> for v in sessiontrace.metadata_breakdown("app_version"):
    ...     print(v.value, v.traces, v.users, f"{v.error_rate:.1%}", v.mean_latency_ms, v.cost)
    """
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    _check_limit(max_results)
    st = _store(store)
    order_sql, by_feedback = _order_sql(
        st.dialect, order_by, _VALUE_ORDER, [("n", False), ("v", True)], [("v", True)]
    )
    join = _FEEDBACK_JOIN if by_feedback else ""
    where = compile_search(filter_string, dialect=st.dialect)
    params: dict[str, Any] = {**where.params, "_key": key, "_limit": max_results}
    aggregates = (
        f"count(*) AS n, count(DISTINCT t.user_id), {_ERRORS}, "
        f"avg(t.execution_time_ms), min(t.request_time), max(t.request_time), {_LLM_SQL}"
    )
    column = {METADATA_USER: "user_id", METADATA_SESSION: "session_id"}.get(key)
    if column is not None:
        sql = (
            f"SELECT t.{column} AS v, {aggregates} FROM traces t{join} "  # noqa: S608
            f"WHERE t.{column} IS NOT NULL AND {where.sql} GROUP BY v "
            f"ORDER BY {order_sql} LIMIT :_limit"
        )
    else:
        sql = (
            f"SELECT m.value AS v, {aggregates} FROM trace_metadata m "  # noqa: S608
            f"JOIN traces t ON t.trace_id = m.trace_id{join} WHERE m.key = :_key AND {where.sql} "
            f"GROUP BY v ORDER BY {order_sql} LIMIT :_limit"
        )
    conn = st.connection()
    with pattern_errors(where):
        rows = conn.execute(sql, params).fetchall()
        feedback = _value_feedback(st, key, [r[0] for r in rows], where) if rows else {}
    return [
        MetadataValueSummary(
            key,
            v,
            n,
            users,
            errors,
            _rate(errors, n),
            mean,
            first,
            last,
            *rest,
            **_feedback_fields(feedback.get(v)),
        )
        for v, n, users, errors, mean, first, last, *rest in rows
    ]


def _value_expr(key: str) -> tuple[str, str, str]:
    """A metadata key's value over ``traces t``: the expression, the join it needs and
    the condition that the trace has the key (``:_key`` bound to ``key``)."""
    column = {METADATA_USER: "user_id", METADATA_SESSION: "session_id"}.get(key)
    if column is not None:
        return f"t.{column}", "", f"t.{column} IS NOT NULL"
    return "m.value", " JOIN trace_metadata m ON m.trace_id = t.trace_id", "m.key = :_key"


def _value_feedback(
    store: Store, key: str, values: Sequence[str], where: Compiled
) -> dict[Any, _Tally]:
    """The feedback on the traces of each of ``values`` of ``key`` (and ``where``)."""
    params: dict[str, Any] = {**where.params, "_key": key}
    expr, join, has_key = _value_expr(key)
    members = _in_list(store.dialect, expr, values, params)
    sql = _feedback_sql([expr], f"{has_key} AND {members} AND {where.sql}", join)
    return _tally(store.connection().execute(sql, params))


# -- models -----------------------------------------------------------------------------


_MODEL_ORDER = {
    "llm_calls": "count(*)",
    "traces": "count(DISTINCT s.trace_id)",
    "users": "count(DISTINCT t.user_id)",
    "cost": "sum(s.cost)",
    "total_tokens": "sum(s.total_tokens)",
    "input_tokens": "sum(s.input_tokens)",
    "output_tokens": "sum(s.output_tokens)",
    "unpriced_calls": "count(*) FILTER (WHERE s.cost IS NULL)",
    "model": "s.model",
}


def model_breakdown(
    filter_string: str | None = None,
    *,
    order_by: Sequence[str] | str | None = None,
    max_results: int = 100,
    store: Store | None = None,
) -> list[ModelSummary]:
    """LLM calls, tokens and cost per model and provider, most calls first.

    Counts the calls that count in their traces' totals (a call inside another call
    that reported usage is left out, as in the totals), so the models add up to the
    traces. ``filter_string`` selects traces (``"user = 'u1'"``,
    ``"trace.timestamp_ms > ..."``); ``order_by`` keys: ``llm_calls``, ``traces``,
    ``users``, ``cost``, ``total_tokens``, ``input_tokens``, ``output_tokens``,
    ``unpriced_calls``, ``model``.

    >>> for m in sessiontrace.model_breakdown(order_by="cost DESC"):
    ...     print(m.model, m.provider, m.llm_calls, m.total_tokens, m.cost, m.unpriced_calls)
    """
    _check_limit(max_results)
    st = _store(store)
    tie = [("s.model", True), ("s.provider", True)]
    order_sql, _ = _order_sql(st.dialect, order_by, _MODEL_ORDER, [("count(*)", False), *tie], tie)
    where = compile_search(filter_string, dialect=st.dialect)
    params: dict[str, Any] = {**where.params, "_limit": max_results}
    sql = (
        "SELECT s.model, s.provider, count(DISTINCT s.trace_id), count(DISTINCT t.user_id), "  # noqa: S608
        "count(*), coalesce(sum(s.input_tokens), 0), coalesce(sum(s.output_tokens), 0), "
        "coalesce(sum(s.total_tokens), 0), sum(s.cost), count(*) FILTER (WHERE s.cost IS NULL) "
        "FROM spans s JOIN traces t ON t.trace_id = s.trace_id "
        f"WHERE s.llm = 1 AND {where.sql} GROUP BY s.model, s.provider "
        f"ORDER BY {order_sql} LIMIT :_limit"
    )
    conn = st.connection()
    with pattern_errors(where):
        rows = conn.execute(sql, params).fetchall()
        # Each feedback once per model of its trace (a trace may call a model twice),
        # starting from the feedback: no pass over every call.
        feedback = (
            _tally(
                conn.execute(
                    f"SELECT x.model, x.provider, {_FEEDBACK_SQL_X} FROM ("  # noqa: S608
                    "SELECT DISTINCT a.assessment_id, s.model, s.provider, a.name, "
                    "a.value_bool, a.value_num FROM assessments a "
                    "JOIN traces t ON t.trace_id = a.trace_id "
                    "JOIN spans s ON s.trace_id = a.trace_id "
                    f"WHERE s.llm = 1 AND {_FEEDBACK} AND {where.sql}) x "
                    "GROUP BY x.model, x.provider, x.name",
                    params,
                ),
                2,
            )
            if rows
            else {}
        )
    return [
        ModelSummary(
            model,
            provider,
            traces,
            users,
            *rest,
            **_feedback_fields(feedback.get((model, provider))),
        )
        for model, provider, traces, users, *rest in rows
    ]


# -- feedback over time -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DailyFeedback(_FeedbackTotals):
    """The valid feedback on one UTC day's traces (by the trace's start), for one
    value of a metadata key when ``feedback_over_time`` was given one (else ``value``
    is ``None``)."""

    date: str  # YYYY-MM-DD, UTC
    value: str | None
    feedback_count: int = 0
    negative_feedback: int = 0
    satisfaction: float | None = None
    feedback: Mapping[str, FeedbackStats] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "value": self.value, **self._feedback_dict()}


def feedback_over_time(
    filter_string: str | None = None,
    *,
    user_id: str | None = None,
    metadata_key: str | None = None,
    name: str | None = None,
    days: int | None = None,
    now_ms: int | None = None,
    store: Store | None = None,
) -> tuple[DailyFeedback, ...]:
    """Feedback per UTC day of its traces: count, negative values, satisfaction and
    per-name ``FeedbackStats`` (the satisfaction-over-time charts).

    ``user_id`` keeps one user's traces, ``metadata_key`` splits each day by the
    traces' value of that key (``"app_version"``; traces without it are left out),
    ``name`` keeps one feedback name, ``days`` the last ``days`` days (``None``: all
    time), ``filter_string`` the matching traces. Days without feedback are left out;
    rows come by date, then value.

    >>> for d in sessiontrace.feedback_over_time(metadata_key="app_version", days=30):
    ...     print(d.date, d.value, d.feedback_count, d.satisfaction)
    """
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ValueError(f"days must be a positive integer or None, not {days!r}")
    for label, given in (("user_id", user_id), ("metadata_key", metadata_key), ("name", name)):
        if given is not None and (not isinstance(given, str) or not given):
            raise ValueError(f"{label} must be a non-empty string or None")
    st = _store(store)
    where = compile_search(filter_string, dialect=st.dialect)
    params: dict[str, Any] = dict(where.params)
    conditions = [where.sql]
    if days is not None:
        until = int(time.time() * 1000) if now_ms is None else now_ms
        params["_since"] = until - days * DAY_MS
        conditions.append("t.request_time > :_since")
    if user_id is not None:
        params["_user"] = user_id
        conditions.append("t.user_id = :_user")
    if name is not None:
        params["_name"] = name
        conditions.append("a.name = :_name")
    groups, join = [_DAY], ""
    if metadata_key is not None:
        params["_key"] = metadata_key
        expr, join, has_key = _value_expr(metadata_key)
        groups.append(expr)
        conditions.append(has_key)
    # One user's: from their traces (the user index), as the user report does.
    sql = _feedback_sql(groups, " AND ".join(conditions), join, traces_first=user_id is not None)
    with pattern_errors(where):
        by_group = _tally(st.connection().execute(sql, params), len(groups))
    if metadata_key is None:
        keyed = {(day, None): tally for day, tally in by_group.items()}
    else:
        keyed = by_group
    return tuple(
        DailyFeedback(_day(day), value, **_feedback_fields(keyed[day, value]))
        for day, value in sorted(keyed, key=lambda k: (k[0], k[1] or ""))
    )
