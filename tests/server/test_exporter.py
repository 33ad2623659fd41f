"""The HTTP exporter against a real server on 127.0.0.1, including the server restarting."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

import sessiontrace
from sessiontrace._config import parse_tracking_uri
from sessiontrace._export import ExportRejectedError, HttpExporter
from sessiontrace._store import open_store

from .conftest import TOKEN, ServerProcess, free_port

# The SDK sends over HTTP; the server writes to the test's store, on either backend.
pytestmark = pytest.mark.backends


@sessiontrace.trace
def chat(message: str) -> str:
    return message.upper()


def _send(n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        with sessiontrace.user_session(user_id=f"user-{i % 3}", session_id=f"{prefix}-{i % 5}"):
            chat(f"{prefix} {i}")
        tid = sessiontrace.get_last_active_trace_id()
        assert tid is not None
        ids.append(tid)
    return ids


def _stored_ids(db: str | Path) -> set[str]:
    store = open_store(db)
    try:
        return set(store.list_trace_ids(limit=1_000_000))
    finally:
        store.close()


def test_http_tracking_uri_parses() -> None:
    loc = parse_tracking_uri("https://tracehost:5000/")
    assert (loc.scheme, loc.path) == ("https", "https://tracehost:5000")
    with pytest.raises(ValueError, match="credentials"):
        parse_tracking_uri("http://user:pw@tracehost:5000")
    with pytest.raises(ValueError):
        parse_tracking_uri("http://")


def test_reading_needs_a_sqlite_uri() -> None:
    sessiontrace.configure(tracking_uri="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="sqlite"):
        sessiontrace.get_trace("tr-x")


def test_traces_reach_the_server(server: ServerProcess) -> None:
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    ids = _send(20, "s")
    assert sessiontrace.flush(10)
    assert _stored_ids(server.db) == set(ids)
    stats = sessiontrace.get_stats()
    assert stats["written"] == 20 and stats["dropped"] == 0
    r = httpx.get(f"{server.url}/api/trace", params={"id": ids[0]}, timeout=5)
    assert r.status_code == 200
    spans = r.json()["data"]["spans"]
    assert spans[0]["inputs"] == {"message": "s 0"} and spans[0]["outputs"] == "S 0"
    meta = r.json()["info"]["trace_metadata"]
    assert meta["mlflow.trace.user"] == "user-0" and meta["mlflow.trace.session"] == "s-0"


@pytest.mark.slow
def test_server_going_away_and_coming_back_loses_nothing(db: str) -> None:
    srv = ServerProcess(db, free_port())
    srv.start()
    try:
        sessiontrace.configure(tracking_uri=srv.url, flush_interval=0.01, batch_size=50)
        before = _send(30, "a")
        assert sessiontrace.flush(10)
        srv.stop()

        started = time.perf_counter()
        during = _send(200, "b")
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, f"the app was held up for {elapsed:.2f}s while the server was down"
        assert not sessiontrace.flush(0.5)  # cannot be delivered yet...
        stats = sessiontrace.get_stats()
        assert stats["store_healthy"] is False and stats["retries"] > 0
        assert stats["dropped"] == 0  # ...but nothing is thrown away

        srv.start()
        assert sessiontrace.flush(15)
        after = _send(10, "c")
        assert sessiontrace.flush(10)
        assert _stored_ids(srv.db) == set(before + during + after)
        stats = sessiontrace.get_stats()
        assert stats["dropped"] == 0 and stats["store_healthy"] is True
        assert stats["written"] == 240
    finally:
        srv.stop()


def test_beyond_the_bound_traces_are_dropped_and_counted(db: str) -> None:
    port = free_port()  # nothing listens here
    sessiontrace.configure(
        tracking_uri=f"http://127.0.0.1:{port}",
        flush_interval=0.01,
        max_queue_size=20,
        batch_size=10,
        max_block_seconds=0.2,
    )
    _send(5, "warm")  # the writer takes a batch and starts retrying
    time.sleep(0.3)
    started = time.perf_counter()
    _send(100, "x")
    assert time.perf_counter() - started < 2.0
    stats = sessiontrace.get_stats()
    assert stats["dropped_by_reason"].get("queue_full", 0) >= 100 - 20
    assert stats["queued"] <= 20 + 5  # the bound, plus the batch being retried
    srv = ServerProcess(db, port)
    srv.start()
    try:
        assert sessiontrace.flush(15)
        stats = sessiontrace.get_stats()
        assert stats["written"] + stats["dropped"] == 105
        assert len(_stored_ids(srv.db)) == stats["written"]
    finally:
        srv.stop()


def test_token_server(db: str) -> None:
    srv = ServerProcess(db, free_port(), token=TOKEN)
    srv.start()
    try:
        sessiontrace.configure(tracking_uri=srv.url, tracking_token=TOKEN, flush_interval=0.01)
        ids = _send(5, "t")
        assert sessiontrace.flush(10)
        assert _stored_ids(srv.db) == set(ids)
        assert "test-token" not in repr(sessiontrace._runtime.settings())
    finally:
        srv.stop()


def test_rejected_batches_raise_a_non_retryable_error(server: ServerProcess) -> None:
    exporter = HttpExporter(server.url)
    try:
        with pytest.raises(ExportRejectedError, match="422"):
            exporter._post(b'{"version": 1, "items": [{"kind": "trace"}]}')
    finally:
        exporter.close()


def test_big_batches_are_split_under_the_request_limit(server: ServerProcess) -> None:
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    from sessiontrace import _runtime

    sink = _runtime._pipeline().sink
    assert isinstance(sink, HttpExporter)
    sink._max_bytes = 2000  # a few traces a request
    posts = []
    real_post = sink._post

    def counting_post(body: bytes) -> None:
        posts.append(len(body))
        real_post(body)

    sink._post = counting_post  # type: ignore[method-assign]
    ids = _send(40, "big")
    assert sessiontrace.flush(10)
    assert _stored_ids(server.db) == set(ids)
    assert len(posts) > 2 and max(posts) < 4000


def test_tag_edits_on_logged_traces_reach_the_server(server: ServerProcess) -> None:
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    (trace_id,) = _send(1, "tags")
    sessiontrace.set_trace_tag(trace_id, "reviewed", "yes")
    sessiontrace.set_trace_tag(trace_id, "gone", "soon")
    sessiontrace.delete_trace_tag(trace_id, "gone")
    assert sessiontrace.flush(10)
    r = httpx.get(f"{server.url}/api/trace", params={"id": trace_id}, timeout=5)
    assert r.json()["info"]["tags"] == {"reviewed": "yes"}


def test_llm_calls_are_priced_in_the_app_before_they_are_sent(server: ServerProcess) -> None:
    # The app's own prices (an override the server does not have) travel with the span;
    # a model neither side knows arrives unpriced, and the server finds no price either.
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    sessiontrace.set_model_price("in-house-*", input_per_mtok=2, output_per_mtok=4)
    with sessiontrace.start_span("chat"):
        for model in ("in-house-7b", "nobody-knows"):
            with sessiontrace.start_span(model, span_type="CHAT_MODEL") as span:
                span.set_attributes(
                    {
                        "mlflow.chat.tokenUsage": {"input_tokens": 10**6, "output_tokens": 10**6},
                        "mlflow.llm.model": model,
                    }
                )
    tid = sessiontrace.get_last_active_trace_id()
    assert sessiontrace.flush(10)
    r = httpx.get(f"{server.url}/api/trace", params={"id": tid}, timeout=5)
    spans = {s["name"]: s["attributes"] for s in r.json()["data"]["spans"]}
    assert spans["in-house-7b"]["mlflow.llm.cost"]["total_cost"] == 6.0
    assert spans["in-house-7b"]["sessiontrace.llm.price_source"] == "override:in-house-*"
    assert spans["nobody-knows"]["sessiontrace.llm.unpriced"] is True
    rows = httpx.get(f"{server.url}/api/traces", timeout=5).json()["traces"]
    assert [(t["cost"], t["llm_calls"], t["unpriced_calls"]) for t in rows] == [(6.0, 2, 1)]
