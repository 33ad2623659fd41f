"""Ingest: two-span traces/s from 1, 2 and 4 app processes into SQLite and PostgreSQL,
and the app CPU the write path costs per trace.

    .venv/bin/python bench/ingest.py --pg postgresql://user@/db?host=/tmp/pg   # ~6 min
    .venv/bin/python bench/ingest.py                  # PostgreSQL from scripts/pg_throwaway.py
    .venv/bin/python bench/ingest.py --backend sqlite --quick

Two parts, both with the backends (and writer counts) interleaved in random order in
each round, medians over rounds:

**SDK mode** (the app's view). Each writer is an app process: it configures the SDK
(``configure(tracking_uri=...)``), then, on the parent's signal (all processes at
once), traces its share of the traces back to back (an outer traced function that
sets user, session and two more metadata keys, calling a traced inner one: two
spans), then ``flush()``. Sessions are shared by all processes (a load balancer
sends a session's turns to any instance) and trace ids are time-ordered, so the
processes' rows interleave in the indexes. Reported per backend and writer count:

- traces/s in all: every process's traces over the time from the first trace's start
  to the last ``flush()`` returning (its batch committed, so visible to readers);
- the **writer thread's CPU per trace**: the SDK's one writer thread does all of the
  write path (batching, the pricing step, building rows, the driver, and for SQLite
  the database engine itself). Its CPU clock is read with
  ``time.pthread_getcpuclockid(thread.ident)`` (nanoseconds, this thread only, GIL
  waits excluded). ``export`` alone (``time.thread_time`` around the sink's
  ``export``, on the writer thread) is shown beside it; the difference is the
  pipeline's own loop;
- the app thread's CPU per trace (the tracing itself) and the process's, for scale;
- nothing lost, nothing doubled: rows counted in the database afterwards (traces =
  distinct trace ids = writers x traces each; spans twice that; one ``app_version``
  metadata row a trace), and each process's ``get_stats()`` (written, dropped).

**Direct mode** (the store's view, what research section 2 measured): traces built
once through the SDK (captured before the pipeline), then ``store.export(batch)`` in
batches of 1000 on one thread, SQLite's store and the PostgreSQL store on the same
items; traces/s and the exporting thread's CPU per trace. Then one batch is exported
again and the counts must not move (idempotent re-delivery).

PostgreSQL: ``--pg URI`` (or ``SESSIONTRACE_BENCH_PG_URI``) names a server; this script
works in a database of its own on it (``<db>_ingest``, created if missing, emptied
before each run by ``TRUNCATE`` then ``CHECKPOINT``). Without one it starts a throwaway
server with ``scripts/pg_throwaway.py`` with durable settings (fsync, synchronous_commit
and full_page_writes on, shared_buffers=1GB, max_wal_size=4GB). SQLite: a new file in
a temporary directory for every run (the store's own settings: WAL, synchronous=NORMAL).

It prints results and the targets' status; it asserts nothing about timings and exits
1 only when rows were lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

USER = "mlflow.trace.user"
SESSION = "mlflow.trace.session"
N_USERS = 1_000
TURNS = 8  # consecutive traces of one session, spread over the processes
MESSAGE = "What is the difference between ML and AI?"
BACKENDS = ("sqlite", "postgresql")
TABLES = ("traces", "spans", "trace_metadata", "trace_tags")
# Durable, production-like server settings (the tests' throwaway turns durability off).
PG_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB", "max_connections": "200"}
PG_TARGET_TPS = 25_000
PG_TARGET_CPU_US = 10.0


# -- the app (runs in each writer process) --------------------------------------------


def make_app(st: Any) -> Any:
    @st.trace
    def inner(message: str) -> str:
        return "echo: " + message

    @st.trace
    def outer(user_id: str, session_id: str, message: str) -> str:
        st.update_current_trace(
            metadata={USER: user_id, SESSION: session_id, "app_version": "1.0.0", "turn": "n"}
        )
        return inner(message)

    return outer


def configure_sdk(backend: str, target: str) -> None:
    import sessiontrace

    if backend == "sqlite":
        sessiontrace.configure(tracking_uri=f"sqlite:///{target}")
    else:
        try:
            sessiontrace.configure(tracking_uri=target)
        except ValueError:  # TEMPORARY until the merge: hand the store in
            from sessiontrace import _runtime
            from sessiontrace._store._postgres import PostgresStore

            sessiontrace.configure(tracking_uri="sqlite:///unused.db")
            _runtime._state.store = PostgresStore(target)  # type: ignore[assignment]


def writer_thread() -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.name == "sessiontrace-writer":
            return thread
    return None


def thread_cpu_ns(thread: threading.Thread | None) -> int:
    if thread is None or thread.ident is None:
        return 0
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def worker(backend: str, target: str, index: int, processes: int, n: int) -> None:
    """One app process: configure, wait for "go", trace n traces, flush, report."""
    import sessiontrace
    from sessiontrace import _runtime

    configure_sdk(backend, target)
    outer = make_app(sessiontrace)
    pipeline = _runtime._pipeline()  # created now so that its sink's export can be timed
    sink = pipeline.sink
    export = sink.export
    export_cpu = [0]

    def timed_export(items: Any) -> None:
        t0 = time.thread_time_ns()
        try:
            export(items)
        finally:
            export_cpu[0] += time.thread_time_ns() - t0

    sink.export = timed_export  # type: ignore[method-assign]
    # Turn k of session s is traced by process (s * TURNS + k) % processes: every
    # process writes into every session, as behind a load balancer.
    calls = []
    for j in range(n):
        g = j * processes + index  # this process's share of one global sequence
        session = g // TURNS
        calls.append((f"user-{session % N_USERS:04d}", f"session-{session:07d}"))
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "go"
    process_cpu = time.process_time_ns()
    app_cpu = time.thread_time_ns()
    start = time.monotonic_ns()
    for user, session in calls:
        outer(user, session, MESSAGE)
    produced = time.monotonic_ns()
    app_cpu = time.thread_time_ns() - app_cpu
    sessiontrace.flush()
    end = time.monotonic_ns()
    writer = writer_thread()
    reply = {
        "start": start,
        "produced": produced,
        "end": end,
        "app_cpu_ns": app_cpu,
        "writer_cpu_ns": thread_cpu_ns(writer),
        "export_cpu_ns": export_cpu[0],
        "process_cpu_ns": time.process_time_ns() - process_cpu,
        "stats": {k: v for k, v in sessiontrace.get_stats().items() if k != "llm_pricing"},
    }
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()  # stay alive (writer thread included) until the parent is done


# -- PostgreSQL ------------------------------------------------------------------------


def with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + name))


def ingest_database(uri: str) -> str:
    """The URI of ``<db>_ingest`` on the server of ``uri`` (created when missing)."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        db = conn.info.dbname
        name = f"{db}_ingest"
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(uri, name)


