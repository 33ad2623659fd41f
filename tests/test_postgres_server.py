"""scripts/pg_throwaway.py and the PostgreSQL fixtures: the server works, and nothing outlives it.

Most tests here start servers of their own (about a second each) to watch them end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pg_throwaway.py"

pytestmark = pytest.mark.postgres


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, ...]


def leftovers(directory: Path, postmaster: int | None) -> list[str]:
    """Live processes of a server: its postmaster, the postmaster's children, and any
    process naming its directory (the watchdog). Zombies are gone for our purpose: PID 1
    here reaps late (research/postgres.md, pitfall 7)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(stat[1])
        if postmaster in (pid, ppid) or str(directory) in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def wait_until_gone(directory: Path, postmaster: int | None, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while directory.exists() or leftovers(directory, postmaster):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"left behind: dir exists={directory.exists()}, "
                f"processes={leftovers(directory, postmaster)}"
            )
        time.sleep(0.05)


def postmaster_of(directory: Path) -> int:
    return int((directory / "data" / "postmaster.pid").read_text().split()[0])


def socket_dir(uri: str) -> Path:
    from urllib.parse import parse_qs

    return Path(parse_qs(urlsplit(uri).query)["host"][0])


# -- the session server and the per-test database -----------------------------------------


def test_the_server_accepts_connections(postgres_uri: str) -> None:
    import psycopg

    with psycopg.connect(postgres_uri) as conn:
        user, database = conn.execute("SELECT current_user, current_database()").fetchone()
        assert user == "sessiontrace"
        assert database.startswith("sessiontrace_test")
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


def test_text_orders_like_python_and_sqlite(postgres_uri: str) -> None:
    import psycopg

    values = ["session-b", "é", "Session-a", "_x", "session-A"]
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute("SELECT v FROM unnest(%s::text[]) AS v ORDER BY v", (values,))
        assert [r[0] for r in rows] == sorted(values)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_with_an_empty_database(postgres_uri: str, run: int) -> None:
    """Whichever runs second proves the first one's tables and schemas were dropped."""
    import psycopg

    with psycopg.connect(postgres_uri) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert tables == []
        conn.execute("CREATE TABLE leftover (id int)")
        conn.execute("CREATE SCHEMA other_store")
        conn.execute("CREATE TABLE other_store.leftover (id int)")


# -- ThrowawayPostgres ------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_directory(throwaway_postgres: Any) -> None:
    import psycopg

    server = throwaway_postgres()
    uri = server.start()
    directory = socket_dir(uri)
    assert directory.is_dir() and directory.name.startswith("pgtest.")
    postmaster = postmaster_of(directory)
    assert leftovers(directory, postmaster)
    with psycopg.connect(uri) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    server.stop()
    assert not directory.exists()
    wait_until_gone(directory, postmaster, seconds=2)
    server.stop()  # twice is harmless


def test_tcp_listens_on_loopback(throwaway_postgres: Any) -> None:
    import psycopg

    with throwaway_postgres(tcp=True) as uri:
        assert uri.startswith("postgresql://sessiontrace@127.0.0.1:")
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_tcp_retries_when_the_port_is_taken(
    throwaway_postgres: Any, pg_throwaway: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL cannot bind port 0, so a free port is guessed; a lost race must retry."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], pg_throwaway._free_port()])
        monkeypatch.setattr(pg_throwaway, "_free_port", lambda: next(ports))
        with throwaway_postgres(tcp=True) as uri:
            port = urlsplit(uri).port
            assert port is not None and port != taken.getsockname()[1]


def test_missing_binaries_say_how_to_install(
    pg_throwaway: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pg_throwaway.PostgresUnavailable, match="apt-get install postgresql"):
        pg_throwaway.find_tools(search_glob=str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("SESSIONTRACE_PG_BIN", str(tmp_path))
    with pytest.raises(pg_throwaway.PostgresUnavailable, match="apt-get install postgresql"):
        pg_throwaway.ThrowawayPostgres().start()
    assert not list(Path("/tmp").glob(f"pgtest.*/{os.getpid()}"))


def test_cleanup_stale_removes_only_dead_owners(pg_throwaway: ModuleType, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead, alive, foreign = (tmp_path / f"pgtest.{n}" for n in ("dead", "alive", "foreign"))
    for directory in (dead, alive, foreign):
        (directory / "data").mkdir(parents=True)
    (dead / "owner").write_text(f"{done.stdout.strip()} 1\n")
    (alive / "owner").write_text(f"{os.getpid()} {pg_throwaway._start_time(os.getpid())}\n")
    # no owner file: not made by pg_throwaway.py (or still being made), never touched
    assert pg_throwaway.cleanup_stale(str(tmp_path)) == [dead]
    assert not dead.exists() and alive.exists() and foreign.exists()


# -- when the owner ends ------------------------------------------------------------------

OWNER = """
import sys, time
sys.path.insert(0, {scripts!r})
import pg_throwaway
print(pg_throwaway.ThrowawayPostgres().start(), flush=True)
time.sleep(120)
"""


def _start_owner() -> tuple[subprocess.Popen[str], Path, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(scripts=str(SCRIPT.parent))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    uri = proc.stdout.readline().strip()
    assert uri.startswith("postgresql://"), uri
    directory = socket_dir(uri)
    return proc, directory, postmaster_of(directory)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL])
def test_a_killed_owner_leaves_nothing_behind(throwaway_postgres: Any, signum: int) -> None:
    """SIGTERM/SIGHUP: the owner's handler stops the server before it dies of the
    signal. SIGINT: KeyboardInterrupt unwinds and atexit stops it. SIGKILL: nothing
    runs in the owner; its watchdog sees the pipe close."""
    proc, directory, postmaster = _start_owner()
    with proc:
        proc.send_signal(signum)
        assert proc.wait(30) == -signum  # died of the signal, as without a handler
    if signum != signal.SIGKILL:
        assert not directory.exists()
    wait_until_gone(directory, postmaster)


def test_run_passes_the_uri_and_returns_the_exit_status(throwaway_postgres: Any) -> None:
    child = (
        "import os, sys, psycopg; uri = os.environ['SESSIONTRACE_TEST_PG_URI'];"
        "assert os.environ['PG_URI'] == uri; psycopg.connect(uri).execute('SELECT 1');"
        "print(uri); sys.exit(7)"
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--", sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 7, done.stderr
    directory = socket_dir(done.stdout.strip())
    assert not directory.exists()
    wait_until_gone(directory, None, seconds=2)


def test_run_passes_sigterm_on_and_cleans_up(throwaway_postgres: Any) -> None:
    child = "import os, time; print(os.environ['PG_URI'], flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "run", "--", sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with proc:
        assert proc.stdout is not None
        directory = socket_dir(proc.stdout.readline().strip())
        postmaster = postmaster_of(directory)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM  # the command died of the SIGTERM
    assert not directory.exists()
    wait_until_gone(directory, postmaster, seconds=2)


def test_run_without_postgresql_fails_loudly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--", "true"],
        capture_output=True,
        text=True,
        env={**os.environ, "SESSIONTRACE_PG_BIN": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 1
    assert "apt-get install postgresql" in done.stderr


# -- the fixture's rule: skip locally, fail in CI ------------------------------------------


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_without_postgresql_the_fixture_skips_locally_and_fails_in_ci(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SESSIONTRACE_TEST_PG_URI", "CI")}
    env.update(SESSIONTRACE_PG_BIN=str(tmp_path), CI=ci)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         f"{Path(__file__).name}::test_the_server_accepts_connections"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout
    assert "apt-get install postgresql" in done.stdout
