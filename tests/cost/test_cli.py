"""The CLI's token and cost columns, --by-cost and the models command (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import sessiontrace

from .conftest import llm_call, usage

pytestmark = pytest.mark.backends


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
    return subprocess.run(
        [sys.executable, "-m", "sessiontrace", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def db(db: str) -> str:
    sessiontrace.set_model_price("cheap", input_per_mtok=1, output_per_mtok=1)
    sessiontrace.set_model_price("dear", input_per_mtok=100, output_per_mtok=100)
    for user, model, n in [("ann", "cheap", 1000), ("bob", "dear", 200), ("cy", "mystery", 50)]:
        with (
            sessiontrace.user_session(user_id=user, session_id=f"{user}-s"),
            sessiontrace.start_span("chat"),
        ):
            sessiontrace.update_current_trace(metadata={"app_version": "3.1"})
            llm_call(model=model, provider="acme", tokens=usage(n, n))
    sessiontrace.flush()
    return db


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_users_table_has_tokens_and_cost_and_sorts_by_cost(db: str) -> None:
    out = cli("users", "--db", db, "--by-cost")
    assert out.returncode == 0, out.stderr
    header, _rule, *rows = lines(out.stdout)
    assert header[-4:] == ["llm_calls", "tokens", "cost", "unpriced"]
    assert [r[0] for r in rows] == ["bob", "ann", "cy"]  # $0.04, $0.002, unpriced
    assert rows[0][-4:] == ["1", "400", "$0.0400", "0"]
    assert rows[1][-4:] == ["1", "2,000", "$0.002000", "0"]
    assert rows[2][-3:] == ["1", "100", "1"]  # the cost cell is blank, never $0


def test_json_carries_every_llm_field(db: str) -> None:
    out = cli("sessions", "--db", db, "--json", "--order-by", "total_tokens DESC")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["session_id"] for r in rows] == ["ann-s", "bob-s", "cy-s"]
    assert {k: rows[1][k] for k in ("llm_calls", "input_tokens", "output_tokens", "cost")} == {
        "llm_calls": 1,
        "input_tokens": 200,
        "output_tokens": 200,
        "cost": pytest.approx(0.04),
    }
    assert rows[2]["cost"] is None and rows[2]["unpriced_calls"] == 1
    traces = json.loads(cli("traces", "--db", db, "--json").stdout)
    assert sorted(t["total_tokens"] for t in traces) == [100, 400, 2000]
    user = json.loads(cli("user", "ann", "--db", db, "--json", "--days", "3650").stdout)
    assert user["cost"] == pytest.approx(0.002)
    assert user["daily_activity"][0]["cost"] == pytest.approx(0.002)


def test_models_command(db: str) -> None:
    out = cli("models", "--db", db, "--by-cost")
    assert out.returncode == 0, out.stderr
    header, _rule, *rows = lines(out.stdout)
    assert header == [
        "model",
        "provider",
        "traces",
        "users",
        "llm_calls",
        "input_tokens",
        "output_tokens",
        "cost",
        "unpriced",
    ]
    assert [r[0] for r in rows] == ["dear", "cheap", "mystery"]
    models = json.loads(cli("models", "--db", db, "--json").stdout)
    assert {m["model"]: m["unpriced_calls"] for m in models} == {
        "cheap": 0,
        "dear": 0,
        "mystery": 1,
    }
    csv_out = cli("models", "--db", db, "--csv", "--filter", "user = 'ann'").stdout
    assert csv_out.splitlines()[1] == 'cheap,acme,1,1,1,"1,000","1,000",$0.002000,0'  # as shown
    bad = cli("models", "--db", db, "--order-by", "price DESC")
    assert bad.returncode == 2 and "cannot order by 'price'" in bad.stderr


def test_versions_and_session_show_cost(db: str) -> None:
    out = cli("versions", "--db", db)
    header, _rule, row = lines(out.stdout)
    assert header[0] == "app_version" and row[0] == "3.1"
    assert row[-4:] == ["3", "2,500", "$0.0420", "1"]
    turn = cli("session", "bob-s", "--db", db)
    header, _rule, row = lines(turn.stdout)
    assert "tokens" in header and "cost" in header and "$0.0400" in row