def pg_server_info(uri: str) -> str:
    import psycopg

    with psycopg.connect(uri) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = [
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in (
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "max_wal_size",
                "wal_level",
            )
        ]
    return f"PostgreSQL {version} ({', '.join(settings)})"


@contextlib.contextmanager
def postgres(uri: str | None) -> Iterator[str]:
    """``uri``, or a throwaway server with durable settings for the block."""
    if uri:
        yield uri
        return
    script = ROOT / "scripts" / "pg_throwaway.py"
    if not script.exists():
        raise SystemExit("no PostgreSQL: pass --pg URI (scripts/pg_throwaway.py is not here)")
    spec = importlib.util.spec_from_file_location("pg_throwaway", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pg_throwaway"] = module
    spec.loader.exec_module(module)
    # The tests' settings turn durability off; a benchmark runs as production would.
    module.SETTINGS.clear()
    module.SETTINGS.update(PG_SETTINGS)
    with module.ThrowawayPostgres() as started:
        print(f"started a throwaway PostgreSQL: {started}", flush=True)
        yield started


def pg_reset(uri: str) -> None:
    """Empty the tables (the store made them) and checkpoint, so every run starts alike."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        conn.execute("CHECKPOINT")


class ServerCPU:
    """CPU seconds used by a local PostgreSQL: the postmaster, its live children (the
    backends, WAL writer, checkpointer...) and its exited children (in cutime/cstime).
    Clock ticks (10 ms): meaningful over a run of seconds. None when not readable."""

    def __init__(self, uri: str) -> None:
        import psycopg

        self.pid: int | None = None
        with contextlib.suppress(Exception), psycopg.connect(uri) as conn:
            folder = Path(conn.execute("SHOW data_directory").fetchone()[0])
            self.pid = int((folder / "postmaster.pid").read_text().split()[0])
            self.snapshot()

    @staticmethod
    def _stat(pid: int) -> tuple[int, int]:
        """(parent pid, utime + stime + cutime + cstime in ticks)."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), sum(int(f) for f in fields[11:15])

    def snapshot(self) -> float | None:
        if self.pid is None:
            return None
        try:
            ticks = self._stat(self.pid)[1]
        except OSError:
            self.pid = None
            return None
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    parent, used = self._stat(int(entry.name))
                    if parent == self.pid:
                        ticks += used
        return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(values)
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def count_rows(backend: str, target: str) -> dict[str, int]:
    sql = {
        "traces": "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT session_id) "
        "FROM traces",
        "spans": "SELECT count(*) FROM spans",
        "metadata": "SELECT count(*) FROM trace_metadata WHERE key = 'app_version'",
    }
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(target)) as conn:
            rows = {k: conn.execute(q).fetchone() for k, q in sql.items()}
    else:
        import psycopg

        with psycopg.connect(target) as conn:
            rows = {k: conn.execute(q).fetchone() for k, q in sql.items()}
    return {
        "traces": rows["traces"][0],
        "distinct": rows["traces"][1],
        "sessions": rows["traces"][2],
        "spans": rows["spans"][0],
        "metadata": rows["metadata"][0],
    }


