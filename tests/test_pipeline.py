"""The writer pipeline: nothing lost, nothing raised into the app, drops counted."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace._pipeline import Pipeline, RetryableExportError


class RecordingSink:
    """A sink whose behaviour the test scripts: fail N times, be slow, reject items."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.fail_retryable = 0
        self.delay = 0.0
        self.reject: set[Any] = set()
        self.closed = False

    def export(self, items: Sequence[Any]) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_retryable:
            self.fail_retryable -= 1
            raise RetryableExportError("database is locked")
        bad = [i for i in items if i in self.reject]
        if bad:
            raise ValueError(f"cannot store {bad}")
        self.batches.append(list(items))

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def written(self) -> list[Any]:
        return [i for batch in self.batches for i in batch]


def make(sink: RecordingSink, **kwargs: Any) -> Pipeline:
    options: dict[str, Any] = {
        "max_queue_size": 1000,
        "batch_size": 100,
        "flush_interval": 0.01,
        "max_block_seconds": 5.0,
    }
    options.update(kwargs)
    return Pipeline(sink, **options)


def test_items_arrive_in_order_and_flush_covers_other_threads() -> None:
    sink = RecordingSink()
    pipeline = make(sink)
    threads = [
        threading.Thread(target=lambda k=k: [pipeline.submit((k, i)) for i in range(500)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipeline.flush(5)
    assert sorted(sink.written) == sorted((k, i) for k in range(4) for i in range(500))
    for k in range(4):  # per producer, FIFO
        assert [i for kk, i in sink.written if kk == k] == list(range(500))
    assert pipeline.stats()["written"] == 2000
    assert pipeline.close(5)
    assert sink.closed


def test_retryable_failures_hold_the_batch_until_the_store_recovers() -> None:
    sink = RecordingSink()
    sink.fail_retryable = 3
    pipeline = make(sink)
    for i in range(10):
        pipeline.submit(i)
    assert pipeline.flush(10)
    assert sink.written == list(range(10))
    stats = pipeline.stats()
    assert stats["retries"] == 3
    assert stats["dropped"] == 0
    assert stats["store_healthy"] is True


def test_a_bad_item_is_isolated_and_counted() -> None:
    sink = RecordingSink()
    sink.reject = {"poison"}
    pipeline = make(sink)
    for item in ["a", "poison", "b"]:
        pipeline.submit(item)
    assert pipeline.flush(5)
    assert sink.written == ["a", "b"]
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"export_error": 1}
    assert stats["export_failures"] >= 1


def test_backpressure_waits_for_room_instead_of_dropping() -> None:
    sink = RecordingSink()
    sink.delay = 0.02  # a slow but healthy store
    pipeline = make(sink, max_queue_size=10, batch_size=5)
    for i in range(200):
        pipeline.submit(i)
    assert pipeline.flush(10)
    assert sink.written == list(range(200))
    assert pipeline.stats()["dropped"] == 0


def test_a_sick_store_never_blocks_callers_and_drops_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink()
    sink.fail_retryable = 10**9  # down for good
    pipeline = make(sink, max_queue_size=20, batch_size=5, max_block_seconds=30)
    pipeline.submit("first")
    deadline = time.monotonic() + 5
    while pipeline.stats()["store_healthy"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pipeline.stats()["store_healthy"]
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="sessiontrace"):
        for i in range(100):
            pipeline.submit(i)
    assert time.monotonic() - started < 1.0  # nowhere near max_block_seconds
    stats = pipeline.stats()
    assert stats["dropped_by_reason"]["queue_full"] > 0
    assert stats["dropped"] + stats["queued"] + 1 >= 100  # every item accounted for
    assert any("dropped" in r.getMessage() for r in caplog.records)
    sink.fail_retryable = 0  # the store comes back: what was held is written
    assert pipeline.flush(10)
    assert "first" in sink.written
    assert len(sink.written) + pipeline.stats()["dropped"] == 101


# -- against the real SQLite store -------------------------------------------------------


@sessiontrace.trace
def app(i: int) -> int:
    return i


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM traces").fetchone()[0])


def test_a_locked_database_delays_writes_but_loses_nothing(store_path: Path) -> None:
    app(-1)
    assert sessiontrace.flush(5)  # schema exists
    blocker = sqlite3.connect(store_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        for i in range(50):
            assert app(i) == i  # the app is not held up by the lock
        assert time.monotonic() - started < 1.0
        assert not sessiontrace.flush(0.3)  # cannot finish while locked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sessiontrace.flush(20)
    assert count_rows(store_path) == 51
    assert sessiontrace.get_stats()["dropped"] == 0


def test_a_path_that_cannot_be_a_database_never_raises_into_the_app(tmp_path: Path) -> None:
    # Works as root too: a directory where the file should be cannot be opened.
    (tmp_path / "dir.db").mkdir()
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{tmp_path / 'dir.db'}",
        flush_interval=0.01,
        max_queue_size=5,
        shutdown_timeout=0.5,
    )
    for i in range(20):
        assert app(i) == i
    assert not sessiontrace.flush(0.5)
    stats = sessiontrace.get_stats()
    assert stats["retries"] >= 1
    assert stats["store_healthy"] is False
    # Every trace is accounted for: held for a retry, or dropped and counted.
    assert stats["dropped_by_reason"]["queue_full"] + stats["queued"] == 20


def run_script(code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_exit_hook_drains_the_queue_without_an_explicit_flush(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    run_script(
        """
        import sessiontrace
        sessiontrace.configure(flush_interval=60)  # the writer would not wake on its own
        @sessiontrace.trace
        def app(i):
            return i
        for i in range(3000):
            app(i)
        """,
        tmp_path,
        {"SESSIONTRACE_TRACKING_URI": f"sqlite:///{db}"},
    )
    assert count_rows(db) == 3000


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    code = """
        import sys, sessiontrace
        @sessiontrace.trace
        def app(i):
            return i
        with sessiontrace.user_session(user_id=sys.argv[1]):
            for i in range(2000):
                app(i)
        sessiontrace.flush()
        print(sessiontrace.get_stats()["dropped"])
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), f"worker-{k}"],
            cwd=tmp_path,
            env={**os.environ, "SESSIONTRACE_TRACKING_URI": f"sqlite:///{db}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "0"
    with sqlite3.connect(db) as conn:
        counts = dict(conn.execute("SELECT user_id, count(*) FROM traces GROUP BY user_id"))
    assert counts == {f"worker-{k}": 2000 for k in range(4)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_writes_its_own_traces_once(tmp_path: Path) -> None:
    db = tmp_path / "fork.db"
    out = run_script(
        """
        import os, sessiontrace
        sessiontrace.configure(flush_interval=60)
        @sessiontrace.trace
        def app(who):
            return who
        app("parent-before-fork")   # queued, not yet written, when we fork
        pid = os.fork()
        if pid == 0:
            app("child")
            sessiontrace.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        app("parent-after-fork")
        """,
        tmp_path,
        {"SESSIONTRACE_TRACKING_URI": f"sqlite:///{db}"},
    )
    assert out == ""
    with sqlite3.connect(db) as conn:
        names = sorted(r[0] for r in conn.execute("SELECT response_preview FROM traces").fetchall())
    assert names == ['"child"', '"parent-after-fork"', '"parent-before-fork"']


def test_disk_full_holds_traces_until_space_returns(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiontrace._store import SQLiteStore

    app(-1)
    assert sessiontrace.flush(5)
    pages = sqlite3.connect(store_path).execute("PRAGMA page_count").fetchone()[0]
    cap = {"pages": pages}  # no room for even one more page: SQLITE_FULL on write
    connect = SQLiteStore._connect

    def capped_connect(self: SQLiteStore) -> sqlite3.Connection:
        conn = connect(self)
        conn.execute(f"PRAGMA max_page_count = {cap['pages']}")
        return conn

    monkeypatch.setattr(SQLiteStore, "_connect", capped_connect)
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}", flush_interval=0.01)
    payload = "x" * 20_000
    for i in range(30):
        assert app(i) == i
        with sessiontrace.start_span("big") as span:
            span.set_inputs(payload)
    assert not sessiontrace.flush(0.5)
    stats = sessiontrace.get_stats()
    assert stats["retries"] >= 1 and stats["written"] == 0
    cap["pages"] = 1_000_000  # space comes back; the writer reconnects on retry
    assert sessiontrace.flush(20)
    assert count_rows(store_path) == 61
    assert sessiontrace.get_stats()["dropped"] == 0
