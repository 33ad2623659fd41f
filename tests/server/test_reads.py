"""Where the JSON API's readers run, by store: inline on SQLite, beside the loop otherwise."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio

from sessiontrace._store import SQLiteStore
from sessiontrace._store._dialect import POSTGRES
from sessiontrace.server._app import _Params, _Reads


def _thread(params: _Params, store: Any) -> int:
    return threading.get_ident()


def test_sqlite_readers_run_inline(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    try:
        loop_thread, reader_thread = anyio.run(_both, _Reads(store, 0.05))
    finally:
        store.close()
    assert reader_thread == loop_thread


class _RemoteStore:
    """A store whose connection has no SQLite progress handler (PostgreSQL's)."""

    dialect = POSTGRES

    def connection(self) -> object:
        # The loop thread would hold a server connection it never uses.
        raise AssertionError("the loop thread opened a read connection")


def test_readers_of_a_server_store_run_in_the_thread_pool() -> None:
    # No progress handler can stop them, and each query waits on the network.
    loop_thread, reader_thread = anyio.run(_both, _Reads(_RemoteStore(), 0.05))  # type: ignore[arg-type]
    assert reader_thread != loop_thread


async def _both(reads: _Reads) -> tuple[int, int]:
    return threading.get_ident(), await reads.run(_thread, _Params(b""))
