"""The embedded SQLite store: schema, indexes, round trips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import sessiontrace
from sessiontrace import SQLiteStore
from sessiontrace._store._sqlite import SCHEMA_VERSION


@sessiontrace.trace
def app(message: str) -> str:
    sessiontrace.update_current_trace(metadata={"app_version": "3"}, tags={"kind": "chat"})
    return message[::-1]


def test_zero_configuration_writes_sessiontrace_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiontrace import _runtime

    _runtime.reset_for_tests()  # forget the fixture's configure(): defaults only
    monkeypatch.chdir(tmp_path)
    app("hello")
    trace = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert trace is not None
    assert (tmp_path / "sessiontrace.db").exists()


def test_schema_wal_and_user_session_columns(store_path: Path) -> None:
    with sessiontrace.user_session(user_id="u1", session_id="s1"):
        app("hi")
    sessiontrace.flush()
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = conn.execute("SELECT user_id, session_id, state, name FROM traces").fetchone()
    assert row == ("u1", "s1", "OK", "app")
    # user and session live in their columns, not duplicated as metadata rows
    keys = {k for (k,) in conn.execute("SELECT key FROM trace_metadata")}
    assert "mlflow.trace.user" not in keys and "app_version" in keys
    assert conn.execute("SELECT key, value FROM trace_tags").fetchall() == [("kind", "chat")]


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        ("SELECT trace_id FROM traces WHERE user_id = ? ORDER BY request_time DESC", "traces_user"),
        (
            "SELECT trace_id FROM traces WHERE session_id = ? ORDER BY request_time",
            "traces_session",
        ),
        (
            "SELECT trace_id FROM trace_metadata WHERE key = 'app_version' AND value = ?",
            "trace_metadata_key_value",
        ),
        (
            "SELECT trace_id FROM trace_tags WHERE key = 'kind' AND value = ?",
            "trace_tags_key_value",
        ),
    ],
)
def test_lookups_by_user_session_metadata_and_tag_use_an_index(
    store_path: Path, sql: str, index: str
) -> None:
    app("x")
    sessiontrace.flush()
    conn = sqlite3.connect(store_path)
    plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("v",)))
    assert index in plan, plan


def test_round_trip_of_spans_events_and_attributes(store_path: Path) -> None:
    with sessiontrace.start_span("root", attributes={"a": [1, 2]}) as span:
        span.set_inputs({"q": "ünïcødé ✓"})
        span.add_event("retry", {"attempt": 2}, timestamp_ns=123)
        span.set_outputs(None)
    sessiontrace.flush()
    trace = SQLiteStore(store_path).get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert trace is not None
    (stored,) = trace.data.spans
    assert stored.inputs == {"q": "ünïcødé ✓"}
    assert stored.attributes == {"a": [1, 2]}
    assert stored.events[0].name == "retry"
    assert stored.events[0].timestamp_ns == 123
    assert stored.outputs is None
    assert stored.duration_ms is not None and stored.duration_ms >= 0


def test_unknown_trace_is_none(store_path: Path) -> None:
    app("x")
    assert sessiontrace.get_trace("tr-nope") is None


def test_a_file_from_a_newer_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(RuntimeError, match="newer sessiontrace"):
        SQLiteStore(path).get_trace("tr-x")


LLM_TRACE_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "llm_calls",
    "unpriced_calls",
)
LLM_SPAN_COLUMNS = (
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "llm",
)


def as_schema_3(conn: sqlite3.Connection) -> None:
    """Make a file this version wrote what schema 3 wrote: no LLM columns."""
    conn.executescript(
        "DROP INDEX traces_total_tokens; DROP INDEX traces_cost; DROP INDEX spans_model;"
    )
    for column in LLM_TRACE_COLUMNS:
        conn.execute(f"ALTER TABLE traces DROP COLUMN {column}")
    for column in LLM_SPAN_COLUMNS:
        conn.execute(f"ALTER TABLE spans DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 3")


def as_schema_2(conn: sqlite3.Connection) -> None:
    """Make a file this version wrote what schema 2 wrote: each span's content in its
    row of the spans table, no spans array in the trace's row."""
    as_schema_3(conn)
    for (text,) in conn.execute("SELECT spans FROM traces").fetchall():
        for span in json.loads(text):
            conn.execute(
                "UPDATE spans SET status_message = ?, inputs = ?, outputs = ?, events = ? "
                "WHERE span_id = ?",
                (
                    span["status_message"] or None,
                    None if span["inputs"] is None else json.dumps(span["inputs"]),
                    None if span["outputs"] is None else json.dumps(span["outputs"]),
                    json.dumps(span["events"]) if span["events"] else None,
                    span["span_id"],
                ),
            )
    conn.execute("ALTER TABLE traces DROP COLUMN spans")
    conn.execute("PRAGMA user_version = 2")


