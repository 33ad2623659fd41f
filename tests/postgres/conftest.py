"""Helpers of the PostgreSQL store's tests; the clean database of each test is the
shared ``postgres_uri`` fixture of tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessiontrace import _runtime


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """What traced code hands to the pipeline (finished traces, late spans, tag
    changes), kept instead of written: ``take()`` returns the items so far, priced
    as the writer would, and starts a new list."""
    from sessiontrace.llm._pricing import price_items

    items: list[Any] = []
    monkeypatch.setattr(_runtime, "submit", items.append)

    def take() -> list[Any]:
        taken = list(items)
        items.clear()
        return price_items(taken)

    yield take


class Server:
    """A PostgreSQL of a test's own (the contract's commands), to stop and start."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="pgst."))
        shutil.chown(self.dir, "postgres")
        self._run(
            "initdb",
            "-D",
            f"{self.dir}/data",
            "-U",
            "sessiontrace",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.start()
        self._run("createdb", "-h", str(self.dir), "-U", "sessiontrace", "sessiontrace_test")
        self.uri = f"postgresql://sessiontrace@/sessiontrace_test?host={self.dir}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            cwd="/",
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-c listen_addresses='' -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            f"{self.dir}/data",
            "-l",
            f"{self.dir}/server.log",
            "-w",
            "start",
            "-o",
            options,
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_server(postgres_uri: str, pg_throwaway: Any, throwaway_postgres: Any) -> Iterator[Server]:
    """A throwaway server this test may stop (never the shared one)."""
    bin_dir = Path(pg_throwaway.find_tools()["initdb"]).parent
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("a throwaway PostgreSQL needs root, runuser and postgresql-15")
        pytest.skip("a throwaway PostgreSQL needs root, runuser and postgresql-15")
    server = Server(bin_dir)
    try:
        yield server
    finally:
        server.remove()
