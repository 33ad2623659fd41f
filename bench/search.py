"""Search and analytics on 1,000,000 traces, each beside its hand-written SQL floor.

    python bench/search.py                 # generate once (cached), then time
    python bench/search.py --runs 15       # more repetitions
    python bench/search.py --mlflow        # also MLflow's search_traces on 10,000 traces
    python bench/search.py --mlflow --skip-million   # only the MLflow comparison
    python bench/search.py --pg postgresql://user@/db?host=/tmp/pg   # PostgreSQL beside SQLite
    python bench/search.py --backend sqlite          # SQLite only

The data set (10,000 users, 100,000 sessions of 5-15 turns, two spans a trace,
four app versions, two environments, a query_category tag) is bulk-inserted
straight into the store's schema, not through the SDK, and cached under
``bench/.data/`` (git-ignored). Each query is timed as the median of ``--runs``
runs after six warm-up calls (past psycopg's prepare threshold), in one process,
page cache warm; the "floor" is the same answer fetched with plain ``sqlite3`` and
hand-written SQL on the best index.

PostgreSQL (``--backend postgresql|both``; both is the default when one is available:
``--pg URI``, ``SESSIONTRACE_BENCH_PG_URI``, or a throwaway server started with
``scripts/pg_throwaway.py`` with durable settings): the same SQLite data set is copied
into the database of ``--pg`` by binary COPY (the store creates the schema; indexes
and primary keys are dropped for the load and built again after, then ``VACUUM
ANALYZE``) and kept there for later runs (a ``bench_dataset`` table records which
file was loaded). The same five calls then run with ``store=PostgresStore(uri)``
beside a hand-written psycopg floor each (one round trip where one statement can
answer, the user report's four statements in one pipeline). Every run times all
contenders of a query in a fresh random order; medians over runs.

MLflow runs in its own virtualenv (``bench/.data/mlflow-venv``, created on first
use with ``pip install mlflow``): full MLflow pins older versions of packages the
project's ``.venv`` shares, so it is kept out of it. Its worker process stays up and
times calls on request, so the two sides' runs interleave: one session's and one
user's traces, as a DataFrame and as a list, each side returning the same traces in
the same order (checked first). Medians of every call; "cold" is the median of the
first call of each round, made just after the other process ran.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
sys.path.insert(0, str(HERE.parent / "src"))

import sessiontrace  # noqa: E402
from sessiontrace._store._sqlite import _SCHEMA, SCHEMA_VERSION, SQLiteStore  # noqa: E402

N_TRACES = 1_000_000
N_USERS = 10_000
N_SESSIONS = 100_000
SUBSET = 10_000
END_MS = 1_765_600_000_000  # fixed "now" so runs are comparable
SPAN_DAYS = 30
DAY_MS = 86_400_000
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0")
MLFLOW_VERSION = "3.17.2"
BLOCK = 5  # consecutive calls a side makes per round in the MLflow comparison


# -- data -----------------------------------------------------------------------------


def _sessions(n_traces: int, n_sessions: int, n_users: int, seed: int) -> Iterator[tuple]:
    """(session_id, user_id, start_ms, turns) in start order; turns add up to n_traces."""
    rng = random.Random(seed)
    turns = [5 + (i % 11) for i in range(n_sessions)]  # 5..15, mean 10
    diff = n_traces - sum(turns)
    i = 0
    while diff:
        step = 1 if diff > 0 else -1
        if turns[i % n_sessions] + step >= 1:
            turns[i % n_sessions] += step
            diff -= step
        i += 1
    rng.shuffle(turns)
    starts = sorted(END_MS - rng.randrange(SPAN_DAYS * DAY_MS) - 3_600_000 for _ in turns)
    for s, (start, n) in enumerate(zip(starts, turns, strict=True)):
        yield f"session-{s:06d}", f"user-{rng.randrange(n_users):05d}", start, n


def generate(path: Path, n_traces: int, n_sessions: int, n_users: int, seed: int = 1) -> None:
    """Bulk-load the store's schema (secondary indexes built after the load)."""
    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    store = SQLiteStore(tmp)
    store.connection()  # creates the schema
    store.close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    indexes = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    ]
    for name in indexes:
        conn.execute(f"DROP INDEX {name}")
    rng = random.Random(seed + 1)
    seq = 0
    t0 = time.perf_counter()
    batch: dict[str, list[tuple]] = {"t": [], "s": [], "m": [], "g": []}

    def flush() -> None:
        conn.execute("BEGIN")
        # Column lists: since schema 4 both tables end in LLM columns, left NULL here.
        conn.executemany(
            "INSERT INTO traces (trace_id, request_time, end_time, execution_time_ms, state, "
            "name, user_id, session_id, client_request_id, request_preview, response_preview, "
            "root_span_id, metadata, tags, spans) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            batch["t"],
        )
        conn.executemany(
            "INSERT INTO spans (trace_id, span_id, parent_id, name, span_type, start_ns, end_ns, "
            "status, status_message, inputs, outputs, attributes, events) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            batch["s"],
        )
        conn.executemany("INSERT INTO trace_metadata VALUES (?,?,?)", batch["m"])
        conn.executemany("INSERT INTO trace_tags VALUES (?,?,?)", batch["g"])
        conn.execute("COMMIT")
        for rows in batch.values():
            rows.clear()

    categories = ("chat", "search", "support")
    for session_id, user_id, start, turns in _sessions(n_traces, n_sessions, n_users, seed):
        age = (END_MS - start) / (SPAN_DAYS * DAY_MS)  # 1 = oldest
        version = VERSIONS[min(3, int((1 - age) * 4 + rng.random() * 0.5))]
        env = "production" if rng.random() < 0.8 else "staging"
        t = start
        for turn in range(turns):
            seq += 1
            duration = rng.randint(200, 5000)
            state = "ERROR" if rng.random() < 0.03 else "OK"
            tid = f"tr-{t:012x}{seq:020x}"
            root, child = f"{seq:015x}0", f"{seq:015x}1"
            message = f"question {turn + 1} in {session_id}"
            inputs = json.dumps({"message": message})
            outputs = None if state == "ERROR" else json.dumps(f"answer to {message}")
            start_ns = t * 1_000_000
            end_ns = start_ns + duration * 1_000_000
            # What the SDK writes: the spans as a JSON array in the trace's row, and a
            # row per span without the content for span filters.
            spans = [
                (root, None, "chat", "CHAIN", start_ns, end_ns, None),
                (child, root, "llm", "LLM", start_ns + 1000, end_ns - 1000, {"model": "m-1"}),
            ]
            spans_json = json.dumps(
                [
                    {
                        "span_id": span_id,
                        "parent_id": parent_id,
                        "name": name,
                        "span_type": span_type,
                        "start_time_ns": s_ns,
                        "end_time_ns": e_ns,
                        "status": state,
                        "status_message": "",
                        "inputs": json.loads(inputs),
                        "outputs": None if outputs is None else json.loads(outputs),
                        "attributes": attributes or {},
                        "events": [],
                    }
                    for span_id, parent_id, name, span_type, s_ns, e_ns, attributes in spans
                ],
                separators=(",", ":"),
            )
            batch["t"].append(
                (
                    tid,
                    t,
                    t + duration,
                    float(duration),
                    state,
                    "chat",
                    user_id,
                    session_id,
                    None,
                    inputs,
                    outputs,
                    root,
                    # what the SDK writes: the metadata and tags as JSON in the row too
                    json.dumps(
                        {
                            "mlflow.trace.user": user_id,
                            "mlflow.trace.session": session_id,
                            "app_version": version,
                            "mlflow.source.type": env,
                        }
                    ),
                    json.dumps({"query_category": categories[seq % 3]}),
                    spans_json,
                )
            )
            for span_id, parent_id, name, span_type, s_ns, e_ns, attributes in spans:
                attributes_json = None if attributes is None else json.dumps(attributes)
                row = [tid, span_id, parent_id, name, span_type, s_ns, e_ns, state]
                # status_message, inputs, outputs (in the array), attributes, events
                row += [None, None, None, attributes_json, None]
                batch["s"].append(tuple(row))
            batch["m"].append((tid, "app_version", version))
            batch["m"].append((tid, "mlflow.source.type", env))
            batch["g"].append((tid, "query_category", categories[seq % 3]))
            t += duration + rng.randint(5_000, 120_000)
        if len(batch["t"]) >= 50_000:
            flush()
    flush()
    print(f"  loaded {seq:,} traces in {time.perf_counter() - t0:.0f}s; indexing", flush=True)
    conn.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: recreates the indexes
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    tmp.replace(path)
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)