def as_schema_1(conn: sqlite3.Connection) -> None:
    """... and what schema 1 wrote: no JSON copies in the traces row."""
    as_schema_2(conn)
    conn.execute("ALTER TABLE traces DROP COLUMN metadata")
    conn.execute("ALTER TABLE traces DROP COLUMN tags")
    conn.execute("PRAGMA user_version = 1")


def test_a_schema_2_file_is_upgraded_in_place_and_reads_the_same(store_path: Path) -> None:
    @sessiontrace.trace(span_type="LLM")
    def llm(prompt: str) -> str:
        sessiontrace.get_current_active_span().add_event("token", {"n": 1})  # type: ignore[union-attr]
        return prompt.upper()

    @sessiontrace.trace
    def chat(prompt: str) -> dict[str, str]:
        return {"answer": llm(prompt)}

    with sessiontrace.user_session(user_id="u1", session_id="s2"):
        chat("old")
    sessiontrace.flush()
    old_id = sessiontrace.get_last_active_trace_id() or ""
    before = sessiontrace.get_trace(old_id)
    assert before is not None and len(before.data.spans) == 2
    sessiontrace._runtime.get_store().close()
    with sqlite3.connect(store_path) as conn:
        as_schema_2(conn)
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}")
    old = sessiontrace.get_trace(old_id)
    assert old is not None and old.to_dict() == before.to_dict()
    assert old.data.spans[1].events[0].attributes == {"n": 1}
    with sessiontrace.user_session(user_id="u1", session_id="s2"):
        chat("new")
    sessiontrace.flush()
    frame = sessiontrace.search_traces("session = 's2'", order_by=["timestamp"])
    assert [r["answer"] for r in frame["response"]] == ["OLD", "NEW"]
    assert [[s["name"] for s in spans] for spans in frame["spans"]] == [["chat", "llm"]] * 2
    assert frame["spans"][0] == [s.to_dict() for s in before.data.spans]
    assert [t.response for t in sessiontrace.session_flow("s2")] == [
        {"answer": "OLD"},
        {"answer": "NEW"},
    ]
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        rows = conn.execute("SELECT spans IS NULL FROM traces ORDER BY request_time").fetchall()
        assert rows == [(1,), (0,)]  # the old trace reads from the spans table


def test_a_schema_1_file_is_upgraded_in_place_and_reads_the_same(
    store_path: Path,
) -> None:
    with sessiontrace.user_session(user_id="u1", session_id="s1"):
        app("old")
    sessiontrace.flush()
    old_id = sessiontrace.get_last_active_trace_id()
    assert old_id is not None
    sessiontrace._runtime.get_store().close()
    # Make the file what schema 1 wrote: no JSON copies in the traces row, and the
    # three time indexes without trace_id.
    with sqlite3.connect(store_path) as conn:
        as_schema_1(conn)
        conn.executescript(
            "DROP INDEX traces_request_time; DROP INDEX traces_user; DROP INDEX traces_session;"
            "CREATE INDEX traces_request_time ON traces (request_time);"
            "CREATE INDEX traces_user ON traces (user_id, request_time) WHERE user_id IS NOT NULL;"
            "CREATE INDEX traces_session ON traces (session_id, request_time) "
            "WHERE session_id IS NOT NULL;"
        )
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}")
    old = sessiontrace.get_trace(old_id)
    assert old is not None
    assert old.info.trace_metadata["app_version"] == "3"
    assert old.info.trace_metadata["mlflow.trace.session"] == "s1"
    assert old.info.tags == {"kind": "chat"}
    app("new")
    sessiontrace.flush()
    new = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert new is not None and new.info.tags == {"kind": "chat"}
    sessiontrace.set_trace_tag(old_id, "reviewed", "yes")
    found = sessiontrace.search_traces("tags.reviewed = 'yes'", return_type="list")
    assert [t.info.tags for t in found] == [{"kind": "chat", "reviewed": "yes"}]
    turns = sessiontrace.session_flow("s1")
    assert [t.tags for t in turns] == [{"kind": "chat", "reviewed": "yes"}]
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for name in ("traces_request_time", "traces_user", "traces_session"):
            columns = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
            assert columns[-2:] == ["request_time", "trace_id"], (name, columns)


def test_reopening_an_existing_file_keeps_its_traces(store_path: Path) -> None:
    app("first")
    sessiontrace.flush()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}")
    app("second")
    store = sessiontrace._runtime.get_store()
    sessiontrace.flush()
    assert store.count_traces() == 2
    assert store.get_trace(trace_id) is not None


