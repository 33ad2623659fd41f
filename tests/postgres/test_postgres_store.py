"""The PostgreSQL store against the SQLite store: same items in, same traces out."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace import SQLiteStore
from sessiontrace._records import TagChange
from sessiontrace._store._rows import TraceNotFoundError

psycopg = pytest.importorskip("psycopg")

from sessiontrace._store._postgres import (  # noqa: E402
    SCHEMA_VERSION,
    PostgresStore,
    to_psycopg,
)

Record = Callable[[], list[Any]]
USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"


def usage(inp: int, out: int, *, cache_read: int | None = None) -> dict[str, int]:
    u = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    if cache_read is not None:
        u["cache_read_input_tokens"] = cache_read
    return u


def llm_call(name: str, *, model: str = "gpt-4o-mini", tokens: dict[str, int]) -> None:
    """A finished child span carrying an LLM call's attributes, as autologgers write."""
    attributes = {USAGE: tokens, MODEL: model, "mlflow.llm.provider": "openai"}
    with sessiontrace.start_span(name, span_type="CHAT_MODEL", attributes=attributes):
        pass


@sessiontrace.trace
def chat(message: str) -> dict[str, str]:
    sessiontrace.update_current_trace(metadata={"app_version": "3"}, tags={"kind": "chat"})
    with sessiontrace.start_span("retrieve", span_type="RETRIEVER") as span:
        span.set_inputs({"q": message, "z": 1, "a": [1, 2]})
        span.add_event("hit", {"n": 2}, timestamp_ns=123)
        span.set_outputs(["doc"])
    return {"answer": message[::-1]}


@pytest.fixture
def pg(postgres_uri: str) -> Any:
    store = PostgresStore(postgres_uri)
    yield store
    store.close()


@pytest.fixture
def lite(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "compare.db")
    yield store
    store.close()


def both(items: list[Any], *stores: Any) -> None:
    for store in stores:
        store.export(items)


def dicts(store: Any, ids: list[str]) -> list[dict[str, Any]]:
    return [t.to_dict() for t in store.load_traces(ids)]


def raw(pg: PostgresStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in pg.connection().execute(sql, params)]


def test_round_trip_equals_sqlite(pg: PostgresStore, lite: SQLiteStore, record: Record) -> None:
    with sessiontrace.user_session(user_id="ü-1", session_id="s-1"):
        chat("hello")
        chat("ünïcødé ✓")
    with sessiontrace.start_span("chat"):
        llm_call("a", model="gpt-4o-mini", tokens=usage(100, 10, cache_read=40))
        llm_call("b", model="m-unknown", tokens=usage(200, 20))
    items = record()
    both(items, pg, lite)
    ids = [item.trace_id for item in items]
    assert pg.count_traces() == 3
    assert sorted(pg.list_trace_ids()) == sorted(ids)
    assert dicts(pg, ids) == dicts(lite, ids)
    assert dicts(pg, ids[::-1]) == dicts(lite, ids[::-1])  # order as asked
    assert dicts(pg, ["tr-missing", ids[0]]) == dicts(lite, [ids[0]])
    assert pg.get_trace("tr-missing") is None
    # LLM totals ride along as on SQLite
    from sessiontrace._store._rows import llm_totals

    assert [llm_totals(t.info) for t in pg.load_traces(ids)] == [
        llm_totals(t.info) for t in lite.load_traces(ids)
    ]
    # the JSON copies are stored byte for byte as SQLite stores them (key order kept)
    columns = "metadata, tags, spans, request_preview, response_preview"
    sql = f"SELECT {columns} FROM traces WHERE trace_id = ?"
    for tid in ids:
        with sqlite3.connect(lite.path) as conn:
            expected = conn.execute(sql, (tid,)).fetchone()
        assert raw(pg, sql, tid) == [expected]
    # a search's own SELECT: trace_select() + traces_from_rows, SQLite-style params
    rows = pg.connection().execute(
        f"SELECT {pg.trace_select()} FROM traces t WHERE t.user_id = :user "
        "ORDER BY t.request_time, t.trace_id",
        {"user": "ü-1"},
    )
    assert [t.to_dict() for t in pg.traces_from_rows(rows.fetchall())] == dicts(lite, ids[:2])


