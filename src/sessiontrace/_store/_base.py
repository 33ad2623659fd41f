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
    from .._assessments import Assessment
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

    # Assessments, each call its own transaction on the caller's thread (like set_tag).
    # No trace row is needed: feedback on a live trace comes before its trace.

    def put_assessment(self, a: Assessment, *, dedupe_key: str | None = None) -> Assessment:
        """Insert ``a`` (an id given when it has none), or with ``dedupe_key`` change
        the one stored under that key (same id and creation time): atomic."""
        ...

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment:
        """Raises ``AssessmentNotFoundError``."""
        ...

    def update_assessment(self, trace_id: str, assessment_id: str, **changes: Any) -> Assessment:
        """Change ``name``, ``value``, ``rationale``, ``metadata``, ``error``,
        ``source``, ``span_id`` or ``valid`` in place."""
        ...

    def override_assessment(self, trace_id: str, old_id: str, new: Assessment) -> Assessment:
        """Insert ``new`` overriding ``old_id``, which turns invalid (one transaction)."""
        ...

    def delete_assessment(self, trace_id: str, assessment_id: str) -> None: ...

    def assessments_for(self, trace_ids: Sequence[str]) -> dict[str, list[Assessment]]:
        """Each trace's assessments, oldest first; traces without any are left out."""
        ...

    def trace_owner(self, trace_id: str) -> tuple[str | None, str | None] | None:
        """The trace's (user_id, session_id), or None when no such trace is stored."""
        ...

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
