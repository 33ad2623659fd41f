"""The server's cost over the queries beneath it, and HTTP ingest throughput.

    python bench/ui.py                    # 1,000,000-trace DB from bench/search.py (cached)
    python bench/ui.py --db other.db      # any store
    python bench/ui.py --ingest 20000     # traces sent for the ingest comparison

Part 1: for the sessions list, one session, one user and the versions page, the
median time of the JSON endpoint over HTTP (a real ``sessiontrace ui`` server in
another process, keep-alive connection, body read and decoded) beside the median of
the same analytics calls made in-process on the same file. Target: ratio <= 1.3.

Part 2: N traces produced by the SDK, end to end until ``flush()`` returns, once
into the embedded SQLite store in-process and once over HTTP into a server on
127.0.0.1. Target: HTTP >= 0.5 x in-process.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402

import sessiontrace  # noqa: E402
from sessiontrace import SQLiteStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sessiontrace.server",
                "--db",
                str(db),
                "--port",
                str(self.port),
            ],
            env={**env, "PYTHONPATH": str(HERE.parent / "src")},
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/api/info", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def pick(store: SQLiteStore) -> tuple[str, str]:
    conn = store.connection()
    session = conn.execute(
        "SELECT session_id FROM traces WHERE session_id IS NOT NULL "
        "ORDER BY request_time DESC LIMIT 1 OFFSET 1000"
    ).fetchone()[0]
    user = conn.execute(
        "SELECT user_id FROM traces WHERE user_id IS NOT NULL "
        "ORDER BY request_time DESC LIMIT 1 OFFSET 1000"
    ).fetchone()[0]
    return session, user


def bench_pages(db: Path, runs: int) -> list[dict[str, Any]]:
    store = SQLiteStore(db)
    session, user = pick(store)

    def q_session() -> Any:
        sessiontrace.get_session_summary(session, store=store)
        turns = sessiontrace.session_flow(session, store=store)
        store.load_traces([t.trace_id for t in turns], include_spans=False)  # tags per turn

    cases: list[tuple[str, Callable[[], Any], str, dict[str, Any]]] = [
        ("sessions list", lambda: sessiontrace.list_sessions(store=store), "/api/sessions", {}),
        ("one session", q_session, "/api/session", {"id": session}),
        (
            # The generated data ends on a fixed date: a window reaching back over all of it.
            "one user (all days)",
            lambda: sessiontrace.user_report(user, days=3660, store=store),
            "/api/user",
            {"id": user, "days": 3660},
        ),
        ("versions", lambda: sessiontrace.metadata_breakdown(store=store), "/api/versions", {}),
    ]
    server = Server(db)
    results = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for name, query, path, params in cases:

                def http(path: str = path, params: dict[str, Any] = params) -> Any:
                    r = client.get(path, params=params)
                    r.raise_for_status()
                    return r.json()

                q = median_ms(query, runs)
                h = median_ms(http, runs)
                results.append({"page": name, "query_ms": q, "http_ms": h, "ratio": h / q})
                print(f"  {name:<20} query {q:9.2f} ms   HTTP {h:9.2f} ms   ratio {h / q:5.2f}")
    finally:
        server.close()
    return results


@sessiontrace.trace
def chat(message: str) -> str:
    sessiontrace.update_current_trace(tags={"query_category": "chat"})
    return message[::-1]


def produce(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with sessiontrace.user_session(user_id=f"user-{i % 100}", session_id=f"s-{i % 1000}"):
            chat(f"message number {i}")
    assert sessiontrace.flush(120)
    return n / (time.perf_counter() - t0)


def bench_ingest(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "local.db"
        sessiontrace.configure(tracking_uri=f"sqlite:///{local}")
        produce(min(n, 2000))  # warm-up
        in_process = produce(n)
        remote_db = Path(tmp) / "remote.db"
        server = Server(remote_db)
        try:
            sessiontrace.configure(tracking_uri=server.url)
            produce(min(n, 2000))
            over_http = produce(n)
            stats = sessiontrace.get_stats()
        finally:
            sessiontrace.configure(tracking_uri=f"sqlite:///{local}")
            server.close()
        stored = SQLiteStore(remote_db).count_traces()
    expected = n + min(n, 2000)
    print(f"  in-process SQLite   {in_process:10,.0f} traces/s")
    print(
        f"  HTTP to the server  {over_http:10,.0f} traces/s   ratio {over_http / in_process:4.2f}"
        f"   stored {stored:,}/{expected:,}, dropped {stats['dropped']}"
    )
    return {"in_process": in_process, "http": over_http, "ratio": over_http / in_process}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--ingest", type=int, default=20_000)
    args = parser.parse_args()
    db = args.db
    if db is None:
        import search

        db = search.ensure_db("search-1m.db", search.N_TRACES, search.N_SESSIONS, search.N_USERS)
    print(f"Pages on {db} (median of {args.runs}; ratio = HTTP / query, target <= 1.3)")
    bench_pages(db, args.runs)
    print(f"\nIngest of {args.ingest:,} traces, end to end (target HTTP >= 0.5 x in-process)")
    bench_ingest(args.ingest)


if __name__ == "__main__":
    main()