def ensure_db(name: str, n_traces: int, n_sessions: int, n_users: int) -> Path:
    DATA.mkdir(exist_ok=True)
    path = DATA / name
    if path.exists():
        with sqlite3.connect(path) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            print(f"{path} has schema {version}, not {SCHEMA_VERSION}: regenerating", flush=True)
            path.unlink()
    if not path.exists():
        print(f"generating {path} ({n_traces:,} traces; cached for later runs)", flush=True)
        generate(path, n_traces, n_sessions, n_users)
    return path


# -- timing ---------------------------------------------------------------------------


def pick(conn: sqlite3.Connection) -> tuple[str, str]:
    """A typical session (10 turns) and the user with the median trace count in the last week."""
    session = conn.execute(
        "SELECT session_id FROM traces WHERE session_id IS NOT NULL GROUP BY session_id "
        "HAVING count(*) = 10 LIMIT 1 OFFSET 5000"
    ).fetchone()[0]
    user = conn.execute(
        "SELECT user_id FROM traces WHERE request_time > ? GROUP BY user_id ORDER BY count(*) "
        "LIMIT 1 OFFSET 2500",
        (END_MS - 7 * DAY_MS,),
    ).fetchone()[0]
    return session, user


# Hand-written floors: the same answers, plain sqlite3, best index, no objects.


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def floor_session_traces(conn: sqlite3.Connection, session: str) -> list[Any]:
    # The same answer as search_traces(..., return_type="list"): every column of the
    # traces, the metadata and tags (JSON copies in the row) decoded; the spans are in
    # the row too, as JSON text that both sides leave for the first read of a span.
    return [
        (*r[:18], _json(r[18]), _json(r[19]), r[20])
        for r in conn.execute(
            "SELECT trace_id, request_time, end_time, execution_time_ms, state, name, user_id, "
            "session_id, client_request_id, request_preview, response_preview, root_span_id, "
            "input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls, "
            "metadata, tags, spans FROM traces WHERE session_id = ? ORDER BY request_time",
            (session,),
        )
    ]


