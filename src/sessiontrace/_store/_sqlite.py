"""The embedded store: one SQLite file in WAL mode.

Writes come from the pipeline's single writer thread, one transaction per batch
(``BEGIN IMMEDIATE``, so several processes writing one file queue up on SQLite's
lock instead of failing half-way). Reads use one connection per thread. User and
session are real, indexed columns of ``traces``; other metadata and the tags are
key/value tables indexed by ``(key, value)`` for searching, and are also kept as
JSON objects in the trace's own row for reading (a trace loads from one row, not
three b-tree lookups). So are the spans: one JSON array in the trace's row, which a
search reads with the trace; the spans table keeps a row per span (name, type,
status, attributes) for span filters. Every statement is parameterised.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._assessments import Assessment
from .._entities import Trace, TraceInfo
from .._pipeline import RetryableExportError
from .._search._compile import register_functions
from .._serialize import dumps, dumps_marked_array, loads_marked, loads_strings
from . import _assess
from ._assess import assessments_ddl
from ._dialect import SQLITE
from ._rows import (
    SPAN_COLUMNS,
    SPAN_ROW_LENGTH,
    Rows,
    TraceNotFoundError,
    build_rows,
    chunks,
    info_from_row,
    llm_totals,
    select_columns,
    totals_from_span_rows,
    trace_from_row,
    trace_llm_values,
    traces_from_rows,
    with_llm_metadata,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "TraceNotFoundError", "llm_totals", "trace_from_row"]

SCHEMA_VERSION = 5

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    request_time INTEGER NOT NULL,          -- ms since the epoch
    end_time INTEGER,                       -- ms since the epoch
    execution_time_ms REAL,
    state TEXT NOT NULL,
    name TEXT,
    user_id TEXT,
    session_id TEXT,
    client_request_id TEXT,
    request_preview TEXT,
    response_preview TEXT,
    root_span_id TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    cost REAL,
    llm_calls INTEGER,
    unpriced_calls INTEGER,
    metadata TEXT,                          -- JSON copy of trace_metadata (+ user, session)
    tags TEXT,                              -- JSON copy of trace_tags (NULL: read those)
    -- the spans as a JSON array (see _span_row) or NULL: read the spans table
    spans TEXT
);
-- The LLM totals (sessiontrace.llm._rollup) are all NULL for a trace without LLM
-- calls, and cost is NULL too when none of its calls was priced. In a new file they
-- come before the wide JSON columns: a column stored after a big spans array can sit
-- on an overflow page, which every aggregate over it would have to read. (A file
-- upgraded from schema 3 has them last.)
-- trace_id last: searches order by (request_time, trace_id), which these give
-- without sorting the (wide) result rows
CREATE INDEX IF NOT EXISTS traces_request_time ON traces (request_time, trace_id);
CREATE INDEX IF NOT EXISTS traces_user ON traces (user_id, request_time, trace_id)
    WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_session ON traces (session_id, request_time, trace_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_client_request ON traces (client_request_id)
    WHERE client_request_id IS NOT NULL;
-- Partial: only traces with LLM calls pay for them, and "total_tokens > ?" implies the
-- IS NOT NULL, so SQLite can use them for the token and cost filters
CREATE INDEX IF NOT EXISTS traces_total_tokens ON traces (total_tokens)
    WHERE total_tokens IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_cost ON traces (cost) WHERE cost IS NOT NULL;

CREATE TABLE IF NOT EXISTS trace_metadata (
    trace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_metadata_key_value ON trace_metadata (key, value);

CREATE TABLE IF NOT EXISTS trace_tags (
    trace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_tags_key_value ON trace_tags (key, value);

-- One row a span, for span filters. Since schema 3 the content (inputs, outputs,
-- status_message, events) is NULL here when it is in the trace's spans array.
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    span_type TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status TEXT NOT NULL,
    model TEXT,
    provider TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    cost REAL,
    llm INTEGER,
    status_message TEXT,
    inputs TEXT,
    outputs TEXT,
    attributes TEXT,
    events TEXT
);
-- An LLM call's model and numbers are NULL on other spans, and llm is 1 when the
-- call counts in its trace's totals, 0 when an ancestor with usage already counts it.
CREATE UNIQUE INDEX IF NOT EXISTS spans_trace_span ON spans (trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_model ON spans (model, provider) WHERE llm IS NOT NULL;
"""
# Feedback and expectations (schema 5): see _assess.
_SCHEMA += "".join(
    f"{statement};\n" for statement in assessments_ddl("TEXT", if_not_exists="IF NOT EXISTS ")
)

