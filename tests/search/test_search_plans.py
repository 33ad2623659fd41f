"""Query plans: session and user lookups are answered from indexes, never a table scan.

Every statement the public calls send is captured (with its values inlined by
SQLite's trace hook) and explained with ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _runtime

from .conftest import Record

# A scan of json_each is of the bound list of ids (a page's, for its assessments).
FULL_SCAN = re.compile(r"\bSCAN (?!json_each VIRTUAL)(\w+)(?! USING)")


@contextmanager
def captured() -> Iterator[list[str]]:
    conn = _runtime.get_store().connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def plans(call: Callable[[], Any]) -> list[tuple[str, list[str]]]:
    sessiontrace.flush()
    with captured() as statements:
        call()
    conn = _runtime.get_store().connection()
    out = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            out.append((sql, [r[3] for r in rows]))
    assert out, "no statement captured"
    return out


def assert_indexed(found: list[tuple[str, list[str]]], *needed: str) -> None:
    details = [d for _, ds in found for d in ds]
    for sql, ds in found:
        for d in ds:
            assert not FULL_SCAN.search(d), f"full scan {d!r} in {sql}"
    for index in needed:
        assert any(index in d for d in details), f"{index} unused: {details}"


CASES: list[tuple[str, Callable[[], Any], tuple[str, ...]]] = [
    (
        "search by session",
        lambda: sessiontrace.search_traces(
            filter_string="metadata.`mlflow.trace.session` = 'session-3'", return_type="list"
        ),
        ("traces_session", "assessments_trace"),  # the spans come in the trace's row
    ),
    (
        "search by session and span type",
        lambda: sessiontrace.search_traces(
            filter_string="session = 'session-3' AND span.type = 'LLM'", return_type="list"
        ),
        ("traces_session", "spans_trace_span"),
    ),
    (
        "search by session, oldest first",
        lambda: sessiontrace.search_traces(
            filter_string="session = 'session-3'", order_by=["timestamp ASC"], return_type="list"
        ),
        ("traces_session",),
    ),
    (
        "search by user and time",
        lambda: sessiontrace.search_traces(
            filter_string="metadata.`mlflow.trace.user` = 'user-5' AND trace.timestamp_ms > 0",
            order_by=["trace.timestamp_ms DESC"],
            return_type="list",
        ),
        ("traces_user",),
    ),
    (
        "search by user and tag",
        lambda: sessiontrace.search_traces(
            filter_string="user = 'user-5' AND tag.query_category = 'chat'", return_type="list"
        ),
        ("traces_user",),
    ),
    ("session flow", lambda: sessiontrace.session_flow("session-3"), ("traces_session",)),
    ("session summary", lambda: sessiontrace.get_session_summary("session-3"), ("traces_session",)),
    ("user report", lambda: sessiontrace.user_report("user-5"), ("traces_user",)),
    (
        "sessions, first page",
        lambda: sessiontrace.list_sessions(),
        ("traces_request_time", "traces_session"),
    ),
    (
        "users, first page",
        lambda: sessiontrace.list_users(),
        ("traces_request_time", "traces_user"),
    ),
    (
        "a user's sessions",
        lambda: sessiontrace.list_sessions(filter_string="user = 'user-5'"),
        ("traces_user", "traces_session"),
    ),
    (
        "traces by metadata value, newest first",
        lambda: sessiontrace.search_traces(
            filter_string="metadata.app_version = '1.1.0'", max_results=10, return_type="list"
        ),
        ("trace_metadata_key_value",),
    ),
]


@pytest.mark.parametrize(("name", "call", "indexes"), CASES, ids=[c[0] for c in CASES])
def test_lookups_use_indexes(
    dataset: list[Record], name: str, call: Callable[[], Any], indexes: tuple[str, ...]
) -> None:
    assert_indexed(plans(call), *indexes)


def test_second_page_seeks_instead_of_skipping(dataset: list[Record]) -> None:
    first = sessiontrace.search_traces(max_results=5, return_type="list")
    found = plans(
        lambda: sessiontrace.search_traces(
            max_results=5, page_token=first.next_page_token, return_type="list"
        )
    )
    sql, details = found[0]
    assert "OFFSET 0" in sql
    assert any("traces_request_time (request_time<?)" in d for d in details), details
