"""The CLI's feedback columns, sort flags and ``sessiontrace feedback``, run as a
user runs them: a subprocess (both stores)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from ._rollup_data import D0, D1, Assessments, assessments, rollup_store

pytestmark = pytest.mark.backends
__all__ = ["assessments", "rollup_store"]  # fixtures


def cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
    done = subprocess.run(
        [sys.executable, "-m", "sessiontrace", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if not line.startswith("-")]


def test_sessions_table_and_sort_flags(db: str, rollup_store: Assessments) -> None:
    rows = _table(cli("sessions", "--db", db, "--by-satisfaction"))
    header = rows[0]
    at = header.index("feedback")
    assert header[at : at + 4] == ["feedback", "satisfaction", "negative", "llm_calls"]
    assert [r[0] for r in rows[1:]] == ["s2", "s1", "s3", "s4", "s5"]
    cells = list(csv.reader(io.StringIO(cli("sessions", "--db", db, "--csv"))))
    at = cells[0].index("feedback")
    assert {r[0]: r[at : at + 3] for r in cells[1:]}["s1"] == ["5", "50.0%", "1"]
    worst = json.loads(cli("sessions", "--db", db, "--by-negative", "--json"))
    assert [s["session_id"] for s in worst] == ["s1", "s2", "s3", "s4", "s5"]
    assert worst[0]["feedback"]["thumbs"]["positive_rate"] == 0.5


def test_users_and_versions_csv(db: str, rollup_store: Assessments) -> None:
    users = list(csv.DictReader(io.StringIO(cli("users", "--db", db, "--csv",
                                                "--order-by", "feedback_count"))))  # fmt: skip
    assert [(u["user_id"], u["feedback"], u["satisfaction"], u["negative"]) for u in users] == [
        ("u1", "5", "50.0%", "1"),
        ("u2", "3", "66.7%", "1"),
        ("u3", "0", "", "0"),
        ("u4", "0", "", "0"),
    ]
    versions = list(csv.DictReader(io.StringIO(cli("versions", "--db", db, "--csv",
                                                   "--by-satisfaction"))))  # fmt: skip
    assert [(v["app_version"], v["satisfaction"]) for v in versions] == [
        ("1.0", "50.0%"),
        ("2.0", "66.7%"),
    ]


def test_session_turns_and_user_report(db: str, rollup_store: Assessments) -> None:
    turns = cli("session", "s1", "--db", db)
    lines = turns.splitlines()
    assert lines[0].split()[-1] == "feedback"
    assert lines[2].endswith("thumbs=true; score=4")
    assert lines[3].endswith('thumbs=false; score=2; comment="meh"')  # not the overridden one
    report = cli("user", "u1", "--db", db, "--days", "3660")
    assert "satisfaction:    50.0%" in report
    assert "negative:        1" in report
    assert "Feedback:" in report
    assert ["thumbs", "2", "1", "1", "50.0%"] in [line.split() for line in report.splitlines()]


def test_feedback_command(db: str, rollup_store: Assessments) -> None:
    rows = list(csv.DictReader(io.StringIO(cli("feedback", "--db", db, "--days", "3660",
                                               "--key", "app_version", "--csv"))))  # fmt: skip
    assert [(r["date"], r["app_version"], r["feedback"], r["negative"]) for r in rows] == [
        (D0, "1.0", "5", "1"),
        (D1, "2.0", "3", "1"),
    ]
    assert rows[0]["by_name"] == "comment: 1; score: 2 mean 3; thumbs: 2 50% positive"
    one = json.loads(cli("feedback", "--db", db, "--days", "3660", "--user", "u2",
                         "--name", "thumbs", "--json"))  # fmt: skip
    assert [(d["date"], d["value"], d["feedback_count"]) for d in one] == [(D1, None, 3)]
