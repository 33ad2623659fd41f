"""Trace stores. SQLite is the embedded default; PostgreSQL implements the same surface.

``open_store`` turns what a user writes (a path, ``sqlite:///...``, ``postgresql://...``)
into a store, so the runtime, the CLI and the server choose a backend in one place.
The PostgreSQL store and psycopg are imported only when a ``postgresql://`` URI is
opened: the core has no third-party dependency.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from ._base import Store
from ._sqlite import SQLiteStore, TraceNotFoundError

if TYPE_CHECKING:
    from .._config import StoreLocation

__all__ = [
    "POSTGRES_INSTALL_HINT",
    "SQLiteStore",
    "Store",
    "TraceNotFoundError",
    "open_location",
    "open_store",
    "require_postgres",
]

POSTGRES_INSTALL_HINT = "pip install 'sessiontrace[postgres]'"


def require_postgres() -> None:
    """Raise ``ImportError`` naming the extra to install unless psycopg is importable.

    Called when a ``postgresql://`` URI is configured, so a missing driver fails
    there and then, not inside the app's first traced call.
    """
    try:
        importlib.import_module("psycopg")
    except ImportError:
        raise _missing("psycopg") from None


def _missing(name: str) -> ImportError:
    return ImportError(f"a postgresql:// store needs {name}: {POSTGRES_INSTALL_HINT}", name=name)


def open_location(location: StoreLocation) -> Store:
    """The store for a parsed tracking URI; see ``open_store``."""
    if location.scheme == "sqlite":
        return SQLiteStore(location.path)
    if location.scheme == "postgresql":
        require_postgres()
        try:
            # By name, so that importing sessiontrace never imports psycopg.
            module = importlib.import_module(f"{__name__}._postgres")
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] in ("psycopg", "psycopg_pool"):
                raise _missing(exc.name or "psycopg") from None  # an incomplete install
            raise
        store: Store = module.PostgresStore(location.path)
        return store
    raise ValueError(
        f"{location.path} is a sessiontrace server, not a store: read it with that "
        "server's UI and JSON API, or open the database it writes"
    )


def open_store(target: str | os.PathLike[str]) -> Store:
    """Open the store that ``target`` names, without connecting yet.

    >>> open_store("traces.db")                         # SQLiteStore, like sqlite:///traces.db
    >>> open_store("postgresql://app@db.internal/traces")  # PostgresStore

    A path or ``sqlite:///`` URI gives a ``SQLiteStore``; ``postgresql://`` or
    ``postgres://`` a ``PostgresStore`` (``pip install 'sessiontrace[postgres]'``,
    else ``ImportError`` says so). A bad URI or an ``http(s)://`` server raises
    ``ValueError``.
    """
    from .._config import parse_tracking_uri

    if not isinstance(target, str):
        return SQLiteStore(os.fspath(target))
    return open_location(parse_tracking_uri(target))
