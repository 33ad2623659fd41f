"""A small store with known feedback, shared by the roll-up tests (analytics, JSON
API, CLI): traces written through the SDK at fixed times with fixed ids, and
assessment rows written into the store's ``assessments`` table as constructed
(overridden ones, expectations, feedback whose trace arrives later).

    trace  user  session  app_version  day  valid feedback
    t1     u1    s1       1.0          D0   thumbs=True, score=4
    t2     u1    s1       1.0          D0   thumbs=False, score=2, comment="meh"
                                            (and an overridden thumbs=True)
    t3     u2    s2       2.0          D1   thumbs=False
    t4     u2    s3       2.0          D1   thumbs=True (u2), thumbs=True (u9)
    t5     u3    s4       1.0          D2   none
    t6     u4    s5       2.0          D2   none: an overridden thumbs=False and an
                                            expectation thumbs=True only
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _runtime, _tracing

BASE_MS = 1_765_584_000_000  # 2025-12-13 00:00 UTC
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
D0, D1, D2 = "2025-12-13", "2025-12-14", "2025-12-15"
NOW_MS = BASE_MS + 2 * DAY_MS + 2 * HOUR_MS

TRACES = [  # id, user, session, app_version, request time
    ("tr-1", "u1", "s1", "1.0", BASE_MS + HOUR_MS),
    ("tr-2", "u1", "s1", "1.0", BASE_MS + 3 * HOUR_MS),
    ("tr-3", "u2", "s2", "2.0", BASE_MS + DAY_MS + HOUR_MS),
    ("tr-4", "u2", "s3", "2.0", BASE_MS + DAY_MS + 2 * HOUR_MS),
    ("tr-5", "u3", "s4", "1.0", BASE_MS + 2 * DAY_MS + HOUR_MS),
    ("tr-6", "u4", "s5", "2.0", BASE_MS + 2 * DAY_MS + HOUR_MS),
]
# trace, name, value, valid, kind
FEEDBACK: list[tuple[str, str, Any, int, str]] = [
    ("tr-1", "thumbs", True, 1, "feedback"),
    ("tr-1", "score", 4, 1, "feedback"),
    ("tr-2", "thumbs", True, 0, "feedback"),
    ("tr-2", "thumbs", False, 1, "feedback"),
    ("tr-2", "score", 2, 1, "feedback"),
    ("tr-2", "comment", "meh", 1, "feedback"),
    ("tr-3", "thumbs", False, 1, "feedback"),
    ("tr-4", "thumbs", True, 1, "feedback"),
    ("tr-4", "thumbs", True, 1, "feedback"),
    ("tr-6", "thumbs", False, 0, "feedback"),
    ("tr-6", "thumbs", True, 1, "expectation"),
]

_COLUMNS = (
    "assessment_id, trace_id, kind, name, value_json, value_num, value_bool, rationale, "
    "source_type, source_id, create_time_ms, last_update_time_ms, valid"
)


@sessiontrace.trace(name="chat")
def _chat(message: str) -> str:
    return f"echo {message}"


def write_traces(traces: Sequence[tuple[str, str | None, str | None, str, int]]) -> None:
    """Traces through the SDK with the given ids, users, sessions, versions and times."""
    with pytest.MonkeyPatch.context() as mp:
        for trace_id, user, session, version, ms in traces:
            mp.setitem(_tracing.clock, "ns", lambda ms=ms: ms * 1_000_000)
            mp.setitem(_tracing.ids, "trace", lambda tid=trace_id: tid)
            with sessiontrace.user_session(user_id=user, session_id=session):

                @sessiontrace.trace(name="turn")
                def turn(v: str = version) -> str:
                    sessiontrace.update_current_trace(metadata={"app_version": v})
                    return _chat("hi")

                turn()
    assert sessiontrace.flush(10)


def _row(n: int, trace_id: str, name: str, value: Any, valid: int, kind: str) -> tuple[Any, ...]:
    boolean = isinstance(value, bool)
    number = isinstance(value, (int, float)) and not boolean
    return (
        f"a-{n:06d}",
        trace_id,
        kind,
        name,
        None if value is None else json.dumps(value),  # None: feedback with only an error
        float(value) if boolean or number else None,
        int(value) if boolean else None,
        None,
        "HUMAN",
        f"src-{n}",
        BASE_MS + n,
        BASE_MS + n,
        valid,
    )


class Assessments:
    """Writes assessment rows straight into the test store's table (both engines)."""

    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.count = 0
        _runtime.get_store().count_traces()  # the store's schema exists

    def _execute(self, sql: str, rows: Sequence[tuple[Any, ...]] = ()) -> None:
        if self.uri.startswith("sqlite:///"):
            conn = sqlite3.connect(self.uri[len("sqlite:///") :])
            try:
                with conn:
                    if rows:
                        conn.executemany(sql, rows)
                    else:
                        conn.execute(sql)
            finally:
                conn.close()
            return
        import psycopg

        with psycopg.connect(self.uri) as pg, pg.cursor() as cur:
            sql = sql.replace("?", "%s")
            if rows:
                cur.executemany(sql, rows)
            else:
                cur.execute(sql)

    def add(self, rows: Sequence[tuple[str, str, Any, int, str]]) -> None:
        if not rows:
            return
        made = []
        for trace_id, name, value, valid, kind in rows:
            self.count += 1
            made.append(_row(self.count, trace_id, name, value, valid, kind))
        marks = ", ".join("?" * 13)
        self._execute(f"INSERT INTO assessments ({_COLUMNS}) VALUES ({marks})", made)

    def clear(self) -> None:
        self._execute("DELETE FROM assessments")


@pytest.fixture
def assessments(tracking_uri: str) -> Iterator[Assessments]:
    yield Assessments(tracking_uri)


@pytest.fixture
def rollup_store(assessments: Assessments) -> Assessments:
    """The table above, written."""
    write_traces(TRACES)
    assessments.add(FEEDBACK)
    return assessments