# Reading: constant column lists and ``{marks}`` (a run of ``?``) are the only text
# put into these statements; the ids are bound.
# Columns 10 and 11 are the metadata and tags as JSON (NULL without SQLite's JSON
# functions: read from their rows then), 12 the spans as JSON.
_TRACE_SELECT_PLAIN = select_columns("NULL", "NULL")
_LOAD_TRACES_PLAIN = f"SELECT {_TRACE_SELECT_PLAIN} FROM traces t WHERE t.trace_id IN ({{marks}})"  # noqa: S608
# The JSON copies in the trace's row, or its key/value rows gathered (the dialect's).
TRACE_SELECT = select_columns(SQLITE.metadata_json, SQLITE.tags_json)
_LOAD_TRACES = f"SELECT {TRACE_SELECT} FROM traces t WHERE t.trace_id IN ({{marks}})"  # noqa: S608
_LOAD_SPANS = (
    f"SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id IN ({{marks}}) "  # noqa: S608
    "ORDER BY start_ns, rowid"
)

# Binding None costs the sqlite3 module an adapter lookup that raises and swallows an
# AttributeError (about 250 ns, with the GIL held, so the app pays for it). Rows carry
# 0 instead of None in the text columns that are often NULL; ``nullif(?,0)`` turns it
# back into NULL. A real value there is always a str, never the integer 0.
_NULL = 0
_N = "nullif(?,0)"
_INSERT_TRACE = (
    "INSERT OR REPLACE INTO traces (trace_id, request_time, end_time, execution_time_ms, "  # noqa: S608
    "state, name, user_id, session_id, client_request_id, request_preview, response_preview, "
    "root_span_id, metadata, tags, spans) "
    f"VALUES (?,?,?,?,?,?,{_N},{_N},{_N},{_N},{_N},?,{_N},{_N},?)"
)
# A trace with LLM calls also fills its totals; other traces leave them NULL and
# bind nothing more.
_INSERT_LLM_TRACE = (
    "INSERT OR REPLACE INTO traces (trace_id, request_time, end_time, execution_time_ms, "  # noqa: S608
    "state, name, user_id, session_id, client_request_id, request_preview, response_preview, "
    "root_span_id, metadata, tags, spans, input_tokens, output_tokens, total_tokens, cost, "
    "llm_calls, unpriced_calls) "
    f"VALUES (?,?,?,?,?,?,{_N},{_N},{_N},{_N},{_N},?,{_N},{_N},?,?,?,?,?,?,?)"
)
# Only constant column lists are interpolated; values are always bound.
_INSERT_SPAN = (
    f"INSERT OR REPLACE INTO spans ({SPAN_COLUMNS}) "  # noqa: S608
    f"VALUES (?,?,{_N},?,?,?,?,?,{_N},{_N},{_N},{_N},{_N})"
)
_INSERT_LLM_SPAN = (
    f"INSERT OR REPLACE INTO spans ({SPAN_COLUMNS}, model, provider, input_tokens, "  # noqa: S608
    "output_tokens, total_tokens, cost, llm) "
    f"VALUES (?,?,{_N},?,?,?,?,?,{_N},{_N},{_N},{_N},{_N},?,?,?,?,?,?,?)"
)
# Totals again after spans arrived late (rare): from the spans table's rows.
_TRACE_SPAN_ATTRIBUTES = "SELECT span_id, parent_id, attributes FROM spans WHERE trace_id = ?"
_SET_SPAN_LLM = "UPDATE spans SET llm = ? WHERE trace_id = ? AND span_id = ?"
_SET_TRACE_LLM = (
    "UPDATE traces SET input_tokens = ?, output_tokens = ?, total_tokens = ?, cost = ?, "
    "llm_calls = ?, unpriced_calls = ? WHERE trace_id = ?"
)
_TRACE_METADATA_JSON = "SELECT metadata FROM traces WHERE trace_id = ?"
_SET_TRACE_METADATA_JSON = "UPDATE traces SET metadata = ? WHERE trace_id = ?"
_INSERT_METADATA = "INSERT OR REPLACE INTO trace_metadata (trace_id, key, value) VALUES (?,?,?)"
# A trace's metadata (about ten keys) as one JSON object that SQLite unpacks: two
# bound values instead of thirty, and SQLite's JSON parsing runs without the GIL.
_INSERT_METADATA_JSON = (
    "WITH t(trace_id, metadata) AS (VALUES (?,?)) "
    "INSERT OR REPLACE INTO trace_metadata (trace_id, key, value) "
    "SELECT t.trace_id, j.key, j.value FROM t, json_each(t.metadata) AS j "
    "WHERE j.key NOT IN ('mlflow.trace.user', 'mlflow.trace.session')"
)
_INSERT_TAG = "INSERT OR REPLACE INTO trace_tags (trace_id, key, value) VALUES (?,?,?)"
_DELETE_TAG = "DELETE FROM trace_tags WHERE trace_id = ? AND key = ?"
# A tag changed after the trace was written: readers go back to the key/value rows.
_STALE_TAGS = "UPDATE traces SET tags = NULL WHERE trace_id = ?"
# Schema 1 -> 2: the JSON copies, and three indexes that gained trace_id (dropped
# here, built again by _SCHEMA: a few seconds on a million traces, once).
_MIGRATIONS = {
    1: (
        "ALTER TABLE traces ADD COLUMN metadata TEXT",
        "ALTER TABLE traces ADD COLUMN tags TEXT",
        "DROP INDEX IF EXISTS traces_request_time",
        "DROP INDEX IF EXISTS traces_user",
        "DROP INDEX IF EXISTS traces_session",
    ),
    # Schema 2 -> 3: a trace's spans as one JSON array in its row. Older rows keep
    # NULL there and their content in the spans table.
    2: ("ALTER TABLE traces ADD COLUMN spans TEXT",),
    # Schema 3 -> 4: LLM totals on traces, an LLM call's numbers on spans (NULL on
    # older rows: they are traces without known LLM calls). The indexes are partial,
    # so building them on an old file finds nothing to index.
    3: (
        *(
            f"ALTER TABLE traces ADD COLUMN {column}"
            for column in (
                "input_tokens INTEGER",
                "output_tokens INTEGER",
                "total_tokens INTEGER",
                "cost REAL",
                "llm_calls INTEGER",
                "unpriced_calls INTEGER",
            )
        ),
        *(
            f"ALTER TABLE spans ADD COLUMN {column}"
            for column in (
                "model TEXT",
                "provider TEXT",
                "input_tokens INTEGER",
                "output_tokens INTEGER",
                "total_tokens INTEGER",
                "cost REAL",
                "llm INTEGER",
            )
        ),
    ),
    # Schema 4 -> 5: the assessments table, which _SCHEMA creates.
    4: (),
}
_TRACE_SPANS = "SELECT spans FROM traces WHERE trace_id = ?"
_ASSESSMENTS_FOR_JSON = _assess.BY_TRACE.format(marks="SELECT value FROM json_each(?)")
_SET_TRACE_SPANS = "UPDATE traces SET spans = ? WHERE trace_id = ?"

