"""Trace stores. SQLite is the embedded default; others implement the same surface."""

from ._sqlite import SQLiteStore, TraceNotFoundError

__all__ = ["SQLiteStore", "TraceNotFoundError"]
