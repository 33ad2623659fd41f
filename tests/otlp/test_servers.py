"""Round trips into REAL servers: our OTLP exporter -> ``mlflow server`` and ``phoenix serve``
on 127.0.0.1 (each from its own venv, scripts/otlp_servers.py), read back through their
own Python clients: sessions, users, previews, span types, trace names, tags. Also: a
target restarted mid-run still gets 100% of the traces, and a session id longer than
MLflow accepts does not sink its batch.

Slow (the servers take 8-40 s to start, once per session) but run by ``make test``; in
CI a server that is missing or does not start fails these tests.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace import OTLPTarget
from sessiontrace._otlp._encode import shorten_id

from .readers import MLFLOW, PHOENIX, read

pytestmark = pytest.mark.slow


def turn(user: str, session: str, question: str, answer: str, **tags: str) -> str:
    with (
        sessiontrace.user_session(user, session),
        sessiontrace.start_span("chat_turn", span_type="CHAIN") as root,
    ):
        root.set_inputs({"message": question})
        if tags:
            sessiontrace.update_current_trace(tags=tags)
        with sessiontrace.start_span("llm_call", span_type="CHAT_MODEL") as llm:
            llm.set_inputs({"messages": [{"role": "user", "content": question}]})
            llm.set_attribute("mlflow.llm.model", "gpt-4o-mini")
            llm.set_attribute(
                "mlflow.chat.tokenUsage",
                {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
            )
            llm.set_outputs(answer)
        with sessiontrace.start_span("lookup", span_type="TOOL") as tool:
            tool.set_inputs({"q": question})
            tool.set_outputs({"hits": 2})
        root.set_outputs(answer)
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    return trace_id


def conversation(run: str) -> dict[str, Any]:
    """Three turns: session A (user 1) twice, session B (user 2) once; plus one turn
    whose session id is longer than MLflow's 250-character limit."""
    ids = {
        "A": f"sess-A-{run}",
        "B": f"sess-B-{run}",
        "u1": f"user-1-{run}",
        "u2": f"user-2-{run}",
        "long": f"sess-long-{run}-" + "x" * 300,
    }
    ids["trace_a1"] = turn(ids["u1"], ids["A"], "What is ML?", "Machine learning is ...", env="ci")
    ids["trace_a2"] = turn(ids["u1"], ids["A"], "And AI?", "AI is ...")
    ids["trace_b"] = turn(ids["u2"], ids["B"], "Hello", "Hi there!")
    ids["trace_long"] = turn(ids["u2"], ids["long"], "Long?", "Yes.")
    return ids


def test_mlflow_round_trip(mlflow_server: Any, store_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        flush_interval=0.01,
        app_version="3.1.4",
        otlp_targets=[OTLPTarget(mlflow_server.traces_url, mlflow_server.headers)],
    )
    ids = conversation(run)
    assert sessiontrace.flush(60)
    stats = sessiontrace.get_stats()["otlp"][0]
    assert stats["dropped"] == 0 and stats["refused_requests"] == 0, stats
    assert stats["ids_shortened"] == 1

    experiment = mlflow_server.headers["x-mlflow-experiment-id"]
    got = read(mlflow_server, MLFLOW, experiment, ids["A"])
    traces = {t["trace_id"]: t for t in got["traces"]}
    # MLflow keeps our trace ids (the same tr-<hex> form).
    assert set(traces) == {ids["trace_a1"], ids["trace_a2"], ids["trace_b"], ids["trace_long"]}
    a1 = traces[ids["trace_a1"]]
    assert a1["name"] == "chat_turn"
    assert (a1["session"], a1["user"]) == (ids["A"], ids["u1"])
    assert json.loads(a1["request_preview"]) == {"message": "What is ML?"}
    assert "Machine learning is" in a1["response_preview"]
    assert a1["tags"]["env"] == "ci"
    assert a1["tags"].get("service.version") == "3.1.4"  # resource attributes become tags
    assert "OK" in a1["state"]
    types = {s["name"]: s["type"] for s in a1["spans"]}
    assert types == {"chat_turn": "CHAIN", "llm_call": "CHAT_MODEL", "lookup": "TOOL"}
    b = traces[ids["trace_b"]]
    assert (b["session"], b["user"]) == (ids["B"], ids["u2"])
    long = traces[ids["trace_long"]]
    assert long["session"] is not None and len(long["session"]) == 250
    assert long["session"].startswith(f"sess-long-{run}-")
    assert got["by_session"] == 2  # MLflow's own session filter finds both turns of A
    if isinstance(got["sessions"], list):
        counts = {sid: n for sid, n in got["sessions"]}
        assert counts.get(ids["A"]) in (2, None)


