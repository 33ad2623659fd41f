"""What feedback roll-ups cost the analytics pages, on the 1,000,000-trace store.

    python bench/feedback.py               # SQLite, the data set of bench/search.py
    python bench/feedback.py --runs 21

The same calls are timed twice on the cached data set of ``bench/search.py``: first
with no feedback at all, then after 100,000 feedback rows (one trace in ten: a
thumbs up or down, one in five also a score, one in twenty overridden) are written
into its ``assessments`` table; the rows are deleted again at the end. Each phase
times its calls interleaved in a fresh random order each run; medians, and the ratio
with/without feedback per call. The cost of the roll-ups over the code before them is
``bench/search.py``'s figures before and after (the pages' extra query over an empty
table).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import search  # noqa: E402  (bench/search.py: the data set and the timing loop)
import sessiontrace  # noqa: E402
from sessiontrace._analytics import feedback_over_time  # noqa: E402
from sessiontrace._store import SQLiteStore  # noqa: E402
from sessiontrace._store._sqlite import _SCHEMA  # noqa: E402

N_FEEDBACK_TRACES = 100_000


def add_feedback(path: Path) -> int:
    rng = random.Random(3)
    conn = sqlite3.connect(path)
    try:
        ids = [r[0] for r in conn.execute("SELECT trace_id FROM traces WHERE rowid % 10 = 0")]
        rows = []
        for n, trace_id in enumerate(ids[:N_FEEDBACK_TRACES]):
            up = rng.random() < 0.7
            valid = 0 if n % 20 == 0 else 1
            rows.append((f"a-bench-{n}", trace_id, "thumbs", "true" if up else "false",
                         1.0 if up else 0.0, int(up), valid))  # fmt: skip
            if n % 5 == 0:
                score = rng.randint(1, 5)
                rows.append((f"a-bench-s{n}", trace_id, "score", str(score), float(score),
                             None, 1))  # fmt: skip
        with conn:
            conn.executemany(
                "INSERT INTO assessments (assessment_id, trace_id, kind, name, value_json, "
                "value_num, value_bool, source_type, source_id, create_time_ms, "
                "last_update_time_ms, valid) VALUES (?, ?, 'feedback', ?, ?, ?, ?, 'HUMAN', "
                "'bench', 0, 0, ?)",
                rows,
            )
        # A store's writes are checkpointed as they go (every 1000 pages); one bulk
        # insert left in the WAL would slow every read after it.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(rows)
    finally:
        conn.close()


def remove_feedback(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("DELETE FROM assessments WHERE assessment_id LIKE 'a-bench-%'")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def calls(store: Any, session: str, user: str) -> dict[str, Callable[[], Any]]:
    return {
        "sessions list, first page of 50": lambda: sessiontrace.list_sessions(store=store),
        "users list, first page of 50": lambda: sessiontrace.list_users(store=store),
        "one session's turns (session_flow)": lambda: sessiontrace.session_flow(
            session, store=store
        ),
        "one user's 7-day report": lambda: sessiontrace.user_report(
            user, days=7, now_ms=search.END_MS, store=store
        ),
        "sessions by negative feedback, first page": lambda: sessiontrace.list_sessions(
            order_by="negative_feedback DESC", store=store
        ),
        "feedback per day and version, 30 days": lambda: feedback_over_time(
            metadata_key="app_version", days=30, now_ms=search.END_MS, store=store
        ),
        "one user's feedback per day, 30 days": lambda: feedback_over_time(
            user_id=user, days=30, now_ms=search.END_MS, store=store
        ),
    }


def phase(store: Any, session: str, user: str, runs: int) -> dict[str, float]:
    times = search.interleaved(calls(store, session, user), runs)
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    path = search.ensure_db("search-1m.db", search.N_TRACES, search.N_SESSIONS, search.N_USERS)
    remove_feedback(path)  # a run stopped before its cleanup
    with sqlite3.connect(path) as conn:  # the indexes (IF NOT EXISTS), as the store has them
        conn.executescript(_SCHEMA)
    with sqlite3.connect(path) as conn:
        session, user = search.pick(conn)
    print(f"sqlite {sqlite3.sqlite_version}, medians of {args.runs} interleaved runs")
    store = SQLiteStore(path)
    try:
        without = phase(store, session, user, args.runs)
        t0 = time.perf_counter()
        added = add_feedback(path)
        print(f"(wrote {added:,} feedback rows in {time.perf_counter() - t0:.1f} s)")
        try:
            with_feedback = phase(store, session, user, args.runs)
        finally:
            remove_feedback(path)
    finally:
        store.close()
    print(f"{'':45} {'no feedback':>12} {'100k rows':>12} {'ratio':>6}")
    for label, ms in without.items():
        other = with_feedback[label]
        print(f"{label:45} {search._fmt(ms)} {search._fmt(other)}  x{other / ms:4.2f}")


if __name__ == "__main__":
    main()
