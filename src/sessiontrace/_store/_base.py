"""What search, analytics, the CLI and the server need of a store: ``Store``.

``SQLiteStore`` and the PostgreSQL store both have this shape (structurally: no
base class to inherit). SQL given to ``connection().execute`` is written once, in
SQLite's style: named ``:name`` parameters with a dict, or ``?`` with a sequence;
the PostgreSQL connection translates it. Where the engines spell a construct
differently, the SQL asks ``store.dialect``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._entities import Trace
    from ._dialect import Dialect

__all__ = ["Connection", "Cursor", "Store"]


class Cursor(Protocol):
    """The rows of one statement: iterate them, or fetch them."""

    def __iter__(self) -> Iterator[Any]: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A thread's read connection (autocommit: no transaction is held between calls)."""

    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ..., /
    ) -> Cursor: ...


class Store(Protocol):
    """A trace store: the pipeline's sink, and what the readers query."""

    @property
    def dialect(self) -> Dialect: ...

    def export(self, items: Sequence[Any]) -> None:
        """Write one batch (the pipeline's writer thread); idempotent."""

    def set_tag(self, trace_id: str, key: str, value: str) -> None: ...

    def delete_tag(self, trace_id: str, key: str) -> None: ...

    def get_trace(self, trace_id: str) -> Trace | None: ...

    def load_traces(
        self, trace_ids: Sequence[str], *, include_spans: bool = True
    ) -> list[Trace]: ...

    def trace_select(self) -> str:
        """The columns ``traces_from_rows`` reads, for ``SELECT ... FROM traces t``."""
        ...

    def traces_from_rows(
        self, rows: Sequence[Sequence[Any]], *, include_spans: bool = True
    ) -> list[Trace]: ...

    def list_trace_ids(self, *, limit: int = 100, offset: int = 0) -> list[str]: ...

    def count_traces(self) -> int: ...

    def connection(self) -> Connection:
        """This thread's read connection."""
        ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """Forget (never close) the connections a parent process opened."""
