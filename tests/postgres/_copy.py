"""A copy of a SQLite store's rows into a PostgreSQL store's tables, so that the
differential tests compare the SQL of search and analytics, not the writers."""

from __future__ import annotations

import sqlite3

import psycopg

TABLES = ("traces", "trace_metadata", "trace_tags", "spans", "assessments")


def copy_rows(sqlite_path: str, uri: str) -> None:
    """Every row of the SQLite store's tables, into PostgreSQL's (same columns)."""
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
