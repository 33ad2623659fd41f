"""The ``assessments`` table: its statements and the work both stores share.

Written in SQLite's parameter style (``?``); the PostgreSQL store runs them through
its translation. Each function runs inside the caller's transaction, given
``execute(sql, params) -> cursor``. No foreign key to ``traces``: feedback on a
live trace is written before its trace row.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._assessments import (
    ASSESSMENT_COLUMNS,
    Assessment,
    AssessmentError,
    AssessmentNotFoundError,
    AssessmentSource,
    Expectation,
    Feedback,
    assessment_from_row,
    assessment_row,
    new_assessment_id,
)
from .._records import AssessmentChange

logger = logging.getLogger("sessiontrace")

__all__ = [
    "ASSESSMENT_COLUMNS",
    "Execute",
    "apply",
    "assessments_ddl",
    "by_trace",
    "delete",
    "get",
    "override",
    "put",
    "update",
]

Execute = Callable[[str, Sequence[Any]], Any]


def assessments_ddl(text: str, id_collation: str = "", if_not_exists: str = "") -> list[str]:
    """The table and its indexes, with the store's text type and id collation
    (PostgreSQL's ``COLLATE "C"``); ``if_not_exists`` for SQLite's idempotent script."""
    ids = f"{text}{id_collation}"
    real = "REAL" if text == "TEXT" else "double precision"
    integer = "INTEGER" if text == "TEXT" else "integer"
    bigint = "INTEGER" if text == "TEXT" else "bigint"
    return [
        f"""CREATE TABLE {if_not_exists}assessments (
    assessment_id {ids} PRIMARY KEY,
    trace_id {ids} NOT NULL,
    kind {ids} NOT NULL,
    name {ids} NOT NULL,
    value_json {text},
    value_num {real},
    value_bool {integer},
    rationale {text},
    metadata_json {text},
    error_json {text},
    source_type {ids} NOT NULL,
    source_id {ids},
    span_id {ids},
    create_time_ms {bigint} NOT NULL,
    last_update_time_ms {bigint} NOT NULL,
    valid {integer} NOT NULL DEFAULT 1,
    overrides {ids},
    dedupe_key {ids}
)""",
        f"CREATE INDEX {if_not_exists}assessments_trace ON assessments (trace_id)",
        f"CREATE INDEX {if_not_exists}assessments_name ON assessments (kind, name, valid)",
        f"CREATE UNIQUE INDEX {if_not_exists}assessments_dedupe ON assessments (dedupe_key) "
        "WHERE dedupe_key IS NOT NULL",
    ]


_MARKS = ",".join("?" * 17)
_INSERT = f"INSERT INTO assessments ({ASSESSMENT_COLUMNS}, dedupe_key) VALUES ({_MARKS},?)"  # noqa: S608
# One value a dedupe key (the feedback endpoint's trace, name and user): a second post
# changes the value in place, keeping its id and creation time. Atomic in one
# statement on both engines, however many posts race.
# A change sent by a remote client may arrive twice (the exporter retries a batch).
_INSERT_ONCE = _INSERT + " ON CONFLICT (assessment_id) DO NOTHING"
_UPSERT = (
    _INSERT + " ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO UPDATE SET "
    "value_json = excluded.value_json, value_num = excluded.value_num, "
    "value_bool = excluded.value_bool, rationale = excluded.rationale, "
    "metadata_json = excluded.metadata_json, error_json = excluded.error_json, "
    "last_update_time_ms = excluded.last_update_time_ms"
)
_SELECT = f"SELECT {ASSESSMENT_COLUMNS} FROM assessments"  # noqa: S608
_GET = _SELECT + " WHERE assessment_id = ? AND trace_id = ?"
_GET_BY_KEY = _SELECT + " WHERE dedupe_key = ?"
_UPDATE = (
    "UPDATE assessments SET name = ?, value_json = ?, value_num = ?, value_bool = ?, "
    "rationale = ?, metadata_json = ?, error_json = ?, source_type = ?, source_id = ?, "
    "span_id = ?, last_update_time_ms = ?, valid = ? WHERE assessment_id = ? AND trace_id = ?"
)
_INVALIDATE = "UPDATE assessments SET valid = 0 WHERE assessment_id = ? AND trace_id = ?"
_REVALIDATE = "UPDATE assessments SET valid = 1 WHERE assessment_id = ? AND trace_id = ?"
_DELETE = "DELETE FROM assessments WHERE assessment_id = ? AND trace_id = ?"
# Oldest first; an override made in the same millisecond follows what it overrides.
BY_TRACE = (
    _SELECT + " WHERE trace_id IN ({marks}) "
    "ORDER BY create_time_ms, overrides IS NOT NULL, assessment_id"
)
TRACE_OWNER = "SELECT user_id, session_id FROM traces WHERE trace_id = ?"

_CHANGEABLE = {"name", "value", "rationale", "metadata", "error", "source", "span_id", "valid"}


def _ready(a: Assessment, trace_id: str | None = None) -> Assessment:
    """A copy of ``a`` with an id and its trace id set (never changes the caller's)."""
    if not isinstance(a, Assessment):
        raise TypeError(f"expected a Feedback or an Expectation, got {type(a).__name__}")
    out = copy.copy(a)
    if trace_id is not None:
        out.trace_id = trace_id
    if not out.trace_id:
        raise ValueError("an assessment needs a trace_id to be stored")
    if not out.assessment_id:
        out.assessment_id = new_assessment_id()
    return out


def put(
    execute: Execute, a: Assessment, dedupe_key: str | None, *, once: bool = False
) -> Assessment:
    a = _ready(a)
    if dedupe_key is None:
        execute(_INSERT_ONCE if once else _INSERT, (*assessment_row(a), None))
        return a
    execute(_UPSERT, (*assessment_row(a), dedupe_key))
    return assessment_from_row(execute(_GET_BY_KEY, (dedupe_key,)).fetchone())


def get(execute: Execute, trace_id: str, assessment_id: str) -> Assessment:
    row = execute(_GET, (assessment_id, trace_id)).fetchone()
    if row is None:
        raise AssessmentNotFoundError(f"no assessment {assessment_id!r} on trace {trace_id!r}")
    return assessment_from_row(row)


def update(
    execute: Execute, trace_id: str, assessment_id: str, changes: dict[str, Any]
) -> Assessment:
    unknown = set(changes) - _CHANGEABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}; can update {sorted(_CHANGEABLE)}")
    old = get(execute, trace_id, assessment_id)
    merged = {
        "name": old.name,
        "value": old.value,
        "rationale": old.rationale,
        "metadata": old.metadata,
        "error": old.error,
        "source": old.source,
        "span_id": old.span_id,
        "valid": old.valid,
        **changes,
    }
    now = int(time.time() * 1000)
    new: Assessment
    if isinstance(old, Expectation):
        if merged["rationale"] is not None or merged["error"] is not None:
            raise ValueError("an expectation has no rationale or error")
        new = Expectation(
            name=merged["name"],
            value=merged["value"],
            source=_source(merged["source"]),
            metadata=merged["metadata"],
            span_id=merged["span_id"],
            create_time_ms=old.create_time_ms,
            last_update_time_ms=now,
        )
        new.valid = bool(merged["valid"])
    else:
        new = Feedback(
            name=merged["name"],
            value=merged["value"],
            error=_error(merged["error"]),
            source=_source(merged["source"]),
            metadata=merged["metadata"],
            span_id=merged["span_id"],
            rationale=merged["rationale"],
            create_time_ms=old.create_time_ms,
            last_update_time_ms=now,
            valid=bool(merged["valid"]),
        )
    new.trace_id, new.assessment_id, new.overrides = trace_id, assessment_id, old.overrides
    row = assessment_row(new)
    # name .. span_id, then the update time and valid (see ASSESSMENT_COLUMNS)
    execute(_UPDATE, (*row[3:13], row[14], row[15], assessment_id, trace_id))
    return new


def update_fields(
    execute: Execute, trace_id: str, assessment_id: str, new: Assessment
) -> dict[str, Any]:
    """What ``update_assessment(trace_id, assessment_id, new)`` changes, as MLflow's
    does: name and value (a feedback's error too), the rationale when ``new`` has one,
    and ``new``'s metadata keys merged into the old ones. The kinds must match."""
    old = get(execute, trace_id, assessment_id)
    if old.kind != new.kind:
        raise ValueError(
            f"Cannot update assessment type from {old.kind} to {new.kind}: "
            f"{assessment_id} is a {old.kind}"
        )
    changes: dict[str, Any] = {"name": new.name, "value": new.value}
    if isinstance(new, Feedback):
        changes["error"] = new.error
        if new.rationale is not None:
            changes["rationale"] = new.rationale
    if new.metadata is not None:
        changes["metadata"] = {**(old.metadata or {}), **new.metadata}
    return changes


def _source(value: Any) -> AssessmentSource:
    if not isinstance(value, AssessmentSource):
        raise ValueError(f"source must be an AssessmentSource, got {type(value).__name__}")
    return value


def _error(value: Any) -> Any:
    if value is None or isinstance(value, (AssessmentError, Exception, str)):
        return value
    raise ValueError(f"error must be an AssessmentError, got {type(value).__name__}")


def override(
    execute: Execute, trace_id: str, old_id: str, new: Assessment, *, once: bool = False
) -> Assessment:
    old = get(execute, trace_id, old_id)  # raises when there is none
    if not isinstance(old, Feedback):
        raise ValueError(f"The assessment with ID {old_id} is not a feedback assessment.")
    new = _ready(new, trace_id)
    # the same verdict, corrected: the old one's name and span (MLflow's override)
    new.name, new.span_id = old.name, old.span_id
    new.overrides = old_id
    new.valid = True
    execute(_INSERT_ONCE if once else _INSERT, (*assessment_row(new), None))
    execute(_INVALIDATE, (old_id, trace_id))
    return new


def delete(execute: Execute, trace_id: str, assessment_id: str) -> None:
    """Delete one; the one it overrode (if any) counts again, as in MLflow."""
    old = get(execute, trace_id, assessment_id)
    execute(_DELETE, (assessment_id, trace_id))
    if old.overrides:
        execute(_REVALIDATE, (old.overrides, trace_id))


def by_trace(rows: Iterable[Any]) -> dict[str, list[Assessment]]:
    """Rows of ``BY_TRACE`` (in creation order) grouped by trace id."""
    out: dict[str, list[Assessment]] = {}
    for row in rows:
        out.setdefault(row[1], []).append(assessment_from_row(row))
    return out


def apply(execute: Execute, change: AssessmentChange) -> None:
    """Apply a remote client's ``AssessmentChange`` (inside the batch's transaction).

    Sent again (a retried batch) it changes nothing more. One naming an assessment
    this store does not have (deleted meanwhile), or holding an invalid one, is
    dropped: it must not cost the batch's traces.
    """
    trace_id, op = change.trace_id, change.op
    try:
        new = None if change.assessment is None else Assessment.from_dictionary(change.assessment)
        if new is not None:
            new.trace_id = trace_id
        if op == "put" and new is not None:
            new.assessment_id = change.assessment_id
            put(execute, new, None, once=True)
        elif op == "override" and new is not None:
            override(execute, trace_id, change.assessment_id, new, once=True)
        elif op == "update" and new is not None:
            update(
                execute,
                trace_id,
                change.assessment_id,
                update_fields(execute, trace_id, change.assessment_id, new),
            )
        elif op == "delete":
            delete(execute, trace_id, change.assessment_id)
    except (AssessmentNotFoundError, ValueError, TypeError, KeyError):
        logger.debug("sessiontrace: dropped an assessment change", exc_info=True)