def test_numeric_results_are_int_or_float_never_decimal(pg: PostgresStore) -> None:
    row = (
        pg.connection()
        .execute(
            "SELECT sum(x), avg(x), sum(x)::numeric / 3, 'NaN'::numeric, -12::numeric "
            "FROM (VALUES (1::bigint), (2::bigint)) v(x)"
        )
        .fetchone()
    )
    assert row is not None
    assert [type(v) for v in row] == [int, float, float, float, int]
    assert row[0] == 3 and row[1] == 1.5 and row[4] == -12
    binary = pg.connection().raw.cursor(binary=True)
    assert binary.execute("SELECT 3::numeric, 2.50::numeric").fetchone() == (3, 2.5)
    assert [type(v) for v in binary.execute("SELECT 3::numeric, 2.5::numeric").fetchone()] == [
        int,
        float,
    ]


@pytest.mark.parametrize(
    ("sqlite", "psycopg_sql"),
    [
        ("SELECT ? , ?", "SELECT %s , %s"),
        ("WHERE a = :user AND b = :b2", "WHERE a = %(user)s AND b = %(b2)s"),
        ("x::text = :v", "x::text = %(v)s"),
        ("name LIKE 'a%' AND b = ?", "name LIKE 'a%%' AND b = %s"),
        ("'it''s :not ?' || :yes", "'it''s :not ?' || %(yes)s"),
        ('"col:x?" = ?', '"col:x?" = %s'),
        ("a % 2 -- :c ?\n= :d", "a %% 2 -- :c ?\n= %(d)s"),
        ("/* :a ? */ :b", "/* :a ? */ %(b)s"),
        ("'12:30'::time", "'12:30'::time"),
    ],
)
def test_sqlite_style_parameters_are_translated(sqlite: str, psycopg_sql: str) -> None:
    assert to_psycopg(sqlite) == psycopg_sql


def test_connection_runs_both_parameter_styles(pg: PostgresStore) -> None:
    conn = pg.connection()
    assert conn is pg.connection()  # one a thread
    assert conn.execute("SELECT ?::int + ?::int, 'a%b'", (1, 2)).fetchone() == (3, "a%b")
    assert conn.execute("SELECT :a::text || '%'", {"a": "x"}).fetchall() == [("x%",)]
    assert conn.execute("SELECT '100%'").fetchone() == ("100%",)
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(pg.connection()))
    thread.start()
    thread.join()
    assert seen[0] is not conn
    # a later thread takes the finished one's connection instead of opening another
    again: list[Any] = []
    thread = threading.Thread(target=lambda: again.append(pg.connection()))
    thread.start()
    thread.join()
    assert again[0] is seen[0]


