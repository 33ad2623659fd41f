"""Many writer processes, forks, migrations racing, and the server going away."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

import sessiontrace
from sessiontrace._pipeline import Pipeline, RetryableExportError

from .conftest import Server

psycopg = pytest.importorskip("psycopg")

from sessiontrace._store import _postgres  # noqa: E402
from sessiontrace._store._postgres import PostgresStore  # noqa: E402

Record = Callable[[], list[Any]]

# A writer process: N traces with ids interleaved with the other writers', written in
# batches of 100, each batch delivered twice (as an ingest server's resend would).
WRITER = textwrap.dedent(
    """
    import sys
    import sessiontrace
    from sessiontrace import _runtime, _tracing
    from sessiontrace._store._postgres import PostgresStore

    uri, k, n, writers, copy_first = sys.argv[1:6]
    k, n, writers = int(k), int(n), int(writers)
    items = []
    _runtime.submit = items.append
    seq = iter(range(n))
    _tracing.ids["trace"] = lambda: f"tr-{next(seq) * writers + k:032x}"
    span_seq = iter(range(10**9))  # the same span ids in every process (a resend's)
    _tracing.ids["span"] = lambda: f"{next(span_seq):016x}"

    @sessiontrace.trace
    def chat(message):
        sessiontrace.update_current_trace(metadata={"writer": str(k)}, tags={"kind": "chat"})
        with sessiontrace.start_span("llm", span_type="LLM") as span:
            span.set_inputs({"q": message})
        return message

    for i in range(n):
        with sessiontrace.user_session(user_id=f"u{i % 7}", session_id=f"s{i % 13}"):
            chat(str(i))
    store = PostgresStore(uri, copy_first=copy_first == "1")
    for start in range(0, n, 100):
        store.export(items[start : start + 100])
        store.export(items[max(0, start - 50) : start + 50])
    store.close()
    """
)


def counts(uri: str) -> tuple[int, ...]:
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM traces), (SELECT count(DISTINCT trace_id) FROM traces),"
            " (SELECT count(*) FROM spans), (SELECT count(*) FROM trace_metadata),"
            " (SELECT count(*) FROM trace_tags)"
        ).fetchone()
    return tuple(row)


@pytest.mark.parametrize("copy_first", [True, False])
def test_four_writer_processes_lose_and_duplicate_nothing(
    postgres_uri: str, copy_first: bool
) -> None:
    n = 1000
    PostgresStore(postgres_uri).close()  # not racing the schema here (tested below)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_uri, str(k), str(n), "4", str(int(copy_first))],
            stderr=subprocess.PIPE,
        )
        for k in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with psycopg.connect(postgres_uri) as conn:
        (keys,) = conn.execute(
            "SELECT count(*) FROM trace_metadata WHERE trace_id = (SELECT min(trace_id) "
            "FROM traces)"
        ).fetchone()
    # each trace: 2 spans, its metadata keys (writer, source...), 1 tag; none twice
    assert counts(postgres_uri) == (4 * n, 4 * n, 8 * n, keys * 4 * n, 4 * n)
    assert keys >= 2


def test_writers_sending_the_same_traces_at_once_store_each_once(postgres_uri: str) -> None:
    # Three ingest servers receiving the same resend: the same ids, in the same
    # batches, at the same time (k = 0 and one "writer" make identical ids).
    n = 1000
    PostgresStore(postgres_uri).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_uri, "0", str(n), "1", "1"],
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert counts(postgres_uri)[:3] == (n, n, 2 * n)


def test_concurrent_first_starts_create_the_schema_once(postgres_uri: str) -> None:
    start_at = time.time() + 1.5
    script = textwrap.dedent(
        """
        import sys, time
        from sessiontrace._store._postgres import PostgresStore
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        store = PostgresStore(sys.argv[1])
        print(store.count_traces())
        store.close()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_uri, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert out.strip() == b"0"
    with psycopg.connect(postgres_uri) as conn:
        assert conn.execute("SELECT version FROM sessiontrace_schema").fetchall() == [
            (_postgres.SCHEMA_VERSION,)
        ]


