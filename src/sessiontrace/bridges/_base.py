"""What every bridge is, and the registry of those in force.

A bridge has up to two parts:

- ``install()`` / ``uninstall()``: a process-wide hook into the other tracer that
  reads our context whenever that tracer starts a trace or span (MLflow, OpenTelemetry);
- ``enter(user_id, session_id)`` / ``exit(token)``: per-request work, run by the
  middleware around the app and, for WSGI, around every chunk of the body and its
  ``close()`` (OpenInference and Openlayer context, stamping an outer OTel server span).

Failures in either are contained: logged once per bridge, counted in
``sessiontrace.get_stats()["internal_errors"]`` under ``bridge_<name>``, and the
request goes on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .._runtime import count_internal_error

__all__ = ["Bridge", "active", "contained_failure", "enter_all", "exit_all", "registry"]

logger = logging.getLogger("sessiontrace.bridges")


class Bridge:
    """One other tracer. Subclasses override what they need."""

    name = ""
    #: Whether the middleware must call ``enter``/``exit`` around each request.
    per_request = False
    #: ...and around each chunk of a WSGI body (what a tracer reads while it streams).
    per_chunk = True

    def install(self, **options: Any) -> None:
        """Hook into the other tracer (idempotent); raise ImportError if it is missing."""

    def uninstall(self) -> None:
        """Undo ``install``."""

    def enter(self, user_id: str | None, session_id: str | None) -> Any:
        """Make the ids the other tracer's request default; return what ``exit`` undoes."""
        return None

    def exit(self, token: Any) -> None:
        """Undo one ``enter``."""


class _Registry:
    """The bridges enabled in this process; ``scoped`` is read once per request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enabled: dict[str, Bridge] = {}
        self.scoped: tuple[Bridge, ...] = ()
        self.chunked: tuple[Bridge, ...] = ()
        self.warned: set[str] = set()

    def refresh(self) -> None:
        self.scoped = tuple(b for b in self.enabled.values() if b.per_request)
        self.chunked = tuple(b for b in self.scoped if b.per_chunk)


registry = _Registry()


def contained_failure(name: str) -> None:
    """Count a bridge's failure; log the first of each bridge with its traceback."""
    count_internal_error(f"bridge_{name}")
    if name not in registry.warned:
        registry.warned.add(name)
        logger.warning(
            "sessiontrace: the %s bridge failed; the request goes on without it "
            "(counted in get_stats()['internal_errors'])",
            name,
            exc_info=True,
        )


def active() -> tuple[Bridge, ...]:
    """The bridges with per-request work (empty: the middleware does nothing more)."""
    return registry.scoped


def enter_all(
    bridges: tuple[Bridge, ...], user_id: str | None, session_id: str | None
) -> list[tuple[Bridge, Any]]:
    """Enter each bridge in order; one that fails is skipped (and counted)."""
    entered: list[tuple[Bridge, Any]] = []
    for bridge in bridges:
        try:
            entered.append((bridge, bridge.enter(user_id, session_id)))
        except Exception:
            contained_failure(bridge.name)
    return entered


def exit_all(entered: list[tuple[Bridge, Any]]) -> None:
    """Undo ``enter_all`` in reverse order; a failing exit does not stop the others."""
    for bridge, token in reversed(entered):
        try:
            bridge.exit(token)
        except Exception:
            contained_failure(bridge.name)