# -- SDK mode (parent) ------------------------------------------------------------------


def run_sdk(
    backend: str, target: str, processes: int, total: int, server: ServerCPU | None
) -> dict[str, Any]:
    n = total // processes
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                json.dumps([backend, target, i, processes, n]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            json.loads(p.stdout.readline())  # ready
        server_cpu = server.snapshot() if server else None
        busy = machine_busy()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        replies = []
        for p in procs:
            assert p.stdout is not None
            replies.append(json.loads(p.stdout.readline()))
        busy = tuple(after - before for after, before in zip(machine_busy(), busy, strict=True))
        if server_cpu is not None and server is not None:
            after = server.snapshot()
            server_cpu = None if after is None else after - server_cpu
        counts = count_rows(backend, target)
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
    traces = n * processes
    seconds = (max(r["end"] for r in replies) - min(r["start"] for r in replies)) / 1e9
    written = sum(r["stats"]["written"] for r in replies)
    dropped = sum(r["stats"]["dropped"] for r in replies)
    expected_sessions = len({g // TURNS for g in range(traces)})
    ok = (
        counts["traces"] == counts["distinct"] == traces
        and counts["spans"] == 2 * traces
        and counts["metadata"] == traces
        and counts["sessions"] == expected_sessions
        and written == traces
        and dropped == 0
    )
    return {
        "backend": backend,
        "processes": processes,
        "traces": traces,
        "seconds": seconds,
        "tps": traces / seconds,
        "produce_s": max((r["produced"] - r["start"]) / 1e9 for r in replies),
        "writer_us": sum(r["writer_cpu_ns"] for r in replies) / traces / 1e3,
        "export_us": sum(r["export_cpu_ns"] for r in replies) / traces / 1e3,
        "app_us": sum(r["app_cpu_ns"] for r in replies) / traces / 1e3,
        "process_us": sum(r["process_cpu_ns"] for r in replies) / traces / 1e3,
        "server_us": None if server_cpu is None else server_cpu / traces * 1e6,
        "busy": busy[0] / busy[1],
        "counts": counts,
        "written": written,
        "dropped": dropped,
        "ok": ok,
    }


# -- direct mode -------------------------------------------------------------------------


def build_items(n: int) -> list[Any]:
    """n finished traces, made by the SDK and caught before the pipeline."""
    import sessiontrace
    from sessiontrace import _runtime

    items: list[Any] = []
    outer = make_app(sessiontrace)
    saved = _runtime.submit
    _runtime.submit = items.append  # type: ignore[assignment]
    try:
        for g in range(n):
            session = g // TURNS
            outer(f"user-{session % N_USERS:04d}", f"session-{session:07d}", MESSAGE)
    finally:
        _runtime.submit = saved  # type: ignore[assignment]
    if len(items) != n:
        raise RuntimeError(f"caught {len(items)} items for {n} traces")
    return items


class CopyFloor:
    """A hand-written PostgreSQL writer for direct mode's floor: the same rows
    (``build_rows``), one transaction a batch, binary COPY. ``upsert=False``: straight
    into the tables (not idempotent: the fastest possible). ``upsert=True``: into
    temporary tables, then ``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO
    UPDATE`` (research section 2's idempotent path). Only what this workload writes:
    traces, spans and metadata rows, no LLM columns, no tags."""

    TRACE_TYPES = ("text", "int8", "int8", "float8", *["text"] * 11)
    SPAN_TYPES = (*["text"] * 5, "int8", "int8", *["text"] * 6)

    def __init__(self, uri: str, *, upsert: bool) -> None:
        import psycopg

        from sessiontrace._store import _rows

        self.rows = _rows
        self.upsert = upsert
        self.conn = psycopg.connect(uri, autocommit=True)
        self.tables = [
            ("traces", _rows.TRACE_ROW_COLUMNS, self.TRACE_TYPES, "trace_id"),
            ("spans", _rows.SPAN_COLUMNS, self.SPAN_TYPES, "trace_id, span_id"),
            ("trace_metadata", "trace_id, key, value", ("text",) * 3, "trace_id, key"),
        ]
        if upsert:
            for table, *_ in self.tables:
                self.conn.execute(
                    f"CREATE TEMP TABLE tmp_{table} (LIKE {table}) ON COMMIT DELETE ROWS"
                )

    def connection(self) -> Any:
        return self.conn

    def export(self, items: Any) -> None:
        rows = self.rows.build_rows(items, null=None, metadata_json=False)
        if rows.llm_trace_rows or rows.llm_span_rows or rows.tag_rows or rows.late:
            raise RuntimeError("CopyFloor writes plain two-span traces only")
        data = (rows.trace_rows, rows.span_rows, rows.metadata_rows)
        with self.conn.transaction():
            for (table, cols, types, key), batch in zip(self.tables, data, strict=True):
                into = f"tmp_{table}" if self.upsert else table
                with self.conn.cursor().copy(
                    f"COPY {into} ({cols}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(types)
                    for row in batch:
                        copy.write_row(row)
                if self.upsert:
                    sets = ", ".join(f"{c} = excluded.{c}" for c in cols.split(", "))
                    self.conn.execute(
                        f"INSERT INTO {table} ({cols}) SELECT DISTINCT ON ({key}) {cols} "
                        f"FROM {into} ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {sets}"
                    )

    def close(self) -> None:
        self.conn.close()


# Direct mode's contenders: the two stores, and PostgreSQL floors (pg-*).
DIRECT = {
    "sqlite": "SQLiteStore.export",
    "postgresql": "PostgresStore.export",
    "pg-copy": "floor: build_rows + binary COPY into the tables (not idempotent)",
    "pg-upsert": "floor: build_rows + binary COPY into temp tables + INSERT ON CONFLICT",
}


def open_store(backend: str, target: str) -> Any:
    if backend == "sqlite":
        from sessiontrace._store._sqlite import SQLiteStore

        return SQLiteStore(target)
    if backend.startswith("pg-"):
        return CopyFloor(target, upsert=backend == "pg-upsert")
    from sessiontrace._store._postgres import PostgresStore

    return PostgresStore(target)


def run_direct(
    backend: str,
    target: str,
    items: list[Any],
    batch: int,
    server: ServerCPU | None,
    profile: Path | None = None,
) -> dict[str, Any]:
    store = open_store(backend, target)
    store.connection()  # the schema, before the clock starts
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    server_cpu = server.snapshot() if server else None
    cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    if profiler is not None:
        profiler.enable()
    for b in batches:
        store.export(b)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter_ns() - start
    cpu = time.thread_time_ns() - cpu
    if server_cpu is not None and server is not None:
        after = server.snapshot()
        server_cpu = None if after is None else after - server_cpu
    if profiler is not None and profile is not None:
        import pstats

        profiler.dump_stats(profile)
        print(f"  cProfile of {backend} export ({profile}), top 25 by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    kind = "sqlite" if backend == "sqlite" else "postgresql"
    counts = count_rows(kind, target)
    again = counts
    if backend != "pg-copy":  # re-delivery of a batch: nothing may change
        store.export(batches[len(batches) // 2])
        again = count_rows(kind, target)
    store.close()
    n = len(items)
    ok = (
        counts == again
        and counts["traces"] == counts["distinct"] == n
        and counts["spans"] == 2 * n
        and counts["metadata"] == n
    )
    return {
        "backend": backend,
        "traces": n,
        "seconds": wall / 1e9,
        "tps": n / (wall / 1e9),
        "cpu_us": cpu / n / 1e3,
        "server_us": None if server_cpu is None else server_cpu / n * 1e6,
        "counts": counts,
        "ok": ok,
    }


# -- report ---------------------------------------------------------------------------


def fmt_runs(values: list[float], spec: str = ",.0f") -> str:
    return " ".join(format(v, spec) for v in values)


def _median(rs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _us(value: float | None) -> str:
    return "      -" if value is None else f"{value:5.1f}us"


def report_sdk(results: list[dict[str, Any]], writers: list[int], backends: list[str]) -> None:
    print(
        "\nSDK mode: medians over rounds; CPU per trace: writer thread (the write path), its"
        "\nexport calls, the app thread (tracing), whole app process, PostgreSQL server;"
        "\nbusy: share of the machine's 2 CPUs in use; all runs' traces/s in brackets"
    )
    print(
        f"  {'backend':10} {'procs':>5} {'traces/s':>9} {'writer':>7} {'export':>7} "
        f"{'app':>7} {'process':>7} {'server':>7} {'busy':>5}  runs (traces/s)"
    )
    for backend in backends:
        for w in writers:
            rs = [r for r in results if r["backend"] == backend and r["processes"] == w]
            if not rs:
                continue
            tps = statistics.median(r["tps"] for r in rs)
            cells = " ".join(
                _us(_median(rs, k))
                for k in ("writer_us", "export_us", "app_us", "process_us", "server_us")
            )
            busy = statistics.median(r["busy"] for r in rs)
            print(
                f"  {backend:10} {w:>5} {tps:>9,.0f} {cells} {busy:>5.0%}  "
                f"[{fmt_runs([r['tps'] for r in rs])}]"
            )
    if len(backends) == 2:
        print("  PostgreSQL / SQLite traces/s, median of per-round ratios:")
        for w in writers:
            ratios = []
            for rnd in {r["round"] for r in results}:
                pair = {
                    r["backend"]: r["tps"]
                    for r in results
                    if r["round"] == rnd and r["processes"] == w
                }
                if len(pair) == 2:
                    ratios.append(pair["postgresql"] / pair["sqlite"])
            if ratios:
                print(f"    {w} process(es): {statistics.median(ratios):.2f}x")


def report_direct(results: list[dict[str, Any]], contenders: list[str]) -> None:
    print(
        "\nDirect mode (export of prebuilt traces on one thread): medians over rounds; CPU per"
        "\ntrace of the exporting thread and of the PostgreSQL server; x: traces/s against the"
        "\nnamed contender, median of per-round ratios"
    )
    print(f"  {'contender':10} {'traces/s':>9} {'client':>7} {'server':>7}  runs (traces/s)")
    for name in contenders:
        rs = [r for r in results if r["backend"] == name]
        if not rs:
            continue
        tps = statistics.median(r["tps"] for r in rs)
        print(
            f"  {name:10} {tps:>9,.0f} {_us(_median(rs, 'cpu_us'))} "
            f"{_us(_median(rs, 'server_us'))}  [{fmt_runs([r['tps'] for r in rs])}]  "
            f"{DIRECT[name]}"
        )
    for a, b in (("postgresql", "sqlite"), ("postgresql", "pg-upsert"), ("postgresql", "pg-copy")):
        ratios = []
        for rnd in {r["round"] for r in results}:
            pair = {r["backend"]: r["tps"] for r in results if r["round"] == rnd}
            if a in pair and b in pair:
                ratios.append(pair[a] / pair[b])
        if ratios:
            print(f"  {a} / {b}: x{statistics.median(ratios):.2f}")


def report_targets(sdk: list[dict[str, Any]], direct: list[dict[str, Any]]) -> bool:
    print("\nTargets")
    pg = [r for r in sdk if r["backend"] == "postgresql"]
    if pg:
        top = max(r["processes"] for r in pg)
        tps = statistics.median(r["tps"] for r in pg if r["processes"] == top)
        mark = "ok" if top >= 4 and tps >= PG_TARGET_TPS else "FAIL"
        print(
            f"  [{mark}] PostgreSQL from {top} writer processes: {tps:,.0f} traces/s "
            f"(target >= {PG_TARGET_TPS:,})"
        )
        for w in sorted({r["processes"] for r in pg}):
            cpu = statistics.median(r["writer_us"] for r in pg if r["processes"] == w)
            mark = "ok" if cpu <= PG_TARGET_CPU_US else "FAIL"
            print(
                f"  [{mark}] PostgreSQL write path, {w} process(es): {cpu:.1f} us of writer-thread "
                f"CPU per trace (target <= {PG_TARGET_CPU_US:.0f})"
            )
    every = sdk + direct
    bad = [r for r in every if not r["ok"]]
    mark = "ok" if not bad else "FAIL"
    print(f"  [{mark}] nothing lost or duplicated in {len(every) - len(bad)}/{len(every)} runs")
    for r in bad:
        print(
            f"        {r['backend']} {r.get('processes', 'direct')}: {r['counts']} "
            f"written={r.get('written')} dropped={r.get('dropped')}"
        )
    return not bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg", default=os.environ.get("SESSIONTRACE_BENCH_PG_URI"))
    parser.add_argument("--mode", choices=("sdk", "direct", "both"), default="both")
    parser.add_argument("--writers", default="1,2,4", help="writer process counts")
    parser.add_argument("--traces", type=int, default=100_000, help="per run, over all processes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--direct-traces", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="direct mode batch size")
    parser.add_argument("--quick", action="store_true", help="20k traces, 2 rounds")
    parser.add_argument(
        "--profile", type=Path, help="cProfile the PostgreSQL export of direct mode's last round"
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.worker:
        worker(*json.loads(args.worker))
        return
    if args.quick:
        args.traces, args.direct_traces, args.rounds = 20_000, 20_000, 2
    writers = [int(w) for w in args.writers.split(",")]
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; {args.rounds} rounds, "
        "backends and writer counts interleaved in random order"
    )
    with contextlib.ExitStack() as stack:
        pg_uri = ""
        if "postgresql" in backends:
            pg_uri = ingest_database(stack.enter_context(postgres(args.pg)))
            print(pg_server_info(pg_uri))
            open_store("postgresql", pg_uri).connection()  # the schema, once
        server = ServerCPU(pg_uri) if pg_uri else None
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingest-")))
        counter = iter(range(1 << 30))

        def fresh(backend: str) -> str:
            if backend == "postgresql":
                pg_reset(pg_uri)
                return pg_uri
            folder = tmp / f"run{next(counter)}"
            folder.mkdir()
            return str(folder / "traces.db")

        def cleanup(backend: str, target: str) -> None:
            if backend == "sqlite":
                shutil.rmtree(Path(target).parent, ignore_errors=True)

        rng = random.Random()
        sdk: list[dict[str, Any]] = []
        direct: list[dict[str, Any]] = []
        if args.mode in ("sdk", "both"):
            print(f"\nSDK mode: {args.traces:,} traces a run over 1/2/4 app processes", flush=True)
            for rnd in range(args.rounds):
                configs = [(b, w) for b in backends for w in writers]
                rng.shuffle(configs)
                for backend, w in configs:
                    target = fresh(backend)
                    pg_server = server if backend == "postgresql" else None
                    r = run_sdk(backend, target, w, args.traces, pg_server)
                    cleanup(backend, target)
                    r["round"] = rnd
                    sdk.append(r)
                    print(
                        f"  round {rnd + 1} {backend:10} {w} proc: {r['tps']:>7,.0f} traces/s, "
                        f"writer {r['writer_us']:.1f} us/trace, app {r['app_us']:.1f} us/trace"
                        f"{'' if r['ok'] else '  ROWS WRONG ' + json.dumps(r['counts'])}",
                        flush=True,
                    )
        if args.mode in ("direct", "both"):
            t0 = time.perf_counter()
            items = build_items(args.direct_traces)
            print(
                f"\nDirect mode: {len(items):,} traces built in {time.perf_counter() - t0:.1f} s; "
                f"batches of {args.batch}",
                flush=True,
            )
            contenders = [*backends]
            if "postgresql" in backends:
                contenders += ["pg-copy", "pg-upsert"]
            for rnd in range(args.rounds):
                order = list(contenders)
                rng.shuffle(order)
                for backend in order:
                    target = fresh("sqlite" if backend == "sqlite" else "postgresql")
                    profile = (
                        args.profile if backend == "postgresql" and rnd == args.rounds - 1 else None
                    )
                    pg_server = server if backend != "sqlite" else None
                    r = run_direct(backend, target, items, args.batch, pg_server, profile)
                    cleanup(backend, target)
                    r["round"] = rnd
                    direct.append(r)
                    print(
                        f"  round {rnd + 1} {backend:10}: {r['tps']:>7,.0f} traces/s, "
                        f"{r['cpu_us']:.1f} us CPU/trace"
                        f"{'' if r['ok'] else '  ROWS WRONG ' + json.dumps(r['counts'])}",
                        flush=True,
                    )
        if sdk:
            report_sdk(sdk, writers, backends)
        if direct:
            report_direct(direct, contenders)
        ok = report_targets(sdk, direct)
        if args.json:
            args.json.write_text(json.dumps({"sdk": sdk, "direct": direct}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
