"""Ingest: two-span traces/s from 1, 2 and 4 app processes into SQLite and PostgreSQL,
and the app CPU the write path costs per trace.

    .venv/bin/python bench/ingest.py --pg postgresql://user@/db?host=/tmp/pg   # ~15 min
    .venv/bin/python bench/ingest.py                  # PostgreSQL from scripts/pg_throwaway.py
    .venv/bin/python bench/ingest.py --backend sqlite --quick

Two parts; in each, every round runs every configuration (contender x process count)
once, in a fresh random order; figures are medians over rounds:

**SDK mode** (the app's view). Each writer is an app process: it configures the SDK
(``configure(tracking_uri=...)``), then, on the parent's signal (all processes at
once), traces its share of the traces back to back (an outer traced function that
sets user, session and two more metadata keys, calling a traced inner one: two
spans; with the SDK's automatic metadata that is six metadata rows a trace), then
``flush()``. Sessions are shared by all processes (a load balancer
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

**Direct mode** (the store's view, what research section 2 measured): each process
builds its traces through the SDK first (caught before the pipeline, untimed), then on
the signal calls ``store.export(batch)`` in batches of 1000 on one thread. Contenders,
on the same traces: ``SQLiteStore``, ``PostgresStore``, and two hand-written
PostgreSQL floors on the same rows (``build_rows``): binary COPY straight into the
tables (not idempotent: the fastest write there is) and binary COPY into temporary
tables then ``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO UPDATE`` (the
idempotent path research measured at 26k traces/s). From 1 and 4 processes; traces/s,
the exporting threads' CPU and the server's CPU per trace. After each run one batch
is exported again and the counts must not move (idempotent re-delivery).

PostgreSQL server CPU: the postmaster's and its children's CPU ticks from ``/proc``
(exited backends included, via cutime), before and after a run; "busy" is the share
of the machine's CPUs in use over the run (``/proc/stat``), which shows when the two
cores are the limit. ``--profile FILE`` adds one cProfiled direct run of the
PostgreSQL store (not in the figures) and prints where its client time goes.

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
        sessiontrace.configure(tracking_uri=target)


def writer_thread() -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.name == "sessiontrace-writer":
            return thread
    return None


def thread_cpu_ns(thread: threading.Thread | None) -> int:
    if thread is None or thread.ident is None:
        return 0
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def sdk_worker(backend: str, target: str, index: int, processes: int, n: int) -> None:
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
        calls.append(user_session(j * processes + index))  # a share of one sequence
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


def direct_worker(
    backend: str, target: str, index: int, processes: int, n: int, batch: int, profile: str
) -> None:
    """One writer process of direct mode: build n traces, wait for "go", export them in
    batches on this thread, report; then re-deliver a batch when asked."""
    items = build_items(n, index, processes)
    store = open_store(backend, target)
    store.connection()  # the schema, before the clock starts
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "go"
    cpu = time.thread_time_ns()
    start = time.monotonic_ns()
    if profiler is not None:
        profiler.enable()
    for b in batches:
        store.export(b)
    if profiler is not None:
        profiler.disable()
    end = time.monotonic_ns()
    cpu = time.thread_time_ns() - cpu
    if profiler is not None:
        profiler.dump_stats(profile)
    reply = {"start": start, "end": end, "writer_cpu_ns": cpu}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() == "redeliver":  # the same batch again: nothing may change
            store.export(batches[len(batches) // 2])
            sys.stdout.write("{}\n")
            sys.stdout.flush()
    store.close()


def user_session(g: int) -> tuple[str, str]:
    """The user and session of trace number g of one run (TURNS turns a session)."""
    session = g // TURNS
    return f"user-{session % N_USERS:04d}", f"session-{session:07d}"


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


def run_workers(
    mode: str,
    backend: str,
    target: str,
    processes: int,
    total: int,
    server: ServerCPU | None,
    batch: int = 1000,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One run: ``processes`` writer processes (SDK apps or direct exporters) started
    together; throughput, CPU, and the rows checked afterwards."""
    n = total // processes
    procs = []
    for i in range(processes):
        spec: list[Any] = [mode, backend, target, i, processes, n]
        if mode == "direct":
            spec += [batch, str(profile) if profile and i == 0 else ""]
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    kind = "sqlite" if backend == "sqlite" else "postgresql"
    again = None
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
        counts = count_rows(kind, target)
        if mode == "direct" and backend != "pg-copy":
            first = procs[0]
            assert first.stdin is not None and first.stdout is not None
            first.stdin.write("redeliver\n")
            first.stdin.flush()
            first.stdout.readline()
            again = count_rows(kind, target)
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
    traces = n * processes
    seconds = (max(r["end"] for r in replies) - min(r["start"] for r in replies)) / 1e9
    stats = [r["stats"] for r in replies if "stats" in r]
    written = sum(s["written"] for s in stats) if stats else traces
    dropped = sum(s["dropped"] for s in stats)
    ok = (
        counts["traces"] == counts["distinct"] == traces
        and counts["spans"] == 2 * traces
        and counts["metadata"] == traces
        and counts["sessions"] == len({g // TURNS for g in range(traces)})
        and written == traces
        and dropped == 0
        and (again is None or again == counts)
    )

    def per_trace(key: str) -> float | None:
        values = [r[key] for r in replies if key in r]
        return sum(values) / traces / 1e3 if values else None

    return {
        "mode": mode,
        "backend": backend,
        "processes": processes,
        "traces": traces,
        "seconds": seconds,
        "tps": traces / seconds,
        "writer_us": per_trace("writer_cpu_ns"),
        "export_us": per_trace("export_cpu_ns"),
        "app_us": per_trace("app_cpu_ns"),
        "process_us": per_trace("process_cpu_ns"),
        "server_us": None if server_cpu is None else server_cpu / traces * 1e6,
        "busy": busy[0] / busy[1],
        "counts": counts,
        "again": again,
        "written": written,
        "dropped": dropped,
        "ok": ok,
    }


# -- direct mode -------------------------------------------------------------------------


def build_items(n: int, index: int = 0, processes: int = 1) -> list[Any]:
    """n finished traces, made by the SDK and caught before the pipeline."""
    import sessiontrace
    from sessiontrace import _runtime

    items: list[Any] = []
    outer = make_app(sessiontrace)
    saved = _runtime.submit
    _runtime.submit = items.append  # type: ignore[assignment]
    try:
        for j in range(n):
            outer(*user_session(j * processes + index), MESSAGE)
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


def open_store(backend: str, target: str) -> Any:
    if backend == "sqlite":
        from sessiontrace._store._sqlite import SQLiteStore

        return SQLiteStore(target)
    if backend.startswith("pg-"):
        return CopyFloor(target, upsert=backend == "pg-upsert")
    from sessiontrace._store._postgres import PostgresStore

    return PostgresStore(target)


# -- report ---------------------------------------------------------------------------


def fmt_runs(values: list[float], spec: str = ",.0f") -> str:
    return " ".join(format(v, spec) for v in values)


def _median(rs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _us(value: float | None) -> str:
    return "      -" if value is None else f"{value:5.1f}us"


# What each contender is (direct mode runs the two stores and two floors).
CONTENDERS = {
    "sqlite": "SQLiteStore",
    "postgresql": "PostgresStore",
    "pg-copy": "floor: build_rows + binary COPY into the tables (not idempotent)",
    "pg-upsert": "floor: build_rows + binary COPY into temp tables + INSERT ON CONFLICT",
}


def report(results: list[dict[str, Any]], mode: str, names: list[str], writers: list[int]) -> None:
    if mode == "sdk":
        print(
            "\nSDK mode: medians over rounds. CPU per trace: the writer thread (the write path),"
            "\nits export calls, the app thread (tracing), the whole app process, the PostgreSQL"
            "\nserver; busy: the machine's CPUs in use. All runs' traces/s in brackets."
        )
        keys = ("writer_us", "export_us", "app_us", "process_us", "server_us")
        head = f"{'writer':>7} {'export':>7} {'app':>7} {'process':>7} {'server':>7}"
    else:
        print(
            "\nDirect mode: prebuilt traces, store.export in batches on one thread a process;"
            "\nmedians over rounds. CPU per trace: the exporting threads, the PostgreSQL server."
        )
        keys = ("writer_us", "server_us")
        head = f"{'client':>7} {'server':>7}"
    print(f"  {'contender':10} {'procs':>5} {'traces/s':>9} {head} {'busy':>5}  runs (traces/s)")
    for name in names:
        for w in writers:
            rs = [r for r in results if r["backend"] == name and r["processes"] == w]
            if not rs:
                continue
            tps = statistics.median(r["tps"] for r in rs)
            cells = " ".join(_us(_median(rs, k)) for k in keys)
            busy = statistics.median(r["busy"] for r in rs)
            print(
                f"  {name:10} {w:>5} {tps:>9,.0f} {cells} {busy:>5.0%}  "
                f"[{fmt_runs([r['tps'] for r in rs])}]"
            )
    if mode == "direct":
        for name in names:
            print(f"  {name:10} {CONTENDERS[name]}")
    pairs = [("postgresql", "sqlite")]
    if mode == "direct":
        pairs += [("postgresql", "pg-upsert"), ("postgresql", "pg-copy")]
    print("  traces/s ratios, median of per-round ratios:")
    for a, b in pairs:
        cells = []
        for w in writers:
            ratios = []
            for rnd in sorted({r["round"] for r in results}):
                tps = {
                    r["backend"]: r["tps"]
                    for r in results
                    if r["round"] == rnd and r["processes"] == w
                }
                if a in tps and b in tps:
                    ratios.append(tps[a] / tps[b])
            if ratios:
                cells.append(f"{w} proc x{statistics.median(ratios):.2f}")
        if cells:
            print(f"    {a} / {b}: {', '.join(cells)}")


def report_targets(sdk: list[dict[str, Any]], direct: list[dict[str, Any]]) -> bool:
    print("\nTargets")
    for results, label in ((sdk, "SDK, 4 app processes"), (direct, "store alone, 4 processes")):
        pg = [r for r in results if r["backend"] == "postgresql" and r["processes"] == 4]
        if pg:
            tps = statistics.median(r["tps"] for r in pg)
            mark = "ok" if tps >= PG_TARGET_TPS else "FAIL"
            print(
                f"  [{mark}] PostgreSQL ingest, {label}: {tps:,.0f} traces/s "
                f"(target >= {PG_TARGET_TPS:,})"
            )
    pg = [r for r in sdk if r["backend"] == "postgresql"]
    for w in sorted({r["processes"] for r in pg}):
        cpu = statistics.median(r["writer_us"] for r in pg if r["processes"] == w)
        mark = "ok" if cpu <= PG_TARGET_CPU_US else "FAIL"
        print(
            f"  [{mark}] PostgreSQL write path, {w} app process(es): {cpu:.1f} us of "
            f"writer-thread CPU per trace (target <= {PG_TARGET_CPU_US:.0f})"
        )
    every = sdk + direct
    bad = [r for r in every if not r["ok"]]
    mark = "ok" if not bad else "FAIL"
    print(
        f"  [{mark}] nothing lost or duplicated (re-delivered batches included) in "
        f"{len(every) - len(bad)}/{len(every)} runs"
    )
    for r in bad:
        print(
            f"        {r['mode']} {r['backend']} {r['processes']}: {r['counts']} again="
            f"{r['again']} written={r['written']} dropped={r['dropped']}"
        )
    return not bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg", default=os.environ.get("SESSIONTRACE_BENCH_PG_URI"))
    parser.add_argument("--mode", choices=("sdk", "direct", "both"), default="both")
    parser.add_argument("--writers", default="1,2,4", help="SDK mode: app process counts")
    parser.add_argument("--direct-writers", default="1,4", help="direct mode: process counts")
    parser.add_argument("--traces", type=int, default=100_000, help="per run, over all processes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000, help="direct mode batch size")
    parser.add_argument("--quick", action="store_true", help="20k traces a run, 2 rounds")
    parser.add_argument(
        "--profile", type=Path, help="cProfile the PostgresStore's export (direct, 1 process)"
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.worker:
        mode, *spec = json.loads(args.worker)
        (sdk_worker if mode == "sdk" else direct_worker)(*spec)
        return
    if args.quick:
        args.traces, args.rounds = 20_000, 2
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; {args.traces:,} traces a run; "
        f"{args.rounds} rounds, each running every configuration once in a fresh random order"
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
        rng = random.Random()
        results: dict[str, list[dict[str, Any]]] = {"sdk": [], "direct": []}
        phases = []
        if args.mode in ("sdk", "both"):
            phases.append(("sdk", backends, [int(w) for w in args.writers.split(",")]))
        if args.mode in ("direct", "both"):
            names = [*backends, *(("pg-copy", "pg-upsert") if pg_uri else ())]
            phases.append(("direct", names, [int(w) for w in args.direct_writers.split(",")]))
        for mode, names, writers in phases:
            print(f"\n{mode} mode", flush=True)
            for rnd in range(args.rounds):
                configs = [(name, w) for name in names for w in writers]
                rng.shuffle(configs)
                for name, w in configs:
                    if name == "sqlite":
                        folder = tmp / f"run{next(counter)}"
                        folder.mkdir()
                        target = str(folder / "traces.db")
                    else:
                        pg_reset(pg_uri)
                        target = pg_uri
                    r = run_workers(
                        mode,
                        name,
                        target,
                        w,
                        args.traces,
                        server if name != "sqlite" else None,
                        args.batch,
                    )
                    if name == "sqlite":
                        shutil.rmtree(Path(target).parent, ignore_errors=True)
                    r["round"] = rnd
                    results[mode].append(r)
                    cpu = "" if r["writer_us"] is None else f", writer {r['writer_us']:.1f} us"
                    server_cpu = (
                        "" if r["server_us"] is None else f", server {r['server_us']:.1f} us"
                    )
                    print(
                        f"  round {rnd + 1} {name:10} {w} proc: {r['tps']:>7,.0f} traces/s"
                        f"{cpu}{server_cpu} a trace{'' if r['ok'] else '  ROWS WRONG'}",
                        flush=True,
                    )
            report(results[mode], mode, names, writers)
        if args.profile and pg_uri and args.mode in ("direct", "both"):
            import pstats

            pg_reset(pg_uri)  # an extra run, not in the figures: the profiler slows it
            run_workers(
                "direct", "postgresql", pg_uri, 1, args.traces, None, args.batch, args.profile
            )
            print(f"\ncProfile of PostgresStore.export, 1 process ({args.profile}), by own time:")
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(15)
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(15)
        ok = report_targets(results["sdk"], results["direct"])
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