def test_a_forked_child_opens_its_own_connections(postgres_uri: str) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        import sessiontrace
        from sessiontrace import _runtime
        from sessiontrace._store._postgres import PostgresStore

        items = []
        _runtime.submit = items.append
        for name in ("parent", "child"):
            with sessiontrace.start_span(name):
                pass
        store = PostgresStore(sys.argv[1])
        store.export(items[:1])
        pid_sql = "SELECT pg_backend_pid()"
        parent_reader = store.connection().execute(pid_sql).fetchone()[0]
        parent_writer = store._writer.info.backend_pid
        child = os.fork()
        if child == 0:
            code = 1
            try:
                store.export(items[1:])  # no after_fork() call: the store notices
                reader = store.connection().execute(pid_sql).fetchone()[0]
                writer = store._writer.info.backend_pid
                if {reader, writer}.isdisjoint({parent_reader, parent_writer}):
                    code = 0
                store.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's connections were left alone
        assert store.connection().execute(pid_sql).fetchone()[0] == parent_reader
        assert store.count_traces() == 2
        store.export(items[:1])
        assert store._writer.info.backend_pid == parent_writer
        store.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, postgres_uri],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip() == b"ok"
    assert b"Warning" not in done.stderr


def test_a_writer_killed_mid_batch_leaves_nothing_and_the_retry_succeeds(
    postgres_uri: str, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        with sessiontrace.start_span(f"chat {i}"):
            pass
    items = record()
    store = PostgresStore(postgres_uri)
    store.export(items[:1])
    killed: list[Any] = []
    real_copy = _postgres._copy

    def copy_then_kill(conn: Any, table: Any, rows: Any, target: Any) -> None:
        real_copy(conn, table, rows, target)
        if table.name == "traces" and not killed:  # the traces are in, the spans not yet
            with psycopg.connect(postgres_uri, autocommit=True) as admin:
                killed.append(
                    admin.execute(
                        "SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,)
                    ).fetchone()
                )

    monkeypatch.setattr(_postgres, "_copy", copy_then_kill)
    try:
        with pytest.raises(RetryableExportError):
            store.export(items[1:])
        assert killed == [(True,)]
        assert store.count_traces() == 1  # no part of the batch is visible
        store.export(items[1:])
        assert store.count_traces() == 20
        assert counts(postgres_uri)[2] == 20
    finally:
        store.close()


def test_server_stopped_mid_run_nothing_lost_through_the_pipeline(
    own_server: Server, record: Record
) -> None:
    for i in range(300):
        with (
            sessiontrace.user_session(user_id="u", session_id=f"s{i % 5}"),
            sessiontrace.start_span(f"chat {i}"),
        ):
            pass
    items = record()
    store = PostgresStore(own_server.uri)
    pipeline = Pipeline(
        store, max_queue_size=10_000, batch_size=50, flush_interval=0.01, max_block_seconds=0
    )
    probe = PostgresStore(own_server.uri)
    try:
        for item in items[:100]:
            pipeline.submit(item)
        assert pipeline.flush(30)
        assert store.count_traces() == 100  # a reader connection, idle from here on
        own_server.stop()
        with pytest.raises(RetryableExportError):
            probe.export(items[100:101])
        for item in items[100:]:
            pipeline.submit(item)
        time.sleep(0.5)  # the writer retries against the stopped server meanwhile
        stats = pipeline.stats()
        assert stats["retries"] > 0 and not stats["store_healthy"]
        own_server.start()
        assert pipeline.flush(60)
        stats = pipeline.stats()
        assert stats["written"] == 300 and stats["dropped"] == 0
        assert stats["export_failures"] == 0 and stats["store_healthy"]
        # the reader connection broke with the server: replaced, and the statement or
        # transaction sent once more
        store.set_tag(items[0].trace_id, "after", "restart")
        assert store.count_traces() == 300
    finally:
        pipeline.close(10)
        probe.close()


def test_sessiontrace_imports_without_psycopg() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as if not installed
        import sessiontrace, sessiontrace.testing, sessiontrace._store
        with sessiontrace.start_span("x"):
            pass
        sessiontrace.flush()
        assert "sessiontrace._store._postgres" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, cwd="/tmp"
    )
    assert done.returncode == 0, done.stderr.decode()


def test_a_read_only_database_keeps_the_batch_for_later(postgres_uri: str, record: Record) -> None:
    # What a writer sees when a failover left its host name on a standby.
    with sessiontrace.start_span("chat"):
        pass
    items = record()
    store = PostgresStore(postgres_uri)
    store.count_traces()
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        dbname = admin.info.dbname
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        try:
            with pytest.raises(RetryableExportError):
                store.export(items)
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
    try:
        store.export(items)
        assert store.count_traces() == 1
    finally:
        store.close()