def floor_session_flow(conn: sqlite3.Connection, session: str) -> list[Any]:
    out = []
    for *head, spans in conn.execute(
        "SELECT trace_id, request_time, execution_time_ms, state, llm_calls, input_tokens, "
        "output_tokens, total_tokens, cost, unpriced_calls, spans FROM traces "
        "WHERE session_id = ? ORDER BY request_time",
        (session,),
    ):
        root = next(s for s in json.loads(spans) if s["parent_id"] is None)
        out.append((*head, root["inputs"], root["outputs"]))
    return out


# The LLM fields every aggregate carries since schema 4: the floors compute them too.
LLM_SUMS = (
    "sum(llm_calls), sum(input_tokens), sum(output_tokens), sum(total_tokens), sum(cost), "
    "sum(unpriced_calls)"
)


def floor_user_report(conn: sqlite3.Connection, user: str) -> list[Any]:
    since = END_MS - 7 * DAY_MS
    return [
        conn.execute(
            "SELECT min(request_time), max(request_time) FROM traces WHERE user_id = ?", (user,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*), count(DISTINCT session_id), sum(state = 'ERROR'), "
            f"avg(execution_time_ms), {LLM_SUMS} FROM traces "
            "WHERE user_id = ? AND request_time > ?",
            (user, since),
        ).fetchone(),
        conn.execute(
            "SELECT date(request_time / 1000, 'unixepoch') d, count(*), sum(state = 'ERROR'), "
            f"{LLM_SUMS} FROM traces WHERE user_id = ? AND request_time > ? GROUP BY d",
            (user, since),
        ).fetchall(),
        conn.execute(
            "SELECT g.key, g.value, count(*) FROM traces t JOIN trace_tags g "
            "ON g.trace_id = t.trace_id WHERE t.user_id = ? AND t.request_time > ? "
            "GROUP BY g.key, g.value",
            (user, since),
        ).fetchall(),
    ]


def floor_sessions_page(conn: sqlite3.Connection) -> list[Any]:
    # Newest trace of each session, newest first: the request_time index walked backwards.
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT t.session_id FROM traces t WHERE t.session_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM traces u WHERE u.session_id = t.session_id "
            "AND u.request_time >= t.request_time "
            "AND (u.request_time > t.request_time OR u.trace_id > t.trace_id)) "
            "ORDER BY t.request_time DESC, t.trace_id DESC LIMIT 51"
        )
    ][:50]
    marks = ",".join("?" * len(ids))
    return conn.execute(
        "SELECT session_id, min(request_time), max(request_time), count(*), "
        "sum(state = 'ERROR'), sum(execution_time_ms), avg(execution_time_ms), "
        "json_group_array(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL), "
        "(SELECT f.request_preview FROM traces f WHERE f.session_id = t.session_id "
        f"ORDER BY f.request_time, f.trace_id LIMIT 1), {LLM_SUMS} "
        f"FROM traces t WHERE session_id IN ({marks}) GROUP BY session_id",
        ids,
    ).fetchall()


