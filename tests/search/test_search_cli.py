"""The ``sessiontrace`` command, run as a user runs it: a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Record

pytestmark = pytest.mark.backends


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
    return subprocess.run(
        [sys.executable, "-m", "sessiontrace", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


@pytest.fixture
def db(dataset: list[Record], db: str) -> str:
    """The ``--db`` of the test's store (conftest), once the dataset is in it."""
    return db


def test_traces_with_a_filter_as_json(db: str, dataset: list[Record]) -> None:
    out = cli(
        "traces",
        "--db",
        db,
        "--json",
        "--max-results",
        "100",
        "--filter",
        "metadata.`mlflow.trace.session` = 'session-3'",
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    expected = sorted(
        (r for r in dataset if r.session == "session-3"), key=lambda r: r.start_ms, reverse=True
    )
    assert [r["trace_id"] for r in rows] == [r.trace_id for r in expected]
    assert rows[0]["session_id"] == "session-3"


def test_traces_table_and_page_token(db: str) -> None:
    out = cli("--db", db, "traces", "--max-results", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["trace_id", "time", "user", "session"]
    assert len(lines) == 2 + 3
    assert "--page-token" in out.stderr
    token = out.stderr.split("--page-token ")[1].split()[0]
    nxt = cli("traces", "--db", db, "--max-results", "3", "--page-token", token, "--json")
    assert nxt.returncode == 0
    assert len(json.loads(nxt.stdout)) == 3


def test_sessions_csv(db: str, dataset: list[Record]) -> None:
    out = cli("sessions", "--db", db, "--csv", "--max-results", "500")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["session_id"] for r in rows} == {r.session for r in dataset if r.session}
    assert set(rows[0]) >= {"session_id", "users", "turns", "errors", "first_seen", "last_seen"}


def test_session_turn_by_turn(db: str, dataset: list[Record]) -> None:
    out = cli("session", "session-3", "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    turns = json.loads(out.stdout)
    assert [t["turn"] for t in turns] == list(
        range(1, 1 + sum(r.session == "session-3" for r in dataset))
    )
    table = cli("session", "session-3", "--db", db)
    assert table.stdout.splitlines()[0].split()[:4] == ["turn", "time", "ms", "status"]


def test_users_user_and_versions(db: str, dataset: list[Record]) -> None:
    users = cli("users", "--db", db, "--json")
    assert {u["user_id"] for u in json.loads(users.stdout)} == {r.user for r in dataset if r.user}
    report = cli("user", "user-5", "--db", db, "--days", "3650")
    assert report.returncode == 0, report.stderr
    assert "Daily activity:" in report.stdout
    assert f"traces:          {sum(r.user == 'user-5' for r in dataset)}" in report.stdout
    as_json = json.loads(cli("user", "user-5", "--db", db, "--days", "3650", "--json").stdout)
    assert as_json["traces"] == sum(r.user == "user-5" for r in dataset)
    versions = json.loads(cli("versions", "--db", db, "--json").stdout)
    assert sum(v["traces"] for v in versions) == len(dataset)
    env = json.loads(cli("versions", "--key", "environment", "--db", db, "--json").stdout)
    assert {v["value"] for v in env} == {"staging", "production"}


def test_tracking_uri_option(db: str, tracking_uri: str) -> None:
    out = cli("--tracking-uri", tracking_uri, "users", "--json")
    assert out.returncode == 0, out.stderr


def test_bad_filter_exits_2_with_a_caret(db: str) -> None:
    out = cli("traces", "--db", db, "--filter", "trace.status < 'OK'")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines()[-2:] == ["  trace.status < 'OK'", "               ^"]
    assert "does not apply" in out.stderr


def test_missing_database_exits_2(tmp_path: Path) -> None:
    out = cli("sessions", "--db", str(tmp_path / "nope.db"))
    assert out.returncode == 2
    assert "no trace database" in out.stderr
    assert not (tmp_path / "nope.db").exists()  # never created by a read
    default = cli("users", cwd=tmp_path)  # sessiontrace.db in the working directory
    assert default.returncode == 2 and "sessiontrace.db" in default.stderr


def test_not_found_exits_1_and_no_command_prints_help(db: str) -> None:
    assert cli("session", "nope", "--db", db).returncode == 1
    assert cli("user", "nope", "--db", db).returncode == 1
    bare = cli()
    assert bare.returncode == 2 and "sessions" in bare.stderr


def test_main_is_callable_in_process(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sessiontrace.__main__ import COMMANDS, main

    assert main(["versions", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    names = {add.__name__ for add in COMMANDS}
    assert names >= {
        "add_traces",
        "add_sessions",
        "add_session",
        "add_users",
        "add_user",
        "add_versions",
    }


def test_main_closes_the_store_it_opened(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # main() runs in processes that go on (a script, a test): the command's
    # connections must not stay open until the store is collected.
    from sessiontrace import _store
    from sessiontrace.__main__ import main

    opened, closed = [], []
    open_location = _store.open_location

    def spying(location: Any) -> Any:
        store = open_location(location)
        close = store.close
        monkeypatch.setattr(store, "close", lambda: (closed.append(store), close())[1])
        opened.append(store)
        return store

    monkeypatch.setattr(_store, "open_location", spying)
    assert main(["users", "--db", db, "--json"]) == 0
    assert main(["session", "nope", "--db", db]) == 1  # an error closes it too
    assert len(opened) == 2 and closed == opened
