"""Until ``PostgresStore`` is merged: the contract's schema, a copy of a SQLite
store's rows, and a read-only stand-in that answers the search and analytics
readers the way the contract says the real store's connection does.

Temporary (issue 12): once ``sessiontrace._store._postgres`` exists, the
differential tests open the real store and this module keeps only ``copy_rows``.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.numeric import NumericLoader

from sessiontrace._entities import Trace, TraceData, lazy_trace_data
from sessiontrace._store._dialect import POSTGRES
from sessiontrace._store._rows import LLM_COLUMNS, TRACE_COLUMNS, info_from_row

# The contract's schema (version 4), verbatim.
SCHEMA = """
CREATE TABLE sessiontrace_schema (version integer NOT NULL);
INSERT INTO sessiontrace_schema VALUES (4);
CREATE TABLE traces (
    trace_id text COLLATE "C" PRIMARY KEY,
    request_time bigint NOT NULL, end_time bigint, execution_time_ms double precision,
    state text NOT NULL, name text, user_id text COLLATE "C", session_id text COLLATE "C",
    client_request_id text COLLATE "C", request_preview text, response_preview text,
    root_span_id text,
    input_tokens bigint, output_tokens bigint, total_tokens bigint,
    cost double precision, llm_calls bigint, unpriced_calls bigint,
    metadata text, tags text, spans text
);
CREATE INDEX traces_request_time ON traces (request_time, trace_id);
CREATE INDEX traces_user ON traces (user_id, request_time, trace_id) WHERE user_id IS NOT NULL;
CREATE INDEX traces_session ON traces (session_id, request_time, trace_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX traces_client_request ON traces (client_request_id)
    WHERE client_request_id IS NOT NULL;
CREATE INDEX traces_total_tokens ON traces (total_tokens) WHERE total_tokens IS NOT NULL;
CREATE INDEX traces_cost ON traces (cost) WHERE cost IS NOT NULL;
CREATE TABLE trace_metadata (trace_id text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL, PRIMARY KEY (trace_id, key));
CREATE INDEX trace_metadata_key_value ON trace_metadata (key, value, trace_id);
CREATE TABLE trace_tags (trace_id text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL, PRIMARY KEY (trace_id, key));
CREATE INDEX trace_tags_key_value ON trace_tags (key, value, trace_id);
CREATE TABLE spans (
    trace_id text COLLATE "C" NOT NULL, span_id text COLLATE "C" NOT NULL, parent_id text,
    name text NOT NULL, span_type text NOT NULL, start_ns bigint NOT NULL, end_ns bigint,
    status text NOT NULL, model text COLLATE "C", provider text COLLATE "C",
    input_tokens bigint, output_tokens bigint, total_tokens bigint, cost double precision,
    llm integer, status_message text, inputs text, outputs text, attributes text, events text,
    PRIMARY KEY (trace_id, span_id));
CREATE INDEX spans_model ON spans (model, provider) WHERE llm IS NOT NULL;
"""
TABLES = ("traces", "trace_metadata", "trace_tags", "spans")


def create_schema(uri: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


def copy_rows(sqlite_path: str, uri: str) -> None:
    """Every row of the SQLite store's four tables, into PostgreSQL's (same columns)."""
    source = sqlite3.connect(sqlite_path)
    try:
        with psycopg.connect(uri) as conn, conn.cursor() as cur:
            for table in TABLES:
                columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
                names = ", ".join(columns)
                rows = source.execute(f"SELECT {names} FROM {table}").fetchall()
                marks = ", ".join(["%s"] * len(columns))
                if rows:
                    cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    finally:
        source.close()


class _NumberLoader(NumericLoader):
    """numeric (sum(bigint), avg) as int when integral, else float: the contract's rule."""

    def load(self, data: Any) -> Any:
        value: Decimal = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite-style SQL for psycopg: ``%`` -> ``%%``, ``:name`` -> ``%(name)s``,
    ``?`` -> ``%s``; ``::type`` casts stay."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


class StandInConnection:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> psycopg.Cursor[Any]:
        return self.conn.execute(translate(sql), parameters)


class StandInStore:
    """Reads only: what search and analytics call."""

    dialect = POSTGRES

    def __init__(self, uri: str, *, timezone: str | None = None) -> None:
        self.conn = psycopg.connect(uri, autocommit=True)
        self.conn.adapters.register_loader("numeric", _NumberLoader)
        if timezone is not None:
            self.conn.execute("SELECT set_config('TimeZone', %s, false)", (timezone,))
        self._connection = StandInConnection(self.conn)

    def connection(self) -> StandInConnection:
        return self._connection

    def trace_select(self) -> str:
        d = self.dialect
        columns = ", ".join(f"t.{c}" for c in TRACE_COLUMNS.split(", "))
        return f"{columns}, {d.metadata_json}, {d.tags_json}, t.spans, {LLM_COLUMNS}"

    def traces_from_rows(
        self, rows: Sequence[Sequence[Any]], *, include_spans: bool = True
    ) -> list[Trace]:
        traces = []
        for row in rows:
            info = info_from_row(row)
            assert row[12] is not None  # every trace here has its spans in its row
            data = lazy_trace_data(info.trace_id, row[12]) if include_spans else TraceData([])
            traces.append(Trace(info, data))
        return traces

    def close(self) -> None:
        self.conn.close()