def test_redelivery_is_idempotent_and_the_last_version_wins(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    with sessiontrace.user_session(user_id="u1", session_id="s1"):
        chat("one")
        chat("two")
    first = record()
    both(first, pg, lite)
    counts = raw(
        pg,
        "SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM spans), "
        "(SELECT count(*) FROM trace_metadata), (SELECT count(*) FROM trace_tags)",
    )
    both(first, pg, lite)  # the same batch again
    assert (
        raw(
            pg,
            "SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM spans), "
            "(SELECT count(*) FROM trace_metadata), (SELECT count(*) FROM trace_tags)",
        )
        == counts
    )
    assert counts[0][:2] == (2, 4)
    # a new version of a trace, twice in one batch with the old one: the last wins
    old = first[0]
    old_state = old.state
    spans = (old.spans[0]._replace(name="renamed"), *old.spans[1:])
    trace = old._replace(state="ERROR", tags={**old.tags, "kind": "retried"}).with_spans(spans)
    batch = [first[0], first[1], trace]
    both(batch, pg, lite)
    ids = [first[0].trace_id, first[1].trace_id]
    assert dicts(pg, ids) == dicts(lite, ids)
    loaded = pg.get_trace(ids[0])
    assert loaded is not None and loaded.info.state == "ERROR" != old_state
    assert loaded.info.tags == {"kind": "retried"}
    assert raw(pg, "SELECT value FROM trace_tags WHERE trace_id = ?", ids[0]) == [("retried",)]
    assert raw(pg, "SELECT count(*) FROM spans WHERE name = 'renamed'") == [(1,)]


def test_tags_set_and_deleted_and_unknown_traces(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    chat("x")
    items = record()
    both(items, pg, lite)
    tid = items[0].trace_id
    pg.set_tag(tid, "reviewed", "yes")
    pg.set_tag(tid, "reviewed", "no")
    pg.delete_tag(tid, "kind")
    loaded = pg.get_trace(tid)
    assert loaded is not None and loaded.info.tags == {"reviewed": "no"}
    with pytest.raises(TraceNotFoundError):
        pg.set_tag("tr-nope", "k", "v")
    with pytest.raises(TraceNotFoundError):
        pg.delete_tag("tr-nope", "k")
    assert raw(pg, "SELECT count(*) FROM trace_tags WHERE trace_id = 'tr-nope'") == [(0,)]
    # tag changes queued behind their trace travel through the writer as items (what
    # a remote store's ingest receives, and what a trace tagged after its end sends)
    ops = [TagChange(tid, "later", "1"), TagChange(tid, "reviewed", None)]
    both(ops, pg, lite)
    lite.set_tag(tid, "reviewed", "no")
    lite.delete_tag(tid, "kind")
    lite.set_tag(tid, "later", "1")
    lite.delete_tag(tid, "reviewed")
    assert dicts(pg, [tid]) == dicts(lite, [tid])
    loaded = pg.get_trace(tid)
    assert loaded is not None and loaded.info.tags == {"later": "1"}


def _late_child(started: threading.Event, release: threading.Event) -> None:
    with sessiontrace.start_span("late", span_type="CHAT_MODEL") as span:
        llm_call("early", tokens=usage(7, 3))
        started.set()
        release.wait(5)
        span.set_attributes({USAGE: usage(1000, 100, cache_read=400), MODEL: "gpt-4o-mini"})


def test_late_spans_and_llm_totals_recomputed_as_on_sqlite(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    started, release = threading.Event(), threading.Event()
    with sessiontrace.start_span("chat"):
        llm_call("first", model="gpt-4o", tokens=usage(100, 10))
        thread = threading.Thread(
            target=sessiontrace.wrap_with_context(_late_child), args=(started, release)
        )
        thread.start()
        started.wait(5)
    early = record()
    both(early, pg, lite)
    release.set()
    thread.join()
    late = record()
    assert [type(i).__name__ for i in late] == ["SpanRecord"]
    both(late, pg, lite)
    both(late, pg, lite)  # delivered twice: replaced, not duplicated
    tid = early[0].trace_id
    assert dicts(pg, [tid]) == dicts(lite, [tid])
    trace = pg.get_trace(tid)
    assert trace is not None and [s.name for s in trace.data.spans].count("late") == 1
    sql = (
        "SELECT input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls "
        "FROM traces WHERE trace_id = ?"
    )
    with sqlite3.connect(lite.path) as conn:
        expected = conn.execute(sql, (tid,)).fetchone()
        flags = conn.execute(
            "SELECT span_id, llm FROM spans WHERE trace_id = ? AND llm IS NOT NULL "
            "ORDER BY span_id",
            (tid,),
        ).fetchall()
        metadata = conn.execute(
            "SELECT key, value FROM trace_metadata WHERE trace_id = ? ORDER BY key", (tid,)
        ).fetchall()
    assert raw(pg, sql, tid) == [expected]
    assert expected[:3] == (1100, 110, 1210)
    assert (
        raw(
            pg,
            "SELECT span_id, llm FROM spans WHERE trace_id = ? AND llm IS NOT NULL "
            "ORDER BY span_id",
            tid,
        )
        == flags
    )
    md_sql = "SELECT key, value FROM trace_metadata WHERE trace_id = ? ORDER BY key"
    assert raw(pg, md_sql, tid) == metadata


def test_a_late_span_without_its_trace_row_is_kept_in_the_spans_table(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    started, release = threading.Event(), threading.Event()
    with sessiontrace.start_span("chat"):
        thread = threading.Thread(
            target=sessiontrace.wrap_with_context(_late_child), args=(started, release)
        )
        thread.start()
        started.wait(5)
    early = record()
    release.set()
    thread.join()
    late = record()
    both(late, pg, lite)  # the late span first: its trace is not written yet
    both(early, pg, lite)
    tid = early[0].trace_id
    assert dicts(pg, [tid]) == dicts(lite, [tid])


def test_nul_and_lone_surrogates_are_cleaned(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    with sessiontrace.start_span("chat") as span:
        span.set_inputs({"text": "a\x00b"})
        sessiontrace.update_current_trace(metadata={"note": "x\x00y"}, tags={"t": "half \ud83d"})
    items = record()
    pg.export(items)
    lite.export(items)
    tid = items[0].trace_id
    trace = pg.get_trace(tid)
    assert trace is not None
    assert dicts(pg, [tid]) == dicts(lite, [tid])
    # JSON text keeps a NUL as the escape "\u0000" (text PostgreSQL can hold), so the
    # trace reads back as on SQLite; the key/value row a filter reads is cleaned
    assert trace.info.trace_metadata["note"] == "x\x00y"
    assert trace.data.spans[0].inputs == {"text": "a\x00b"}
    assert raw(pg, "SELECT value FROM trace_metadata WHERE key = 'note'") == [("x\ufffdy",)]
    assert raw(pg, "SELECT value FROM trace_tags WHERE key = 't'") == [("half ?",)]


def test_extreme_values_and_non_ascii_ids(
    pg: PostgresStore, lite: SQLiteStore, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiontrace import _tracing

    ids = iter(["tr-ünï-ĉødé-✓", "tr-😀"])
    monkeypatch.setitem(_tracing.ids, "trace", lambda: next(ids))
    monkeypatch.setitem(_tracing.ids, "span", lambda: "spän-ï")
    monkeypatch.setitem(_tracing.clock, "ns", lambda: 2**63 - 1)
    with sessiontrace.user_session(user_id="ユーザー", session_id="séance"):
        chat("x")
    with sessiontrace.start_span("chat"):
        pass
    items = record()
    both(items, pg, lite)
    assert dicts(pg, ["tr-😀", "tr-ünï-ĉødé-✓"]) == dicts(lite, ["tr-😀", "tr-ünï-ĉødé-✓"])
    assert raw(pg, "SELECT max(start_ns) FROM spans") == [(2**63 - 1,)]


def test_ids_order_like_sqlite_in_a_database_with_a_linguistic_collation(
    postgres_uri: str, lite: SQLiteStore, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from sessiontrace import _tracing

    names = ["Session-a", "_x", "session-A", "session-b", "é", "Z"]
    ids = iter(f"tr-{n}" for n in names)
    monkeypatch.setitem(_tracing.ids, "trace", lambda: next(ids))
    for name in names:
        with sessiontrace.user_session(user_id=name, session_id=name):
            chat(name)
    items = record()
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS sessiontrace_icu")
        conn.execute(
            "CREATE DATABASE sessiontrace_icu TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        )
    params = conninfo_to_dict(postgres_uri)
    params["dbname"] = "sessiontrace_icu"
    store = PostgresStore(make_conninfo(**params))
    try:
        # the database's own order is linguistic ...
        assert raw(store, "SELECT x FROM unnest(?::text[]) x ORDER BY x", names) != sorted(
            (n,) for n in names
        )
        store.export(items)
        lite.export(items)
        with sqlite3.connect(lite.path) as conn:
            for column in ("trace_id", "user_id", "session_id"):
                sql = f"SELECT {column} FROM traces ORDER BY {column}"
                assert raw(store, sql) == conn.execute(sql).fetchall()
            sql = "SELECT trace_id FROM traces WHERE user_id > 'Z' ORDER BY trace_id"
            assert raw(store, sql) == conn.execute(sql).fetchall()
    finally:
        store.close()
        with psycopg.connect(postgres_uri, autocommit=True) as conn:
            conn.execute("DROP DATABASE sessiontrace_icu")


def test_a_database_from_a_newer_version_is_refused_clearly(postgres_uri: str) -> None:
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE sessiontrace_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO sessiontrace_schema VALUES (999)")
    store = PostgresStore(postgres_uri)
    try:
        with pytest.raises(RuntimeError, match=r"newer sessiontrace \(schema 999\); upgrade"):
            store.get_trace("tr-x")
    finally:
        store.close()


def test_schema_version_is_recorded(pg: PostgresStore) -> None:
    assert pg.count_traces() == 0
    assert raw(pg, "SELECT version FROM sessiontrace_schema") == [(SCHEMA_VERSION,)]


def test_repr_never_shows_the_password() -> None:
    for uri in (
        "postgresql://app:s3cr%40t@db.internal:5432/traces",
        "postgresql://app@db.internal/traces?password=s3cret&sslmode=require",
        "host=db.internal user=app password='s3 cret' dbname=traces",
    ):
        text = repr(PostgresStore(uri))
        assert "s3" not in text and "***" in text, text
    assert "app@db" in repr(PostgresStore("postgresql://app@db/traces"))
    with pytest.raises(ValueError, match="not a PostgreSQL URI") as raised:
        PostgresStore("host=db password=s3cret bogus")
    assert "s3cret" not in str(raised.value)


def test_json_text_is_kept_byte_for_byte(
    pg: PostgresStore, lite: SQLiteStore, record: Record
) -> None:
    with sessiontrace.start_span("chat") as span:
        span.set_inputs({"z": 1, "a": {"y": 2, "b": [3, 1.50]}})
    items = record()
    # JSON as another producer may have encoded it: key order, a duplicate key,
    # spacing and number spellings that jsonb would rewrite
    trace = items[0]
    root = trace.root._replace(inputs_json='{"b": 1, "a":2, "a" :3, "n": 1.50e0}')
    items[0] = trace.with_spans(tuple(root if s is trace.root else s for s in trace.spans))
    both(items, pg, lite)
    tid = items[0].trace_id
    sql = "SELECT spans FROM traces WHERE trace_id = ?"
    with sqlite3.connect(lite.path) as conn:
        expected = conn.execute(sql, (tid,)).fetchone()
    assert raw(pg, sql, tid) == [expected]
    assert '{"b": 1, "a":2, "a" :3, "n": 1.50e0}' in expected[0]
    assert dicts(pg, [tid]) == dicts(lite, [tid])


def test_without_prepared_statements_as_behind_pgbouncer(postgres_uri: str, record: Record) -> None:
    store = PostgresStore(postgres_uri, prepare_threshold=None)
    try:
        for i in range(8):  # past psycopg's default threshold of 5
            with sessiontrace.start_span(f"chat {i}"):
                pass
            store.export(record())
            assert store.count_traces() == i + 1
        prepared = store.connection().execute("SELECT count(*) FROM pg_prepared_statements")
        assert prepared.fetchone() == (0,)
        assert store._writer is not None
        assert store._writer.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (
            0,
        )
    finally:
        store.close()
