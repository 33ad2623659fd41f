"""The PostgreSQL store: many app instances writing one database.

The same four tables as the SQLite store (schema 4), with ``COLLATE "C"`` on ids,
keys and values so that ordering and ``LIKE 'prefix%'`` behave as SQLite's BINARY.
The JSON copies (metadata, tags, spans) are ``text``, not ``jsonb``: their bytes are
kept as written (key order, duplicate keys, the inexact-JSON marks).

Writes come from the pipeline's writer thread on one connection per process, one
transaction per batch. A batch of new traces (the common case) is a binary COPY
straight into the tables. When that meets a row already there (the ingest server
and OTLP may resend) or a trace twice in the batch, or the batch carries late spans
or tag changes, the batch goes through temporary staging tables instead: binary
COPY, then one ``INSERT ... SELECT DISTINCT ON (key) ... ORDER BY key ... ON
CONFLICT DO UPDATE`` per table, which keeps the last of two versions and takes row
locks in key order so that concurrent writers wait for each other, never deadlock.
Reads use one autocommit connection per thread, as the SQLite store does (a pool
measured 7-10 us more per query here); SQL written in SQLite's parameter style is
translated once per text.

psycopg is imported by this module only; ``sessiontrace`` imports it when a
``postgresql://`` tracking URI is used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.adapt import Buffer, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.numeric import NumericBinaryLoader

from .._assessments import Assessment
from .._config import redact_uri
from .._entities import Trace
from .._pipeline import RetryableExportError
from .._serialize import dumps, dumps_marked_array, loads_marked, loads_strings
from . import _assess
from ._assess import assessments_ddl
from ._dialect import POSTGRES, Dialect
from ._rows import (
    SPAN_COLUMNS,
    SPAN_LLM_COLUMNS,
    SPAN_ROW_LENGTH,
    TRACE_LLM_COLUMNS,
    TRACE_ROW_COLUMNS,
    Rows,
    TraceNotFoundError,
    build_rows,
    info_from_row,
    select_columns,
    totals_from_span_rows,
    trace_llm_values,
    traces_from_rows,
    with_llm_metadata,
)

__all__ = ["SCHEMA_VERSION", "TRACE_SELECT", "PostgresConnection", "PostgresStore"]

SCHEMA_VERSION = 5

_T = TypeVar("_T")

# pg_advisory_xact_lock key for creating and migrating the schema: any constant
# other software is unlikely to pick ("sessiont" in ASCII).
_SCHEMA_LOCK = 0x73657373696F6E74

_SCHEMA = """
CREATE TABLE sessiontrace_schema (version integer NOT NULL);
CREATE TABLE traces (
    trace_id text COLLATE "C" PRIMARY KEY,
    request_time bigint NOT NULL,
    end_time bigint,
    execution_time_ms double precision,
    state text NOT NULL,
    name text,
    user_id text COLLATE "C",
    session_id text COLLATE "C",
    client_request_id text COLLATE "C",
    request_preview text,
    response_preview text,
    root_span_id text,
    input_tokens bigint,
    output_tokens bigint,
    total_tokens bigint,
    cost double precision,
    llm_calls bigint,
    unpriced_calls bigint,
    metadata text,
    tags text,
    spans text
);
CREATE INDEX traces_request_time ON traces (request_time, trace_id);
CREATE INDEX traces_user ON traces (user_id, request_time, trace_id) WHERE user_id IS NOT NULL;
CREATE INDEX traces_session ON traces (session_id, request_time, trace_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX traces_client_request ON traces (client_request_id)
    WHERE client_request_id IS NOT NULL;
CREATE INDEX traces_total_tokens ON traces (total_tokens) WHERE total_tokens IS NOT NULL;
CREATE INDEX traces_cost ON traces (cost) WHERE cost IS NOT NULL;
CREATE TABLE trace_metadata (
    trace_id text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_id, key)
);
-- trace_id in the index: the correlated EXISTS of a metadata filter is index-only
-- (SQLite's WITHOUT ROWID tables carry it implicitly, PostgreSQL's do not)
CREATE INDEX trace_metadata_key_value ON trace_metadata (key, value, trace_id);
CREATE TABLE trace_tags (
    trace_id text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_id, key)
);
CREATE INDEX trace_tags_key_value ON trace_tags (key, value, trace_id);
CREATE TABLE spans (
    trace_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    parent_id text,
    name text NOT NULL,
    span_type text NOT NULL,
    start_ns bigint NOT NULL,
    end_ns bigint,
    status text NOT NULL,
    model text COLLATE "C",
    provider text COLLATE "C",
    input_tokens bigint,
    output_tokens bigint,
    total_tokens bigint,
    cost double precision,
    llm integer,
    status_message text,
    inputs text,
    outputs text,
    attributes text,
    events text,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX spans_model ON spans (model, provider) WHERE llm IS NOT NULL
"""
# Feedback and expectations (schema 5): see _assess.
_ASSESSMENTS_DDL = tuple(assessments_ddl("text", ' COLLATE "C"'))
_SCHEMA_STATEMENTS = (*_SCHEMA.split(";"), *_ASSESSMENTS_DDL)
# Steps from an older PostgreSQL schema (this store started at version 4), run under
# the schema lock: 4 -> 5 adds the assessments table.
_MIGRATIONS: dict[int, tuple[str, ...]] = {4: _ASSESSMENTS_DDL}

# -- reading ----------------------------------------------------------------------------

# The JSON copies in the trace's row, or (NULL there: tags changed since the trace
# was written) the key/value rows gathered in key order, as SQLite's primary key
# gives them (the dialect's).
TRACE_SELECT = select_columns(POSTGRES.metadata_json, POSTGRES.tags_json)
# One statement for any number of ids: the list is bound as one array.
_LOAD_TRACES = f"SELECT {TRACE_SELECT} FROM traces t WHERE t.trace_id = ANY(%s)"  # noqa: S608
_LOAD_SPANS = (
    f"SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ANY(%s) "  # noqa: S608
    "ORDER BY start_ns, span_id"
)
_ASSESSMENTS_FOR = _assess.BY_TRACE.replace("IN ({marks})", "= ANY(%s)")

# -- writing ----------------------------------------------------------------------------

_TRACE_COLUMN_LIST = TRACE_ROW_COLUMNS.split(", ") + TRACE_LLM_COLUMNS.split(", ")
_SPAN_COLUMN_LIST = SPAN_COLUMNS.split(", ") + SPAN_LLM_COLUMNS.split(", ")
_TYPES = {
    "request_time": "int8",
    "end_time": "int8",
    "execution_time_ms": "float8",
    "start_ns": "int8",
    "end_ns": "int8",
    "input_tokens": "int8",
    "output_tokens": "int8",
    "total_tokens": "int8",
    "cost": "float8",
    "llm_calls": "int8",
    "unpriced_calls": "int8",
    "llm": "int4",
}


class _Table:
    """A table the writer upserts through a staging table, and its statements."""

    def __init__(self, name: str, columns: list[str], key: tuple[str, ...]) -> None:
        self.name = name
        self.stage = f"sessiontrace_stage_{name}"
        self.columns = columns
        self.types = [_TYPES.get(c, "text") for c in columns]
        key_list = ", ".join(key)
        # Only constant names are put into these statements; every value is bound or
        # copied.
        self.create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {name}) ON COMMIT DELETE ROWS; "
            f"ALTER TABLE {self.stage} ADD COLUMN IF NOT EXISTS "
            "sessiontrace_ord bigint GENERATED ALWAYS AS IDENTITY"
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        column_list = ", ".join(columns)
        # DISTINCT ON keeps one row a key, the last staged (a batch may hold two
        # versions of a trace); ORDER BY key takes the row locks in the same order in
        # every writer, so two writers of overlapping batches wait, never deadlock.
        self.upsert = (
            f"INSERT INTO {name} ({column_list}) "  # noqa: S608
            f"SELECT DISTINCT ON ({key_list}) {column_list} FROM {self.stage} "
            f"ORDER BY {key_list}, sessiontrace_ord DESC "
            f"ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
        )

    def copy_sql(self, target: str, width: int) -> str:
        return f"COPY {target} ({', '.join(self.columns[:width])}) FROM STDIN (FORMAT BINARY)"


_TRACES = _Table("traces", _TRACE_COLUMN_LIST, ("trace_id",))
_SPANS = _Table("spans", _SPAN_COLUMN_LIST, ("trace_id", "span_id"))
_METADATA = _Table("trace_metadata", ["trace_id", "key", "value"], ("trace_id", "key"))
_TAGS = _Table("trace_tags", ["trace_id", "key", "value"], ("trace_id", "key"))
_ALL_TABLES = (_TRACES, _SPANS, _METADATA, _TAGS)

_TRACE_SPANS_FOR_UPDATE = "SELECT spans FROM traces WHERE trace_id = %s FOR UPDATE"
_SET_TRACE_SPANS = "UPDATE traces SET spans = %s WHERE trace_id = %s"
_DELETE_TAG = "DELETE FROM trace_tags WHERE trace_id = %s AND key = %s"
# A tag changed after the trace was written: readers go back to the key/value rows.
_STALE_TAGS = "UPDATE traces SET tags = NULL WHERE trace_id = ANY(%s)"
_UPSERT_TAG = (
    "INSERT INTO trace_tags (trace_id, key, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (trace_id, key) DO UPDATE SET value = EXCLUDED.value"
)
_UPSERT_METADATA = (
    "INSERT INTO trace_metadata (trace_id, key, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (trace_id, key) DO UPDATE SET value = EXCLUDED.value"
)
# Totals again after spans arrived late (rare): from the spans table's rows, in the
# order SQLite's (trace_id, span_id) index reads them.
_TRACE_SPAN_ATTRIBUTES = (
    "SELECT span_id, parent_id, attributes FROM spans WHERE trace_id = %s ORDER BY span_id"
)
_SET_SPAN_LLM = "UPDATE spans SET llm = %s WHERE trace_id = %s AND span_id = %s"
_SET_TRACE_LLM = (
    "UPDATE traces SET input_tokens = %s, output_tokens = %s, total_tokens = %s, cost = %s, "
    "llm_calls = %s, unpriced_calls = %s WHERE trace_id = %s RETURNING metadata"
)
_SET_TRACE_METADATA_JSON = "UPDATE traces SET metadata = %s WHERE trace_id = %s"


def _unpack(table: str, column: str, *, skip: str = "", upsert: bool) -> str:
    """The key/value rows of the traces ``= ANY(%s)``, from their rows' JSON ``column``.
    Upserting: one row a key (the last of duplicate keys), in key order, so that
    writers take row locks in the same order."""
    pick, order, conflict = "", "", ""
    if upsert:
        pick = "DISTINCT ON (t.trace_id, j.key) "
        order = " ORDER BY t.trace_id, j.key, j.n DESC"
        conflict = " ON CONFLICT (trace_id, key) DO UPDATE SET value = EXCLUDED.value"
    return (
        f"INSERT INTO {table} (trace_id, key, value) "  # noqa: S608
        f"SELECT {pick}t.trace_id, j.key, j.value FROM traces t, "
        f"json_each_text(t.{column}::json) WITH ORDINALITY AS j(key, value, n) "
        f"WHERE t.trace_id = ANY(%s) AND t.{column} <> '{{}}'{skip}{order}{conflict}"
    )


_ID_KEYS_SKIP = " AND j.key NOT IN ('mlflow.trace.user', 'mlflow.trace.session')"
_UNPACK = {
    upsert: (
        _unpack("trace_metadata", "metadata", skip=_ID_KEYS_SKIP, upsert=upsert),
        _unpack("trace_tags", "tags", upsert=upsert),
    )
    for upsert in (False, True)
}


# -- result types -----------------------------------------------------------------------


class _NumericLoader(Loader):
    """``numeric`` (what ``sum(bigint)`` and ``avg`` return) as SQLite gives it: an
    ``int`` when it has no fractional digits, else a ``float``; never ``Decimal``."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data)
        if text.lstrip(b"-").isdigit():
            return int(text)
        return float(text)  # also NaN and +-Infinity


class _NumericBinaryLoader(NumericBinaryLoader):
    def load(self, data: Buffer) -> int | float:  # type: ignore[override]
        value = super().load(data)
        dscale = struct.unpack_from(">H", data, 6)[0]
        if dscale == 0 and value.is_finite():
            return int(value)
        return float(value)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_loader("numeric", _NumericBinaryLoader)


# -- SQLite-style parameters ------------------------------------------------------------

# Quoted literals and identifiers, comments, casts, then what is translated.
_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::|:([A-Za-z_][A-Za-z0-9_]*)|\?|%""",
    re.DOTALL,
)


def _token(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.group(1) is not None:
        return f"%({match.group(1)})s"
    if text == "?":
        return "%s"
    # psycopg reads % everywhere in the text (literals too) when values are bound.
    return text.replace("%", "%%")


@functools.lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """SQL written for sqlite3 (``:name`` with a dict, ``?`` with a sequence) in
    psycopg's style: ``%(name)s``, ``%s``, and a literal ``%`` as ``%%``. Text in
    single or double quotes, comments and ``::type`` casts are left alone
    (``E'...'`` and dollar quoting are not recognised: our SQL uses neither)."""
    return _TOKENS.sub(_token, sql)


class PostgresConnection:
    """A thread's read connection: ``execute(sql, params)`` takes SQLite's style."""

    __slots__ = ("_conn", "_store")

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any]) -> None:
        self._store = store
        self._conn = conn

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        # Always bind (even nothing): psycopg then reads %% as % in every statement.
        return self.run(to_psycopg(sql), () if params is None else params)

    def run(
        self, query: str, params: Any = (), *, prepare: bool | None = None
    ) -> psycopg.Cursor[Any]:
        """``execute`` for SQL in psycopg's own style (``prepare``: psycopg's)."""
        try:
            return self._conn.execute(query, params, prepare=prepare)
        except psycopg.OperationalError:
            if not self._conn.broken:
                raise
            # The server restarted or dropped this idle connection: a read in
            # autocommit is safe to send again, once, on a new one.
            self._conn = self._store._replace_reader(self._conn)
            return self._conn.execute(query, params, prepare=prepare)

    def transaction(self, work: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run ``work(conn)`` in a transaction; once more on a new connection when
        this one turns out broken (nothing of the first attempt was committed)."""
        try:
            with self._conn.transaction():
                work(self._conn)
        except psycopg.OperationalError:
            if not self._conn.broken:
                raise
            self._conn = self._store._replace_reader(self._conn)
            with self._conn.transaction():
                work(self._conn)

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection (``pipeline()``, ``transaction()``)."""
        return self._conn

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


# Connections a forked child inherited: never closed there (that would end the
# parent's session) and never collected (psycopg would warn that they were left open).
_inherited: list[Any] = []


class PostgresStore:
    """Reads and writes traces in a PostgreSQL database; safe to share between
    threads, and between processes writing the same database.

    >>> store = PostgresStore("postgresql://app@db.internal/traces")

    ``prepare_threshold``: psycopg prepares a statement on a connection after this
    many runs (``None``: never, as PgBouncer in transaction mode needs).
    ``max_readers``: read connections of finished threads kept for threads that
    come later (each live thread that reads has its own). ``copy_first=False``
    always upserts through the staging tables instead of trying a plain COPY first.
    """

    dialect: Dialect = POSTGRES

    def __init__(
        self,
        uri: str,
        *,
        max_readers: int = 4,
        prepare_threshold: int | None = 5,
        copy_first: bool = True,
    ) -> None:
        if max_readers < 0:
            raise ValueError("max_readers must be >= 0")
        try:
            self._params = conninfo_to_dict(uri)
        except psycopg.ProgrammingError:
            # libpq's message can quote the URI, password included
            raise ValueError(f"not a PostgreSQL URI: {redact_uri(uri)!r}") from None
        self.uri = uri
        self._max_readers = max_readers
        self._prepare_threshold = prepare_threshold
        self._copy_first = copy_first
        self._writer: psycopg.Connection[Any] | None = None
        self._readers: dict[int, tuple[threading.Thread, PostgresConnection]] = {}
        self._idle: list[PostgresConnection] = []
        self._readers_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_uri(self.uri)!r})"

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {}
        if "connect_timeout" not in self._params:
            # A host that does not answer holds the writer thread (and callers waiting
            # for room in the queue) no longer than this; the URI may say otherwise.
            options["connect_timeout"] = 10
        conn = psycopg.connect(
            self.uri, autocommit=True, prepare_threshold=self._prepare_threshold, **options
        )
        try:
            _configure(conn)
            if not self._schema_ready:
                self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            with conn.transaction():
                # Several instances starting at once: one creates, the others wait here
                # and then find the schema made (PostgreSQL's DDL is transactional).
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                found = conn.execute("SELECT to_regclass('sessiontrace_schema')").fetchone()
                version = 0
                if found is not None and found[0] is not None:
                    row = conn.execute("SELECT max(version) FROM sessiontrace_schema").fetchone()
                    version = 0 if row is None or row[0] is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{redact_uri(self.uri)} was written by a newer sessiontrace "
                        f"(schema {version}); "
                        "upgrade sessiontrace to read it"
                    )
                if version == 0:
                    for statement in _SCHEMA_STATEMENTS:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO sessiontrace_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                    )
                elif version < SCHEMA_VERSION:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS.get(step, ()):
                            conn.execute(statement)
                    conn.execute("UPDATE sessiontrace_schema SET version = %s", (SCHEMA_VERSION,))
            self._schema_ready = True

    def connection(self) -> PostgresConnection:
        """This thread's read connection (autocommit), for search and analytics."""
        reader = self._readers.get(threading.get_ident())
        if reader is not None and self._pid == os.getpid():
            return reader[1]
        return self._new_reader()

    def _new_reader(self) -> PostgresConnection:
        if self._pid != os.getpid():
            self.after_fork()
        with self._readers_lock:
            # Connections of threads that have finished serve the threads that come
            # later; beyond max_readers of them, they are closed.
            for key in [k for k, (t, _) in self._readers.items() if not t.is_alive()]:
                self._idle.append(self._readers.pop(key)[1])
            reader = self._idle.pop() if self._idle else None
            surplus, self._idle = self._idle[self._max_readers :], self._idle[: self._max_readers]
        for extra in surplus:
            extra.close()
        if reader is None or reader.raw.closed or reader.raw.broken:
            if reader is not None:
                reader.close()
            reader = PostgresConnection(self, self._connect())
        with self._readers_lock:
            self._readers[threading.get_ident()] = (threading.current_thread(), reader)
        return reader

    def _replace_reader(self, old: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        with contextlib.suppress(psycopg.Error):
            old.close()
        return self._connect()

    def after_fork(self) -> None:
        # Never use (or close) a connection opened by the parent process.
        _inherited.append(self._writer)
        _inherited.extend(reader for _, reader in self._readers.values())
        _inherited.extend(self._idle)
        self._writer = None
        self._readers = {}
        self._idle = []
        self._readers_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        if self._pid != os.getpid():
            self.after_fork()
            return
        self._drop_writer()
        with self._readers_lock:
            readers = [reader for _, reader in self._readers.values()] + self._idle
            self._readers, self._idle = {}, []
        for reader in readers:
            reader.close()

    # -- writing (pipeline thread) ------------------------------------------------------

    def export(self, items: Sequence[Any]) -> None:
        # The traces' metadata and tags go as the JSON copies in their rows, which
        # the server unpacks into the key/value tables: fewer rows built and copied
        # by the app's process.
        rows = build_rows(items, null=None, metadata_json=True, trace_tag_rows=False)
        try:
            self._write_rows(rows)
        except (UnicodeEncodeError, psycopg.DataError) as exc:
            # A lone surrogate (half an emoji from a truncated stream) or a NUL, which
            # PostgreSQL's text cannot hold (nor json_each_text unpack, as an escape).
            # Rare: only this path pays for key/value rows built here, cleaned.
            if isinstance(exc, psycopg.DataError) and not _is_text_error(exc):
                raise
            self._write_rows(build_rows(items, null=None, metadata_json=False).cleaned())

    def _writer_conn(self) -> psycopg.Connection[Any]:
        conn = self._writer
        if conn is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                self.after_fork()
            conn = self._connect()
            try:
                for table in _ALL_TABLES:
                    conn.execute(table.create_stage)
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return conn

    def _write_rows(self, rows: Rows) -> None:
        try:
            conn = self._writer_conn()
            with conn.transaction():
                _write(conn, rows, copy_first=self._copy_first)
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            psycopg.errors.ReadOnlySqlTransaction,
        ) as exc:
            # Server gone, connection lost, shut down, cancelled, a deadlock or
            # serialization failure (rolled back), a primary turned standby in a
            # failover (a new connection may reach the new primary): the batch may
            # pass later; keep it.
            self._drop_writer()
            raise RetryableExportError(str(exc)) from exc
        except BaseException:
            if self._writer is not None and self._writer.broken:
                self._drop_writer()
            raise

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(psycopg.Error):
                self._writer.close()
        self._writer = None

    # -- tags on logged traces (caller's thread) ----------------------------------------

    def set_tag(self, trace_id: str, key: str, value: str) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            if conn.execute(_STALE_TAGS, ([trace_id],)).rowcount == 0:
                raise TraceNotFoundError(trace_id)
            conn.execute(_UPSERT_TAG, (trace_id, key, value))

        self.connection().transaction(work)

    def delete_tag(self, trace_id: str, key: str) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            if conn.execute(_STALE_TAGS, ([trace_id],)).rowcount == 0:
                raise TraceNotFoundError(trace_id)
            conn.execute(_DELETE_TAG, (trace_id, key))

        self.connection().transaction(work)

    # -- assessments (caller's thread) ----------------------------------------------------

    def _in_transaction(self, work: Callable[[_assess.Execute], _T]) -> _T:
        result: list[_T] = []

        def run(conn: psycopg.Connection[Any]) -> None:
            result[:] = [work(lambda sql, params: conn.execute(to_psycopg(sql), params))]

        self.connection().transaction(run)
        return result[0]

    def put_assessment(self, a: Assessment, *, dedupe_key: str | None = None) -> Assessment:
        """Insert ``a`` (given an id when it has none); with ``dedupe_key``, change the
        assessment already stored under that key instead, if there is one."""
        return self._in_transaction(lambda execute: _assess.put(execute, a, dedupe_key))

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment:
        return _assess.get(self.connection().execute, trace_id, assessment_id)

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
        ids = list(trace_ids)
        if not ids:
            return {}
        # Planned for each page, never from a cached generic plan: one made for an
        # array of unknown length scanned the table (measured 5 ms against 0.5 ms).
        return _assess.by_trace(self.connection().run(_ASSESSMENTS_FOR, (ids,), prepare=False))

    def trace_owner(self, trace_id: str) -> tuple[str | None, str | None] | None:
        row = self.connection().execute(_assess.TRACE_OWNER, (trace_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    # -- reading ------------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> Trace | None:
        traces = self.load_traces([trace_id], include_spans=True)
        return traces[0] if traces else None

    def load_traces(self, trace_ids: Sequence[str], *, include_spans: bool = True) -> list[Trace]:
        """Load whole traces by id, in the order given; unknown ids are skipped."""
        ids = list(trace_ids)
        if not ids:
            return []
        found = {row[0]: row for row in self.connection().run(_LOAD_TRACES, (ids,))}
        return self.traces_from_rows(
            [found[tid] for tid in ids if tid in found], include_spans=include_spans
        )

    def trace_select(self) -> str:
        """The columns ``traces_from_rows`` reads, for a query on ``traces t``."""
        return TRACE_SELECT

    def traces_from_rows(
        self, rows: Sequence[Sequence[Any]], *, include_spans: bool = True
    ) -> list[Trace]:
        """Traces from rows of ``trace_select()`` (extra trailing columns are ignored),
        in their order, with their spans."""
        infos = [info_from_row(row) for row in rows]
        if infos:
            found = self.assessments_for([info.trace_id for info in infos])
            for info in infos:
                info.assessments = found.get(info.trace_id, [])
        return traces_from_rows(
            rows,
            infos,
            include_spans=include_spans,
            span_rows=lambda trace_ids: self.connection().run(_LOAD_SPANS, (trace_ids,)),
        )

    def list_trace_ids(self, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Trace ids, newest first."""
        rows = (
            self.connection()
            .run(
                "SELECT trace_id FROM traces ORDER BY request_time DESC, trace_id DESC "
                "LIMIT %s OFFSET %s",
                (int(limit), int(offset)),
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def count_traces(self) -> int:
        row = self.connection().run("SELECT count(*) FROM traces").fetchone()
        return 0 if row is None else int(row[0])


def _is_text_error(exc: psycopg.DataError) -> bool:
    """A NUL or a character the database's encoding cannot hold (not, say, a number
    out of range, which cleaning cannot help)."""
    return isinstance(
        exc, (psycopg.errors.CharacterNotInRepertoire, psycopg.errors.UntranslatableCharacter)
    ) or "NUL" in str(exc)


def _copy(
    conn: psycopg.Connection[Any], table: _Table, rows: list[tuple[Any, ...]], target: str
) -> None:
    width = len(rows[0])
    with conn.cursor().copy(table.copy_sql(target, width)) as copy:
        copy.set_types(table.types[:width])
        write = copy.write_row
        for row in rows:
            write(row)


def _stage(conn: psycopg.Connection[Any], table: _Table, *parts: list[tuple[Any, ...]]) -> None:
    """Copy rows into the table's staging table (a COPY per row width), then upsert."""
    staged = False
    for rows in parts:
        if rows:
            _copy(conn, table, rows, table.stage)
            staged = True
    if staged:
        conn.execute(table.upsert)


def _copy_new(conn: psycopg.Connection[Any], rows: Rows) -> bool:
    """The common batch, only new traces, copied straight into the tables: no
    staging, sort or conflict check (about 1.5x the staged upsert's rate). A trace
    already stored (a batch delivered again) or twice in the batch fails the COPY
    with a unique violation: then nothing of it is kept (a savepoint) and the
    caller upserts instead. False then, or when the batch is not that kind."""
    if rows.late or rows.tag_ops or rows.tag_deletes or rows.recompute:
        return False
    try:
        with conn.transaction():
            for table, parts in (
                (_TRACES, (rows.trace_rows, rows.llm_trace_rows)),
                (_SPANS, (rows.span_rows, rows.llm_span_rows)),
                (_METADATA, () if rows.keys_in_json else (rows.metadata_rows,)),
                (_TAGS, (rows.tag_rows,)),
            ):
                for part in parts:
                    if part:
                        _copy(conn, table, part, table.name)
            if rows.keys_in_json:
                _unpack_keys(conn, rows, upsert=False)
    except psycopg.errors.UniqueViolation:
        return False
    return True


def _write(conn: psycopg.Connection[Any], rows: Rows, *, copy_first: bool = True) -> None:
    """One batch, inside the caller's transaction; the order is SQLite's ``_write_rows``."""
    if not (copy_first and _copy_new(conn, rows)):
        _upsert(conn, rows)
    for change in rows.assessments:
        _assess.apply(lambda sql, params: conn.execute(to_psycopg(sql), params), change)


def _upsert(conn: psycopg.Connection[Any], rows: Rows) -> None:
    _stage(conn, _TRACES, rows.trace_rows, rows.llm_trace_rows)
    span_rows, llm_span_rows = rows.span_rows, rows.llm_span_rows
    if rows.late:
        for row in _add_late_spans(conn, rows.late):
            if len(row) == SPAN_ROW_LENGTH:
                span_rows = [*span_rows, row]
            else:
                llm_span_rows = [*llm_span_rows, row]
    _stage(conn, _SPANS, span_rows, llm_span_rows)
    if rows.keys_in_json:
        _unpack_keys(conn, rows, upsert=True)  # before this batch's tag changes
    else:
        _stage(conn, _METADATA, rows.metadata_rows)
    _stage(conn, _TAGS, rows.tag_rows)
    if rows.tag_deletes:
        with conn.cursor() as cur:
            cur.executemany(_DELETE_TAG, sorted(rows.tag_deletes))
    if rows.tag_ops:
        conn.execute(_STALE_TAGS, (sorted(rows.tag_ops),), prepare=False)
    for tid in sorted(rows.recompute):  # last: after this batch's metadata rows
        _recompute_llm(conn, tid)


def _unpack_keys(conn: psycopg.Connection[Any], rows: Rows, *, upsert: bool) -> None:
    """The metadata and tag rows of the batch's traces, unpacked by the server from
    the JSON copies just written (``Rows.keys_in_json``)."""
    ids = [row[0] for row in rows.trace_rows] + [row[0] for row in rows.llm_trace_rows]
    if ids:
        for statement in _UNPACK[upsert]:
            # Planned for each batch, never from a cached generic plan: one made while
            # the table was small scans it whole, and keeps doing so as it grows.
            conn.execute(statement, (ids,), prepare=False)


def _add_late_spans(conn: psycopg.Connection[Any], late: list[tuple[Any, ...]]) -> list[Any]:
    """Put spans that ended after their trace was written into its spans array;
    their rows for the spans table (without content where the array has it).

    Rare (a child outliving its root), so a locked read and a rewrite of the array
    each. A span already there (a batch delivered twice) is replaced, as its row is.
    Traces are locked in id order (a stable sort keeps one trace's spans in order).
    """
    rows = []
    for text, full, stripped in sorted(late, key=lambda item: str(item[1][0])):
        trace_id, span_id = full[0], full[1]
        found = conn.execute(_TRACE_SPANS_FOR_UPDATE, (trace_id,)).fetchone()
        if found is None or found[0] is None:  # no trace row (yet)
            rows.append(full)
            continue
        kept = [dumps(s) for s in loads_marked(found[0]) if s.get("span_id") != span_id]
        conn.execute(_SET_TRACE_SPANS, (dumps_marked_array([*kept, text]), trace_id))
        rows.append(stripped)
    return rows


def _recompute_llm(conn: psycopg.Connection[Any], trace_id: str) -> None:
    """A trace's LLM totals again, from all its span rows (late spans included), as
    the SQLite store's ``_recompute_llm`` does."""
    totals = totals_from_span_rows(conn.execute(_TRACE_SPAN_ATTRIBUTES, (trace_id,)))
    if totals is None:
        return
    with conn.cursor() as cur:
        cur.executemany(
            _SET_SPAN_LLM, [(flag, trace_id, sid) for sid, flag in sorted(totals.counted.items())]
        )
    found = conn.execute(
        _SET_TRACE_LLM,
        (*trace_llm_values(totals), trace_id),
    ).fetchone()
    if found is None:
        return
    updates = with_llm_metadata({}, totals)
    if found[0] is not None:
        md = loads_strings(found[0])
        md.update(updates)
        conn.execute(_SET_TRACE_METADATA_JSON, (dumps(md), trace_id))
    for key, value in updates.items():
        conn.execute(_UPSERT_METADATA, (trace_id, key, value))
