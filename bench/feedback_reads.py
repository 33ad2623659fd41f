"""What filling ``TraceInfo.assessments`` costs a read: each read with and without it.

    python bench/feedback_reads.py                      # SQLite, 20,000 traces
    python bench/feedback_reads.py --traces 50000 --runs 31
    python bench/feedback_reads.py --pg postgresql://user@/db?host=/tmp/pg   # also PostgreSQL

Every read since schema 5 asks the assessments table for the page's traces (one
indexed query a page). The peer is the same store with that query skipped
(``assessments_for`` answering ``{}`` without a query: the reads as they were
before feedback). The data: traces in sessions of 10 turns, 100 users, a thumbs
up or down on one trace in ten (``--feedback``). Each run times every contender of
a read in a fresh random order; medians over ``--runs`` runs of wall time and of
this process's CPU time (on a busy machine each statement handed to SQLite or the
server can lose the CPU to another process, which wall time then counts; the CPU
time does not, nor does it count PostgreSQL's own work); the ratio is with /
without. A PostgreSQL database given with ``--pg`` is wiped and filled.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import sessiontrace
from sessiontrace._records import SpanRecord, TraceRecord
from sessiontrace._store import open_store


def fill(store: Any, n: int, feedback: float) -> tuple[str, str, str]:
    rng = random.Random(7)
    start = time.time_ns() - n * 1_000_000_000
    batch: list[Any] = []
    ids = []
    for i in range(n):
        tid = "tr-" + uuid.UUID(int=rng.getrandbits(128)).hex
        ids.append(tid)
        t0 = start + i * 1_000_000_000
        root = SpanRecord(
            tid,
            "s1",
            None,
            "chat",
            "CHAIN",
            t0,
            t0 + 5_000_000,
            "OK",
            "",
            '{"message":"hello there"}',
            '"general kenobi"',
            None,
            None,
        )
        child = SpanRecord(
            tid,
            "s2",
            "s1",
            "llm",
            "LLM",
            t0 + 1000,
            t0 + 4_000_000,
            "OK",
            "",
            '{"prompt":"hello"}',
            '"hi"',
            {"model": "m"},
            None,
        )
        metadata = {
            "mlflow.trace.user": f"user-{(i // 10) % 100}",
            "mlflow.trace.session": f"session-{i // 10}",
            "app_version": f"v{i % 4}",
        }
        batch.append(
            TraceRecord(
                tid,
                t0,
                t0 + 5_000_000,
                "OK",
                root,
                (root, child),
                metadata,
                {},
                '{"message":"hello there"}',
                '"general kenobi"',
                None,
            )
        )
        if len(batch) == 2000:
            store.export(batch)
            batch = []
    if batch:
        store.export(batch)
    for tid in ids:
        if rng.random() < feedback:
            store.put_assessment(
                sessiontrace.Feedback(
                    name="thumbs_up",
                    value=rng.random() < 0.7,
                    trace_id=tid,
                    source=sessiontrace.AssessmentSource("HUMAN", "u"),
                )
            )
    return "session-42", "user-7", ids[n // 2]


def run(name: str, store: Any, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    session, user, tid = fill(store, args.traces, args.feedback)
    print(f"{name}: {args.traces:,} traces filled in {time.perf_counter() - t0:.0f}s")
    real = store.assessments_for

    def without(ids: Any) -> dict[str, Any]:
        return {}

    reads: list[tuple[str, Callable[[], Any]]] = [
        (
            "one session's traces (list, 10)",
            lambda: sessiontrace.search_traces(
                filter_string=f"metadata.`mlflow.trace.session` = '{session}'",
                return_type="list",
                store=store,
            ),
        ),
        (
            "a user's page of 100 (list, no spans)",
            lambda: sessiontrace.search_traces(
                filter_string=f"user = '{user}'",
                max_results=100,
                return_type="list",
                include_spans=False,
                store=store,
            ),
        ),
        (
            "a user's page of 100 (pandas)",
            lambda: sessiontrace.search_traces(
                filter_string=f"user = '{user}'", max_results=100, store=store
            ),
        ),
        ("get_trace", lambda: store.get_trace(tid)),
    ]
    print(
        f"  {'read':38} {'wall: with':>11} {'without':>9} {'ratio':>6}"
        f" {'cpu: with':>10} {'without':>9} {'ratio':>6}"
    )
    for label, call in reads:
        wall: dict[str, list[float]] = {"with": [], "without": []}
        cpu: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(5):  # warm-up (and psycopg's prepare threshold)
            call()
        for _ in range(args.runs):
            order = ["with", "without"]
            random.shuffle(order)
            for side in order:
                store.assessments_for = real if side == "with" else without
                t, c = time.perf_counter(), time.process_time()
                call()
                cpu[side].append(time.process_time() - c)
                wall[side].append(time.perf_counter() - t)
        store.assessments_for = real
        w, wo = (statistics.median(wall[s]) * 1e3 for s in ("with", "without"))
        cw, cwo = (statistics.median(cpu[s]) * 1e3 for s in ("with", "without"))
        print(
            f"  {label:38} {w:9.2f}ms {wo:7.2f}ms {w / wo:6.2f}"
            f" {cw:8.2f}ms {cwo:7.2f}ms {cw / cwo:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--feedback", type=float, default=0.1)
    parser.add_argument("--pg", help="a PostgreSQL database to wipe and fill")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        try:
            run("sqlite", store, args)
        finally:
            store.close()
    if args.pg:
        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        store = open_store(args.pg)
        try:
            run("postgresql", store, args)
        finally:
            store.close()


if __name__ == "__main__":
    main()