def naive_sessions_page(conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(
        "SELECT session_id, min(request_time), max(request_time) AS last, count(*), "
        "sum(state = 'ERROR'), avg(execution_time_ms) FROM traces "
        "WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY last DESC LIMIT 50"
    ).fetchall()


def floor_versions(conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(
        "SELECT m.value, count(*) n, count(DISTINCT t.user_id), sum(t.state = 'ERROR'), "
        "avg(t.execution_time_ms), min(t.request_time), max(t.request_time), "
        f"{LLM_SUMS.replace('sum(', 'sum(t.')} "
        "FROM trace_metadata m JOIN traces t ON t.trace_id = m.trace_id "
        "WHERE m.key = 'app_version' GROUP BY m.value ORDER BY n DESC"
    ).fetchall()


# -- PostgreSQL: the same data set, loaded by binary COPY ----------------------------

TABLES = ("traces", "trace_metadata", "trace_tags", "spans")
# Durable, production-like server settings for a throwaway (the tests' turn them off).
PG_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB", "max_connections": "200"}


@contextlib.contextmanager
def postgres(uri: str | None) -> Iterator[str]:
    """``uri``, or a throwaway server (``scripts/pg_throwaway.py``) for the block."""
    if uri:
        yield uri
        return
    spec = importlib.util.spec_from_file_location("pg_throwaway", PG_THROWAWAY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pg_throwaway"] = module
    spec.loader.exec_module(module)
    module.SETTINGS.clear()
    module.SETTINGS.update(PG_SETTINGS)
    with module.ThrowawayPostgres() as started:
        print(f"started a throwaway PostgreSQL (the 1M load is not kept): {started}")
        yield started


PG_THROWAWAY = HERE.parent / "scripts" / "pg_throwaway.py"


def pg_server_info(conn: Any) -> str:
    names = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "work_mem", "jit")
    settings = [f"{n}={conn.execute(f'SHOW {n}').fetchone()[0]}" for n in names]
    version = conn.execute("SHOW server_version").fetchone()[0]
    return f"PostgreSQL {version} ({', '.join(settings)})"


def ensure_pg(uri: str, sqlite_path: Path, *, reload: bool = False) -> None:
    """Load the SQLite data set into the database of ``uri`` unless it holds it already."""
    import psycopg

    from sessiontrace._store._postgres import PostgresStore

    stat = sqlite_path.stat()
    key = f"{sqlite_path.name} {stat.st_size} {int(stat.st_mtime)} schema {SCHEMA_VERSION}"
    with psycopg.connect(uri, autocommit=True) as conn:
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            row = conn.execute("SELECT key FROM bench_dataset").fetchone()
            if row and row[0] == key and not reload:
                return
        print(f"loading {sqlite_path.name} into PostgreSQL (kept for later runs)", flush=True)
        t0 = time.perf_counter()
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        store = PostgresStore(uri)
        store.connection()  # the store's own schema
        store.close()
        # Primary keys and indexes go for the load and come back after (as defined).
        defs = conn.execute(
            "SELECT c.relname, i.relname, pg_get_indexdef(x.indexrelid), con.conname, "
            "pg_get_constraintdef(con.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid "
            "WHERE n.nspname = 'public' AND c.relname = ANY(%s)",
            (list(TABLES),),
        ).fetchall()
        for table, index, _, constraint, _ in defs:
            if constraint:
                conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
            else:
                conn.execute(f'DROP INDEX "{index}"')
        lite = sqlite3.connect(sqlite_path)
        for table in TABLES:
            t1 = time.perf_counter()
            pg_cols = conn.execute(
                "SELECT column_name, udt_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            lite_cols = {r[1] for r in lite.execute(f"PRAGMA table_info({table})")}
            cols = [(name, udt) for name, udt in pg_cols if name in lite_cols]
            names = ", ".join(name for name, _ in cols)
            n = 0
            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types([udt for _, udt in cols])
                for row in lite.execute(f"SELECT {names} FROM {table}"):
                    cp.write_row(row)
                    n += 1
            print(f"  COPY {table}: {n:,} rows in {time.perf_counter() - t1:.1f} s", flush=True)
        lite.close()
        t1 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        for table, _, indexdef, constraint, condef in defs:
            if constraint:
                conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {condef}')
            else:
                conn.execute(indexdef)
        print(f"  {len(defs)} indexes in {time.perf_counter() - t1:.1f} s", flush=True)
        t1 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  VACUUM ANALYZE in {time.perf_counter() - t1:.1f} s", flush=True)
        conn.execute("CREATE TABLE bench_dataset (key text NOT NULL)")
        conn.execute("INSERT INTO bench_dataset VALUES (%s)", (key,))
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  done in {time.perf_counter() - t0:.0f} s; database {size.fetchone()[0]}")


# Hand-written PostgreSQL floors: psycopg, the same answers, one round trip a statement
# (the user report's four in one pipeline), sums of bigint cast back to bigint.
PG_LLM_SUMS = (
    "sum(llm_calls)::int8, sum(input_tokens)::int8, sum(output_tokens)::int8, "
    "sum(total_tokens)::int8, sum(cost), sum(unpriced_calls)::int8"
)


def pg_floor_session_traces(conn: Any, session: str) -> list[Any]:
    return [
        (*r[:18], _json(r[18]), _json(r[19]), r[20])
        for r in conn.execute(
            "SELECT trace_id, request_time, end_time, execution_time_ms, state, name, user_id, "
            "session_id, client_request_id, request_preview, response_preview, root_span_id, "
            "input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls, "
            "metadata, tags, spans FROM traces WHERE session_id = %s ORDER BY request_time",
            (session,),
        )
    ]


def pg_floor_session_flow(conn: Any, session: str) -> list[Any]:
    out = []
    for *head, spans in conn.execute(
        "SELECT trace_id, request_time, execution_time_ms, state, llm_calls, input_tokens, "
        "output_tokens, total_tokens, cost, unpriced_calls, spans FROM traces "
        "WHERE session_id = %s ORDER BY request_time",
        (session,),
    ):
        root = next(s for s in json.loads(spans) if s["parent_id"] is None)
        out.append((*head, root["inputs"], root["outputs"]))
    return out


def pg_floor_user_report(conn: Any, user: str) -> list[Any]:
    since = END_MS - 7 * DAY_MS
    with conn.pipeline():
        first_last = conn.execute(
            "SELECT min(request_time), max(request_time) FROM traces WHERE user_id = %s", (user,)
        )
        totals = conn.execute(
            "SELECT count(*), count(DISTINCT session_id), count(*) FILTER (WHERE state = 'ERROR'), "
            f"avg(execution_time_ms), {PG_LLM_SUMS} FROM traces "
            "WHERE user_id = %s AND request_time > %s",
            (user, since),
        )
        days = conn.execute(
            "SELECT request_time / 86400000 d, count(*), count(*) FILTER (WHERE state = 'ERROR'), "
            f"{PG_LLM_SUMS} FROM traces WHERE user_id = %s AND request_time > %s GROUP BY d",
            (user, since),
        )
        tags = conn.execute(
            "SELECT g.key, g.value, count(*) FROM traces t JOIN trace_tags g "
            "ON g.trace_id = t.trace_id WHERE t.user_id = %s AND t.request_time > %s "
            "GROUP BY g.key, g.value",
            (user, since),
        )
    return [first_last.fetchone(), totals.fetchone(), days.fetchall(), tags.fetchall()]


def pg_floor_user_report_sequential(conn: Any, user: str) -> list[Any]:
    """The same four statements one round trip each (for scale: what pipelining saves)."""
    since = END_MS - 7 * DAY_MS
    return [
        conn.execute(
            "SELECT min(request_time), max(request_time) FROM traces WHERE user_id = %s", (user,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*), count(DISTINCT session_id), count(*) FILTER (WHERE state = 'ERROR'), "
            f"avg(execution_time_ms), {PG_LLM_SUMS} FROM traces "
            "WHERE user_id = %s AND request_time > %s",
            (user, since),
        ).fetchone(),
        conn.execute(
            "SELECT request_time / 86400000 d, count(*), count(*) FILTER (WHERE state = 'ERROR'), "
            f"{PG_LLM_SUMS} FROM traces WHERE user_id = %s AND request_time > %s GROUP BY d",
            (user, since),
        ).fetchall(),
        conn.execute(
            "SELECT g.key, g.value, count(*) FROM traces t JOIN trace_tags g "
            "ON g.trace_id = t.trace_id WHERE t.user_id = %s AND t.request_time > %s "
            "GROUP BY g.key, g.value",
            (user, since),
        ).fetchall(),
    ]


def pg_floor_sessions_page(conn: Any) -> list[Any]:
    # The same anti-join walk as SQLite's floor, and the page's aggregates, in one statement.
    return conn.execute(
        "WITH page AS MATERIALIZED (SELECT t.session_id, t.request_time, t.trace_id "
        "FROM traces t WHERE t.session_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM traces u WHERE u.session_id = t.session_id "
        "AND u.request_time >= t.request_time "
        "AND (u.request_time > t.request_time OR u.trace_id > t.trace_id)) "
        "ORDER BY t.request_time DESC, t.trace_id DESC LIMIT 51) "
        "SELECT session_id, min(request_time), max(request_time), count(*), "
        "count(*) FILTER (WHERE state = 'ERROR'), sum(execution_time_ms), avg(execution_time_ms), "
        "(json_agg(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL))::text, "
        "(SELECT f.request_preview FROM traces f WHERE f.session_id = t.session_id "
        f"ORDER BY f.request_time, f.trace_id LIMIT 1), {PG_LLM_SUMS} "
        "FROM traces t WHERE session_id IN (SELECT session_id FROM page "
        "ORDER BY request_time DESC, trace_id DESC LIMIT 50) GROUP BY session_id"
    ).fetchall()


def pg_naive_sessions_page(conn: Any) -> list[Any]:
    return conn.execute(
        "SELECT session_id, min(request_time), max(request_time) AS last, count(*), "
        "count(*) FILTER (WHERE state = 'ERROR'), avg(execution_time_ms) FROM traces "
        "WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY last DESC LIMIT 50"
    ).fetchall()


def pg_floor_versions(conn: Any) -> list[Any]:
    return conn.execute(
        "SELECT m.value, count(*) n, count(DISTINCT t.user_id), "
        "count(*) FILTER (WHERE t.state = 'ERROR'), avg(t.execution_time_ms), "
        "min(t.request_time), max(t.request_time), "
        f"{PG_LLM_SUMS.replace('sum(', 'sum(t.')} "
        "FROM trace_metadata m JOIN traces t ON t.trace_id = m.trace_id "
        "WHERE m.key = 'app_version' GROUP BY m.value ORDER BY n DESC"
    ).fetchall()


# -- the 1M-trace run -------------------------------------------------------------------


# psycopg prepares a statement on its 5th execution (prepare_threshold=5, the store's
# default too); before that every call pays PostgreSQL's planning (up to 1 ms here for
# the session_flow statement). Warm up past it: the figures are the steady state of a
# long-running app or UI server.
WARMUP = 6


def interleaved(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int = WARMUP
) -> dict[str, list[float]]:
    """Each function ``warmup`` times, then ``runs`` runs of all, in a fresh random
    order each run (ms per call)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(7)
    times: dict[str, list[float]] = {label: [] for label in fns}
    labels = list(fns)
    for _ in range(runs):
        rng.shuffle(labels)
        for label in labels:
            t0 = time.perf_counter()
            fns[label]()
            times[label].append((time.perf_counter() - t0) * 1000)
    return times


def _fmt(ms: float) -> str:
    return f"{ms:9.2f} ms" if ms < 100 else f"{ms:9,.0f} ms"


def run_million(
    runs: int, pg_uri: str | None = None, *, sqlite_side: bool = True, reload: bool = False
) -> list[dict[str, Any]]:
    path = ensure_db("search-1m.db", N_TRACES, N_SESSIONS, N_USERS)
    store = SQLiteStore(path)
    conn = sqlite3.connect(path)
    session, user = pick(conn)
    where_session = f"metadata.`mlflow.trace.session` = '{session}'"
    backends: list[tuple[str, Any, Any, dict[str, Callable[..., Any]]]] = [
        (
            "sqlite",
            store,
            conn,
            {
                "session": floor_session_traces,
                "flow": floor_session_flow,
                "user": floor_user_report,
                "page": floor_sessions_page,
                "versions": floor_versions,
                "naive": naive_sessions_page,
            },
        )
    ]
    if not sqlite_side:
        backends.clear()  # the SQLite file is still the data's source
    if pg_uri is not None:
        import psycopg

        from sessiontrace._store._postgres import PostgresStore

        ensure_pg(pg_uri, path, reload=reload)
        pg_conn = psycopg.connect(pg_uri, autocommit=True)
        print(pg_server_info(pg_conn))
        backends.append(
            (
                "postgresql",
                PostgresStore(pg_uri),
                pg_conn,
                {
                    "session": pg_floor_session_traces,
                    "flow": pg_floor_session_flow,
                    "user": pg_floor_user_report,
                    "page": pg_floor_sessions_page,
                    "versions": pg_floor_versions,
                    "naive": pg_naive_sessions_page,
                },
            )
        )
    queries: list[tuple[str, str, Callable[[Any], Any], tuple[Any, ...]]] = [
        (
            "one session's traces (search_traces, list, with spans)",
            "session",
            lambda s: sessiontrace.search_traces(
                filter_string=where_session, order_by=["timestamp ASC"], return_type="list", store=s
            ),
            (session,),
        ),
        (
            "one session's turns (session_flow)",
            "flow",
            lambda s: sessiontrace.session_flow(session, store=s),
            (session,),
        ),
        (
            "one user's 7-day report (user_report)",
            "user",
            lambda s: sessiontrace.user_report(user, days=7, now_ms=END_MS, store=s),
            (user,),
        ),
        (
            "sessions list, first page of 50 (list_sessions)",
            "page",
            lambda s: sessiontrace.list_sessions(store=s),
            (),
        ),
        (
            "per-version aggregates (metadata_breakdown)",
            "versions",
            lambda s: sessiontrace.metadata_breakdown("app_version", store=s),
            (),
        ),
    ]
    names = [b[0] for b in backends]
    print(f"{'':58} " + "   ".join(f"{n + ': ours':>13} {'floor':>12} {'ratio':>6}" for n in names))
    results = []
    for name, key, ours, args in queries:
        fns: dict[str, Callable[[], Any]] = {}
        for backend, st, c, floors in backends:
            fns[f"{backend} ours"] = lambda st=st, o=ours: o(st)
            fns[f"{backend} floor"] = lambda c=c, f=floors[key], a=args: f(c, *a)
        if key == "versions":  # seconds a call: planning does not show
            times = interleaved(fns, max(3, runs // 2), warmup=1)
        else:
            times = interleaved(fns, runs)
        row: dict[str, Any] = {"query": name, "runs": times}
        cells = []
        for backend in names:
            o = statistics.median(times[f"{backend} ours"])
            f = statistics.median(times[f"{backend} floor"])
            prefix = "" if backend == "sqlite" else "pg_"
            row.update({f"{prefix}ours_ms": o, f"{prefix}floor_ms": f})
            cells.append(f"{_fmt(o)}  {_fmt(f)}  x{o / f:4.2f}")
        results.append(row)
        print(f"{name:58} " + "   ".join(cells), flush=True)
    for label, key in (
        ("(for scale: sessions page by GROUP BY over every session)", "naive"),
        ("(one session as a pandas DataFrame)", "pandas"),
        ("(user report floor, four round trips instead of a pipeline)", "sequential"),
    ):
        fns = {}
        for backend, st, c, floors in backends:
            if key == "naive":
                fns[backend] = lambda c=c, f=floors["naive"]: f(c)
            elif key == "pandas":
                fns[backend] = lambda st=st: sessiontrace.search_traces(
                    filter_string=where_session, order_by=["timestamp ASC"], store=st
                )
            elif backend == "postgresql":
                fns[backend] = lambda c=c: pg_floor_user_report_sequential(c, user)
        if not fns:
            continue
        if key == "naive":
            times = interleaved(fns, max(3, runs // 5), warmup=1)
        else:
            times = interleaved(fns, runs)
        medians = {b: statistics.median(t) for b, t in times.items()}
        cells = [f"{_fmt(medians[b])}{'':21}" if b in medians else f"{'':33}" for b in names]
        print(f"{label:58} " + "   ".join(cells).rstrip())
        results.append({"query": label, "runs": times, "medians": medians})
    if pg_uri is not None:
        print_pg_targets(results)
    return results


PG_TARGETS_MS = {
    "one session's traces (search_traces, list, with spans)": 0.5,
    "sessions list, first page of 50 (list_sessions)": 5.0,
    "one user's 7-day report (user_report)": 2.0,
}


def print_pg_targets(results: list[dict[str, Any]]) -> None:
    print("Targets (PostgreSQL, 1M traces)")
    for r in results:
        if "pg_ours_ms" not in r:
            continue
        limit = PG_TARGETS_MS.get(r["query"])
        if limit is not None:
            mark = "ok" if r["pg_ours_ms"] <= limit else "FAIL"
            print(f"  [{mark}] {r['query']}: {r['pg_ours_ms']:.2f} ms (target <= {limit} ms)")
    for r in results:
        if "pg_ours_ms" not in r:
            continue
        ratio = r["pg_ours_ms"] / r["pg_floor_ms"]
        mark = "ok" if ratio <= 2 else "FAIL"
        print(f"  [{mark}] {r['query']}: x{ratio:.2f} the PostgreSQL floor (target <= 2x)")


# -- MLflow on a 10,000-trace subset ---------------------------------------------------

MLFLOW_WORKER = r"""
import json, sys, time, sqlite3
import mlflow
from mlflow.entities import SpanType

db, src, log = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
mlflow.set_tracking_uri(f"sqlite:///{db}")
mlflow.set_experiment("search-bench")
if log:
    rows = sqlite3.connect(src).execute(
        "SELECT t.trace_id, t.user_id, t.session_id, t.state, m.value, s.inputs, s.outputs "
        "FROM traces t JOIN trace_metadata m ON m.trace_id = t.trace_id AND m.key = 'app_version' "
        "JOIN spans s ON s.trace_id = t.trace_id AND s.parent_id IS NULL ORDER BY t.request_time"
    ).fetchall()
    t0 = time.perf_counter()
    for tid, user, session, state, version, inputs, outputs in rows:
        with mlflow.start_span(name="chat", span_type=SpanType.CHAIN) as root:
            root.set_inputs(json.loads(inputs))
            mlflow.update_current_trace(
                metadata={"mlflow.trace.user": user, "mlflow.trace.session": session,
                          "app_version": version},
                tags={"query_category": "chat"},
            )
            with mlflow.start_span(name="llm", span_type=SpanType.LLM) as child:
                child.set_inputs(json.loads(inputs))
            root.set_outputs(json.loads(outputs) if outputs else None)
    mlflow.flush_trace_async_logging() if hasattr(mlflow, "flush_trace_async_logging") else None
    print(json.dumps({"logged": len(rows), "log_s": time.perf_counter() - t0}), flush=True)
    sys.exit(0)

# Serve timing requests, one call each, so the parent can interleave both sides' runs.
def messages(result, mode):
    # The generator's request messages are unique per turn: they identify a trace on
    # both sides, whose trace ids and timestamps differ (MLflow logged them anew).
    if mode == "pandas":
        return [r["message"] for r in result["request"]]
    return [json.loads(t.data.request)["message"] for t in result]

print(json.dumps({"ready": mlflow.__version__}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    times = []
    for _ in range(req.get("repeat", 1)):
        t0 = time.perf_counter()
        result = mlflow.search_traces(
            filter_string=req["filter"], order_by=req["order_by"], return_type=req["mode"]
        )
        times.append((time.perf_counter() - t0) * 1000)
    out = {"ms": times, "n": len(result)}
    if req.get("check"):
        out["messages"] = messages(result, req["mode"])
    print(json.dumps(out), flush=True)
"""


def mlflow_python() -> Path:
    venv = DATA / "mlflow-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with mlflow=={MLFLOW_VERSION} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}"], check=True
        )
    return python


def _messages(result: Any, mode: str) -> list[str]:
    if mode == "pandas":
        return [r["message"] for r in result["request"]]
    return [_root_inputs(t)["message"] for t in result]


def _root_inputs(trace: Any) -> Any:
    return next(s.inputs for s in trace.data.spans if s.parent_id is None)


def run_mlflow(runs: int) -> list[dict[str, Any]]:
    """Both libraries' ``search_traces`` on the same 10,000 traces, runs interleaved."""
    subset = ensure_db("search-10k.db", SUBSET, SUBSET // 10, SUBSET // 100)
    python = mlflow_python()
    mlflow_db = DATA / "mlflow-10k.db"
    worker = DATA / "mlflow_worker.py"
    worker.write_text(MLFLOW_WORKER)
    env = {**os.environ, "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}
    conn = sqlite3.connect(subset)
    session, user = conn.execute(
        "SELECT session_id, min(user_id) FROM traces GROUP BY session_id HAVING count(*) >= 8 "
        "LIMIT 1 OFFSET 10"
    ).fetchone()
    with tempfile.TemporaryDirectory() as tmp:
        if not mlflow_db.exists():
            print(f"logging {SUBSET:,} traces through MLflow into {mlflow_db} (once)", flush=True)
            partial = Path(tmp) / "mlflow.db"
            out = subprocess.run(
                [str(python), str(worker), str(partial), str(subset), "1"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
            )
            print("  " + out.stdout.strip().splitlines()[-1], flush=True)
            partial.replace(mlflow_db)
        proc = subprocess.Popen(
            [str(python), str(worker), str(mlflow_db), str(subset), "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=tmp,
        )
        try:
            return _compare(proc, SQLiteStore(subset), session, user, runs)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)


def _compare(
    proc: subprocess.Popen[str], store: SQLiteStore, session: str, user: str, runs: int
) -> list[dict[str, Any]]:
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    print(f"MLflow {json.loads(stdout.readline())['ready']} worker ready", flush=True)

    def theirs(request: dict[str, Any]) -> dict[str, Any]:
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        return json.loads(stdout.readline())  # type: ignore[no-any-return]

    queries = {
        "one session": {
            "filter": f"metadata.`mlflow.trace.session` = '{session}'",
            "order_by": ["timestamp ASC"],
        },
        "one user": {
            "filter": f"metadata.`mlflow.trace.user` = '{user}'",
            "order_by": ["timestamp_ms DESC"],
        },
    }
    cases = [(label, mode) for label in queries for mode in ("pandas", "list")]

    def ours(label: str, mode: str) -> Any:
        q = queries[label]
        return sessiontrace.search_traces(
            filter_string=q["filter"], order_by=q["order_by"], return_type=mode, store=store
        )

    # The same traces in the same order on both sides (this is also the warm-up).
    for label, mode in cases:
        mine = _messages(ours(label, mode), mode)
        other = theirs({**queries[label], "mode": mode, "check": True})["messages"]
        assert mine == other, (label, mode, mine, other)
    # Rounds alternate the two processes; within a round each side makes BLOCK calls in
    # a row, so that both are timed warm (the first call after the other process has run
    # finds the CPU caches cold: reported apart, as "cold").
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {c: ([], []) for c in cases}
    cold: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    for r in range(max(1, runs // BLOCK)):
        for label, mode in cases:
            mine_t, their_t = times[(label, mode)]
            for side in (0, 1) if r % 2 else (1, 0):  # alternate who goes first
                if side == 1:
                    their_t += theirs({**queries[label], "mode": mode, "repeat": BLOCK})["ms"]
                    continue
                for i in range(BLOCK):
                    t0 = time.perf_counter()
                    ours(label, mode)
                    mine_t.append((time.perf_counter() - t0) * 1000)
                    if i == 0:
                        cold[(label, mode)].append(mine_t[-1])
    results = []
    for label, mode in cases:
        mine_ms, their_ms = (statistics.median(t) for t in times[(label, mode)])
        n = len(ours(label, mode))
        cold_ms = statistics.median(cold[(label, mode)])
        results.append(
            {
                "query": f"{label}, {mode}",
                "traces": n,
                "ours_ms": mine_ms,
                "ours_cold_ms": cold_ms,
                "mlflow_ms": their_ms,
            }
        )
        name = f"10k subset, {label} ({n} traces), {mode}:"
        print(
            f"{name:45} ours {mine_ms:6.2f} ms (cold {cold_ms:5.2f})   MLflow {their_ms:7.2f} ms"
            f"   {their_ms / mine_ms:4.0f}x (cold {their_ms / cold_ms:3.0f}x)",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--mlflow", action="store_true", help="compare with MLflow (10k subset)")
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        help="default: both when a PostgreSQL is available, else sqlite",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("SESSIONTRACE_BENCH_PG_URI"),
        help="a PostgreSQL database this benchmark fills with the 1M traces and keeps",
    )
    parser.add_argument(
        "--reload", action="store_true", help="load the PostgreSQL copy again (schema changed)"
    )
    parser.add_argument("--json", type=Path, help="write every run's times here")
    args = parser.parse_args()
    backend = args.backend or ("both" if args.pg or PG_THROWAWAY.exists() else "sqlite")
    print(
        f"sqlite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, "
        f"medians of {args.runs} runs (per-version aggregates: {max(3, args.runs // 2)}), "
        "each run every contender in a fresh random order"
    )
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        pg_uri = None if backend == "sqlite" else stack.enter_context(postgres(args.pg))
        if not args.skip_million:
            out["million"] = run_million(
                args.runs, pg_uri, sqlite_side=backend != "postgresql", reload=args.reload
            )
    if args.mlflow:
        out["mlflow"] = run_mlflow(args.runs)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
