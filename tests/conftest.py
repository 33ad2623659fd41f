"""Every test gets its own SQLite file and fresh process-wide state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sessiontrace
from sessiontrace import _runtime


@pytest.fixture(autouse=True)
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in _runtime.ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "traces.db"
    sessiontrace.configure(tracking_uri=f"sqlite:///{path}", flush_interval=0.01)
    yield path
    _runtime.reset_for_tests()  # writes what is queued (bounded by shutdown_timeout)
