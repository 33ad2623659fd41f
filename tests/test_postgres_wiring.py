"""End to end on PostgreSQL: a tracking URI, the SDK, the CLI and the UI on one database.

The password
used here is ignored by the throwaway server (trust authentication), which lets the
tests check it is never printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import sessiontrace

pytestmark = pytest.mark.postgres

SECRET = "hunter2-not-for-print"


@pytest.fixture
def secret_uri(postgres_uri: str) -> str:
    """``postgres_uri`` with a password in it (trust authentication ignores it)."""
    parts = urlsplit(postgres_uri)
    user, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{SECRET}@{hosts}"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
    return subprocess.run(
        [sys.executable, "-m", "sessiontrace", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def logged_trace(secret_uri: str) -> Iterator[str]:
    """One trace of user-pg / session-pg, written through configure() and flush()."""
    sessiontrace.configure(tracking_uri=secret_uri, flush_interval=0.01)

    @sessiontrace.trace
    def chat(message: str) -> str:
        return message.upper()

    with sessiontrace.user_session(user_id="user-pg", session_id="session-pg"):
        chat("hello postgres")
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    assert sessiontrace.flush(30)
    yield trace_id


def test_configure_trace_flush_and_search(logged_trace: str) -> None:
    found = sessiontrace.search_traces(
        filter_string="metadata.`mlflow.trace.session` = 'session-pg'", return_type="list"
    )
    assert [t.info.trace_id for t in found] == [logged_trace]
    assert found[0].info.user_id == "user-pg"
    assert sessiontrace.get_stats()["written"] == 1


def test_tags_edit_the_stored_trace(logged_trace: str) -> None:
    sessiontrace.set_trace_tag(logged_trace, "reviewed", "yes")
    trace = sessiontrace.get_trace(logged_trace)
    assert trace is not None and trace.info.tags["reviewed"] == "yes"
    sessiontrace.delete_trace_tag(logged_trace, "reviewed")
    trace = sessiontrace.get_trace(logged_trace)
    assert trace is not None and "reviewed" not in trace.info.tags


def test_the_environment_variable_selects_postgres_in_a_fresh_process(
    secret_uri: str, tmp_path: Path
) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sessiontrace
            @sessiontrace.trace
            def app():
                return 1
            with sessiontrace.user_session(user_id="env-user", session_id="env-session"):
                app()
            print(sessiontrace.get_last_active_trace_id())
            """
        )
    )  # written by the exit hook: no flush() in the app
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "SESSIONTRACE_TRACKING_URI": secret_uri},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    sessiontrace.configure(tracking_uri=secret_uri)
    trace = sessiontrace.get_trace(done.stdout.strip())
    assert trace is not None and trace.info.session_id == "env-session"


@pytest.mark.parametrize("how", ["--db", "--tracking-uri", "env"])
def test_cli_prints_the_trace(logged_trace: str, secret_uri: str, how: str) -> None:
    if how == "env":
        out = cli("traces", "--json", env={"SESSIONTRACE_TRACKING_URI": secret_uri})
    else:
        out = cli("traces", how, secret_uri, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["trace_id"] for r in rows] == [logged_trace]
    assert SECRET not in out.stdout + out.stderr
    table = cli("sessions", "--db", secret_uri)
    assert table.returncode == 0, table.stderr
    assert "session-pg" in table.stdout


def test_cli_errors_never_print_the_password(secret_uri: str) -> None:
    parts = urlsplit(secret_uri)
    missing = urlunsplit(parts._replace(path="/no_such_database"))
    out = cli("traces", "--db", missing)
    assert out.returncode == 2
    assert "cannot read the trace database" in out.stderr
    assert SECRET not in out.stdout + out.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ui_serves_the_postgres_database(logged_trace: str, secret_uri: str) -> None:
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessiontrace", "ui", "--db", secret_uri, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline(), proc.stdout.readline()]
        assert SECRET not in "".join(banner)
        assert "serving" in banner[1], banner
        deadline = time.monotonic() + 20
        while True:
            try:
                traces = httpx.get(f"http://127.0.0.1:{port}/api/traces", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        assert traces.status_code == 200
        assert [t["trace_id"] for t in traces.json()["traces"]] == [logged_trace]
        info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2)
        assert SECRET not in info.text
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