def test_lone_surrogates_are_stored_not_dropped(store_path: Path) -> None:
    broken = "half an emoji: \ud83d"

    @sessiontrace.trace(name="surrogate \udc00 name")
    def chat(message: str) -> str:
        sessiontrace.update_current_trace(metadata={"note": broken}, tags={"t": broken})
        return broken

    with sessiontrace.user_session(user_id="user-\ud800"):
        chat(broken)
    trace = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert trace is not None
    assert sessiontrace.get_stats()["dropped"] == 0
    assert trace.info.user_id == "user-?"
    assert trace.info.trace_metadata["note"] == "half an emoji: ?"
    assert trace.info.tags["t"] == "half an emoji: ?"
    assert trace.data.spans[0].name == "surrogate ? name"
    assert "half an emoji" in trace.data.spans[0].outputs


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**70, "negative": -(2**65), "edge": 2**63, "u64": 2**64 - 1, "i64": -(2**63)},
        {"below-i64": -(2**63) - 1, "ns": 1_763_007_525_322_000_000},
        {"digits in text": "1234567890123456789012345", "indic": "\u0661" * 25, "n": 2**70},
        {"nan": float("nan"), "big": 2**70},
    ],
    ids=["big-integers", "negative-19-digits", "digit-runs-in-text", "nan"],
)
def test_numbers_json_cannot_hold_in_64_bits_read_back_exactly(
    store_path: Path, value: dict[str, object]
) -> None:
    # orjson reads integers beyond 64 bits as floats and refuses NaN; every read path
    # (a span's lazy field, a DataFrame's batch decode, a session's turns) must not.
    @sessiontrace.trace
    def chat(payload: dict[str, object]) -> dict[str, object]:
        return payload

    with sessiontrace.user_session(session_id="numbers"):
        chat(value)
    sessiontrace.flush()

    def same(decoded: dict[str, object]) -> None:
        decoded = dict(decoded)
        if "nan" in value:
            nan = decoded.pop("nan")
            assert isinstance(nan, float) and nan != nan
        assert decoded == {k: v for k, v in value.items() if k != "nan"}
        assert all(type(decoded[k]) is type(value[k]) for k in decoded)

    trace = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert trace is not None
    same(trace.data.spans[0].outputs)
    same(trace.data.spans[0].inputs["payload"])
    frame = sessiontrace.search_traces(return_type="pandas")
    same(frame["response"][0])
    same(frame["spans"][0][0]["inputs"]["payload"])
    same(sessiontrace.session_flow("numbers")[0].response)


_UPGRADER = """
import sys, time
import sessiontrace
sessiontrace.configure(tracking_uri="sqlite:///" + sys.argv[1])
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # all processes open the file together

@sessiontrace.trace
def chat(n):
    sessiontrace.update_current_trace(tags={"n": n})
    return n

chat(sys.argv[3])
assert sessiontrace.flush(30), sessiontrace.get_stats()
stats = sessiontrace.get_stats()
assert stats["dropped"] == 0 and stats["written"] == 1, stats
assert stats["retries"] == 0 and stats["export_failures"] == 0, stats  # no failed upgrade
"""


def test_processes_opening_a_schema_1_file_together_upgrade_it_once(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "shared.db"
    store = SQLiteStore(path)
    store.connection()  # the current schema, then taken back to what schema 1 wrote
    store.close()
    with sqlite3.connect(path) as conn:
        as_schema_1(conn)
    script = tmp_path / "upgrader.py"
    script.write_text(_UPGRADER)
    start = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(start), str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [r[1] for r in conn.execute("PRAGMA table_info(traces)")]
        assert columns.count("metadata") == 1 and columns.count("tags") == 1
        assert columns.count("spans") == 1
    tags = sorted(
        t.info.tags["n"]
        for t in SQLiteStore(path).load_traces(
            [r[0] for r in sqlite3.connect(path).execute("SELECT trace_id FROM traces")]
        )
    )
    assert tags == ["0", "1", "2", "3"]


def test_a_session_turn_has_the_whole_request_and_response(store_path: Path) -> None:
    # Longer than the trace row's previews: the turn reads the root span itself.
    @sessiontrace.trace
    def chat(message: str) -> dict[str, object]:
        return {"text": "x" * 5000, "ok": True, "n": None}

    with sessiontrace.user_session(session_id="long"):
        chat("hi " * 2000)
    sessiontrace.flush()
    (turn,) = sessiontrace.session_flow("long")
    assert turn.request == {"message": "hi " * 2000}
    assert turn.response == {"text": "x" * 5000, "ok": True, "n": None}