def test_mlflow_restart_mid_run_delivers_everything(mlflow_server: Any, store_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    session = f"restart-{run}"
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        flush_interval=0.01,
        otlp_targets=[OTLPTarget(mlflow_server.traces_url, mlflow_server.headers)],
    )
    sent = [turn("u", session, f"q{i}", f"a{i}") for i in range(10)]
    assert sessiontrace.flush(60)
    mlflow_server.stop()  # the target goes away; the app keeps tracing
    sent += [turn("u", session, f"q{i}", f"a{i}") for i in range(10, 30)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not sessiontrace.get_stats()["otlp"][0]["retries"]:
        time.sleep(0.05)
    assert sessiontrace.get_stats()["otlp"][0]["retries"] >= 1  # it noticed, and holds them
    mlflow_server.restart()
    sent += [turn("u", session, f"q{i}", f"a{i}") for i in range(30, 40)]
    assert sessiontrace.flush(120)
    stats = sessiontrace.get_stats()["otlp"][0]
    assert stats["dropped"] == 0, stats
    got = read(mlflow_server, MLFLOW, mlflow_server.headers["x-mlflow-experiment-id"], session)
    arrived = {t["trace_id"] for t in got["traces"] if t["session"] == session}
    assert arrived == set(sent)  # 100%: none lost, none extra
    assert got["by_session"] == 40


def _graphql(url: str, query: str) -> Any:
    request = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_phoenix_round_trip(phoenix_server: Any, store_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    project = phoenix_server.headers["x-project-name"] + "-" + run
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        flush_interval=0.01,
        otlp_targets=[OTLPTarget.phoenix(phoenix_server.url, project=project)],
    )
    ids = conversation(run)
    assert sessiontrace.flush(60)
    stats = sessiontrace.get_stats()["otlp"][0]
    assert stats["dropped"] == 0 and stats["refused_requests"] == 0, stats

    # Phoenix stores spans from a queue about 0.1 s after it answers.
    deadline = time.monotonic() + 30
    got: dict[str, Any] = {"spans": []}
    while time.monotonic() < deadline:
        got = read(phoenix_server, PHOENIX, project)
        if len(got["spans"]) >= 12 and len(got["sessions"]) >= 3:
            break
        time.sleep(0.5)
    assert len(got["spans"]) == 12  # four traces of three spans
    kinds = {(s["name"], s["kind"]) for s in got["spans"]}
    assert kinds == {("chat_turn", "CHAIN"), ("llm_call", "LLM"), ("lookup", "TOOL")}
    for span in got["spans"]:
        attributes = span["attributes"]
        flat = attributes if "session.id" in attributes else _flatten(attributes)
        assert flat["session.id"] in (ids["A"], ids["B"], shorten_id(ids["long"], 250))
        assert flat["user.id"] in (ids["u1"], ids["u2"])
    sessions = got["sessions"]
    assert sessions[ids["A"]]["traces"] == 2 and sessions[ids["B"]]["traces"] == 1
    assert sessions[ids["A"]]["tokens"] == 84  # 42 per LLM call, from our token attributes
    turns = got["turns"][ids["A"]]
    assert [json.loads(t["input"]) for t in turns] == [
        {"message": "What is ML?"},
        {"message": "And AI?"},
    ]
    assert [t["output"] for t in turns] == ["Machine learning is ...", "AI is ..."]
    # The session's user, as Phoenix's UI shows it (GraphQL; its REST API has no user).
    answer = _graphql(
        phoenix_server.url,
        "{ projects { edges { node { name sessions(first: 50) "
        "{ edges { node { sessionId userId numTraces } } } } } } }",
    )
    users = {
        edge["node"]["sessionId"]: edge["node"]["userId"]
        for project_edge in answer["data"]["projects"]["edges"]
        if project_edge["node"]["name"] == project
        for edge in project_edge["node"]["sessions"]["edges"]
    }
    assert users[ids["A"]] == ids["u1"] and users[ids["B"]] == ids["u2"]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(_flatten(item, name + "."))
        else:
            out[name] = item
    return out