# The writer inserts many rows per statement. The sqlite3 module releases the GIL for
# every statement step and must win it back after; ``executemany`` steps once per row,
# and while the app thread is busy in Python each re-acquisition can wait a whole
# switch interval (5 ms). That starved the writer whenever the app was busy (about
# 1,700 traces/s against 6,000 in one statement per 512 rows, same CPU per row).
# Chunks are powers of two so that a handful of prepared statements serve any batch.
_MAX_ROWS = 512
_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


@functools.lru_cache(maxsize=64)
def _multi_row(insert: str, rows: int) -> str:
    """``insert`` with the row after its ``VALUES`` repeated ``rows`` times."""
    start = insert.index("VALUES (") + len("VALUES ")
    depth = 0
    for end in range(start, len(insert)):
        depth += {"(": 1, ")": -1}.get(insert[end], 0)
        if depth == 0:
            break
    return insert[:start] + ",".join([insert[start : end + 1]] * rows) + insert[end + 1 :]


@functools.lru_cache(maxsize=1)
def _has_json() -> bool:
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT key FROM json_each('{}')")
    except sqlite3.OperationalError:  # an SQLite built without JSON functions
        return False
    return True


def _insert_rows(conn: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
    total = len(rows)
    limit = min(_MAX_ROWS, _MAX_VARIABLES // len(rows[0]))
    start = 0
    while start < total:
        n = 1 << (min(limit, total - start).bit_length() - 1)
        params: list[Any] = []
        for row in rows[start : start + n]:
            params += row  # twice as fast as itertools.chain here
        conn.execute(_multi_row(insert, n), params)
        start += n


class SQLiteStore:
    """Reads and writes traces in one SQLite file; safe to share between threads."""

    dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(Path(path))
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._pid = os.getpid()

    # -- connections --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        if not self._schema_ready:
            self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer sessiontrace (schema {version}); "
                    "upgrade sessiontrace to read it"
                )
            if version < SCHEMA_VERSION:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Read again under the write lock: another process may have migrated.
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    exists = conn.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'traces'"
                    ).fetchone()
                    if exists and version < SCHEMA_VERSION:
                        for step in range(max(version, 1), SCHEMA_VERSION):
                            for statement in _MIGRATIONS[step]:
                                conn.execute(statement)
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            self._schema_ready = True

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            register_functions(conn)  # RLIKE's REGEXP, once per connection
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's read connection (for the search and analytics modules)."""
        return self._read_conn()

    def after_fork(self) -> None:
        # Never use (or close) a connection opened by the parent process.
        self._writer = None
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None

    # -- writing (pipeline thread) ---------------------------------------------------

    def export(self, items: Sequence[Any]) -> None:
        rows = build_rows(items, null=_NULL, metadata_json=_has_json())
        try:
            self._write_rows(rows)
        except UnicodeEncodeError:
            # A lone surrogate (e.g. half an emoji from a truncated byte stream) cannot
            # be stored as UTF-8. Rare, so only this path pays for the clean-up.
            self._write_rows(rows.cleaned())

    def _write_rows(self, rows: Rows) -> None:
        try:
            conn = self._writer
            if conn is None or self._pid != os.getpid():
                conn = self._writer = self._connect()
                self._pid = os.getpid()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rows.trace_rows:
                    _insert_rows(conn, _INSERT_TRACE, rows.trace_rows)
                if rows.llm_trace_rows:
                    _insert_rows(conn, _INSERT_LLM_TRACE, rows.llm_trace_rows)
                span_rows, llm_span_rows = rows.span_rows, rows.llm_span_rows
                if rows.late:
                    for row in _add_late_spans(conn, rows.late):
                        if len(row) == SPAN_ROW_LENGTH:
                            span_rows = [*span_rows, row]
                        else:
                            llm_span_rows = [*llm_span_rows, row]
                if span_rows:
                    _insert_rows(conn, _INSERT_SPAN, span_rows)
                if llm_span_rows:
                    _insert_rows(conn, _INSERT_LLM_SPAN, llm_span_rows)
                if rows.metadata_rows:
                    json_rows = len(rows.metadata_rows[0]) == 2
                    insert = _INSERT_METADATA_JSON if json_rows else _INSERT_METADATA
                    _insert_rows(conn, insert, rows.metadata_rows)
                if rows.tag_rows:
                    _insert_rows(conn, _INSERT_TAG, rows.tag_rows)
                if rows.tag_deletes:
                    conn.executemany(_DELETE_TAG, rows.tag_deletes)
                if rows.tag_ops:
                    conn.executemany(_STALE_TAGS, [(tid,) for tid in rows.tag_ops])
                for tid in rows.recompute:  # last: after this batch's metadata rows
                    _recompute_llm(conn, tid)
                for change in rows.assessments:
                    _assess.apply(conn.execute, change)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            # Locked, busy, read-only, disk full, cannot open: may pass; keep the batch.
            self._drop_writer()
            raise RetryableExportError(str(exc)) from exc

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
        self._writer = None

    # -- tags on logged traces (caller's thread) --------------------------------------

    def set_tag(self, trace_id: str, key: str, value: str) -> None:
        conn = self._read_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if (
                conn.execute("SELECT 1 FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
                is None
            ):
                raise TraceNotFoundError(trace_id)
            conn.execute(_INSERT_TAG, (trace_id, key, value))
            conn.execute(_STALE_TAGS, (trace_id,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def delete_tag(self, trace_id: str, key: str) -> None:
        conn = self._read_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if (
                conn.execute("SELECT 1 FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
                is None
            ):
                raise TraceNotFoundError(trace_id)
            conn.execute(_DELETE_TAG, (trace_id, key))
            conn.execute(_STALE_TAGS, (trace_id,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- assessments (caller's thread) ------------------------------------------------

    def _in_transaction(self, work: Callable[[_assess.Execute], _T]) -> _T:
        conn = self._read_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn.execute)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def put_assessment(self, a: Assessment, *, dedupe_key: str | None = None) -> Assessment:
        """Insert ``a`` (given an id when it has none); with ``dedupe_key``, change the
        assessment already stored under that key instead, if there is one."""
        return self._in_transaction(lambda execute: _assess.put(execute, a, dedupe_key))

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment:
        return _assess.get(self._read_conn().execute, trace_id, assessment_id)

    def update_assessment(self, trace_id: str, assessment_id: str, **changes: Any) -> Assessment:
        return self._in_transaction(
            lambda execute: _assess.update(execute, trace_id, assessment_id, changes)
        )

    def override_assessment(self, trace_id: str, old_id: str, new: Assessment) -> Assessment:
        return self._in_transaction(
            lambda execute: _assess.override(execute, trace_id, old_id, new)
        )

    def delete_assessment(self, trace_id: str, assessment_id: str) -> None:
        self._in_transaction(lambda execute: _assess.delete(execute, trace_id, assessment_id))

    def assessments_for(self, trace_ids: Sequence[str]) -> dict[str, list[Assessment]]:
        """The assessments of these traces (those with none are left out), oldest first."""
        if not trace_ids:
            return {}
        conn = self._read_conn()
        if _has_json():
            # The ids as one JSON array: binding a page's hundred ids one by one
            # cost about twice the whole query.
            return _assess.by_trace(conn.execute(_ASSESSMENTS_FOR_JSON, (dumps(list(trace_ids)),)))
        rows: list[Any] = []
        for chunk in chunks(trace_ids, 500):
            rows += conn.execute(_assess.BY_TRACE.format(marks=",".join("?" * len(chunk))), chunk)
        return _assess.by_trace(rows)

    def trace_owner(self, trace_id: str) -> tuple[str | None, str | None] | None:
        row = self._read_conn().execute(_assess.TRACE_OWNER, (trace_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    # -- reading ------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> Trace | None:
        traces = self.load_traces([trace_id], include_spans=True)
        return traces[0] if traces else None

    def load_traces(self, trace_ids: Sequence[str], *, include_spans: bool = True) -> list[Trace]:
        """Load whole traces by id, in the order given; unknown ids are skipped."""
        conn = self._read_conn()
        select = _LOAD_TRACES if _has_json() else _LOAD_TRACES_PLAIN
        rows: list[Sequence[Any]] = []
        for chunk in chunks(trace_ids, 500):
            rows += conn.execute(select.format(marks=",".join("?" * len(chunk))), chunk)
        found = {row[0]: row for row in rows}
        return self.traces_from_rows(
            [found[tid] for tid in trace_ids if tid in found],
            include_spans=include_spans,
        )

    def trace_select(self) -> str:
        """The columns ``traces_from_rows`` reads, for a query on ``traces t``."""
        return TRACE_SELECT if _has_json() else _TRACE_SELECT_PLAIN

    def traces_from_rows(
        self, rows: Sequence[Sequence[Any]], *, include_spans: bool = True
    ) -> list[Trace]:
        """Traces from rows of ``trace_select()`` (extra trailing columns are ignored),
        in their order, with their spans."""
        infos = [info_from_row(row) for row in rows]
        conn = self._read_conn()
        if not _has_json():
            for chunk in chunks([info.trace_id for info in infos], 500):
                _add_metadata_and_tags(conn, ",".join("?" * len(chunk)), chunk, infos)

        def span_rows(trace_ids: list[str]) -> Iterator[tuple[Any, ...]]:
            for chunk in chunks(trace_ids, 500):
                yield from conn.execute(_LOAD_SPANS.format(marks=",".join("?" * len(chunk))), chunk)

        if infos:
            found = self.assessments_for([info.trace_id for info in infos])
            for info in infos:
                info.assessments = found.get(info.trace_id, [])
        return traces_from_rows(rows, infos, include_spans=include_spans, span_rows=span_rows)

    def list_trace_ids(self, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Trace ids, newest first."""
        rows = self._read_conn().execute(
            "SELECT trace_id FROM traces ORDER BY request_time DESC, trace_id DESC "
            "LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )
        return [r[0] for r in rows]

    def count_traces(self) -> int:
        row = self._read_conn().execute("SELECT count(*) FROM traces").fetchone()
        return int(row[0])


def _recompute_llm(conn: sqlite3.Connection, trace_id: str) -> None:
    """A trace's LLM totals again, from all its span rows (late spans included), so
    that spans ending after their trace was written, or delivered twice, leave them
    exact. Rare: a read of the trace's span rows and a few updates."""
    totals = totals_from_span_rows(conn.execute(_TRACE_SPAN_ATTRIBUTES, (trace_id,)))
    if totals is None:
        return
    conn.executemany(_SET_SPAN_LLM, [(flag, trace_id, sid) for sid, flag in totals.counted.items()])
    conn.execute(
        _SET_TRACE_LLM,
        (*trace_llm_values(totals), trace_id),
    )
    found = conn.execute(_TRACE_METADATA_JSON, (trace_id,)).fetchone()
    if found is None:
        return
    updates = with_llm_metadata({}, totals)
    if found[0] is not None:
        md = loads_strings(found[0])
        md.update(updates)
        conn.execute(_SET_TRACE_METADATA_JSON, (dumps(md), trace_id))
    for key, value in updates.items():
        conn.execute(_INSERT_METADATA, (trace_id, key, value))


def _add_late_spans(conn: sqlite3.Connection, late: list[tuple[Any, ...]]) -> list[Any]:
    """Put spans that ended after their trace was written into its spans array;
    their rows for the spans table (without content where the array has it).

    Rare (a child outliving its root), so a read and a rewrite of the array each.
    A span already there (a batch delivered twice) is replaced, as its row is.
    """
    rows = []
    for text, full, stripped in late:
        trace_id, span_id = full[0], full[1]
        found = conn.execute(_TRACE_SPANS, (trace_id,)).fetchone()
        if found is None or found[0] is None:  # no trace row, or one from schema 2
            rows.append(full)
            continue
        kept = [dumps(s) for s in loads_marked(found[0]) if s.get("span_id") != span_id]
        conn.execute(_SET_TRACE_SPANS, (dumps_marked_array([*kept, text]), trace_id))
        rows.append(stripped)
    return rows


def _add_metadata_and_tags(
    conn: sqlite3.Connection, marks: str, chunk: list[str], info_list: list[TraceInfo]
) -> None:
    # Without SQLite's JSON functions: a row per key.
    infos = {info.trace_id: info for info in info_list}
    for tid, key, value in conn.execute(
        f"SELECT trace_id, key, value FROM trace_metadata WHERE trace_id IN ({marks})",  # noqa: S608
        chunk,
    ):
        if tid in infos:
            infos[tid].trace_metadata[key] = value
    for tid, key, value in conn.execute(
        f"SELECT trace_id, key, value FROM trace_tags WHERE trace_id IN ({marks})",  # noqa: S608
        chunk,
    ):
        if tid in infos:
            infos[tid].tags[key] = value
