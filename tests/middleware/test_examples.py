"""The example apps, served for real, with the fake model in process and over HTTP."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from .servers import ROOT, stored, uvicorn_server, werkzeug_server

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import fake_llm  # noqa: E402


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["in-process fake", "fake over HTTP"])
def model_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    if request.param == "in-process fake":
        yield request.param
        return
    with fake_llm.FakeLLMServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "fake-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield request.param


def _sse_text(body: str) -> str:
    pieces = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            pieces.append(json.loads(line[len("data: ") :]))
    return "".join(pieces)


def _exercise(base: str) -> None:
    alice = {"X-User-ID": "alice", "X-Session-ID": "a-1"}
    bob = {"X-User-ID": "bob", "X-Session-ID": "b-1"}
    with httpx.Client(base_url=base, timeout=30) as client:
        first = client.post("/chat", json={"message": "Hello there"}, headers=alice).json()
        assert first == {"response": fake_llm.answer([{"role": "user", "content": "Hello there"}])}
        client.post("/chat", json={"message": "Hi"}, headers=bob)
        streamed = client.post("/chat/stream", json={"message": "Tell me more"}, headers=alice)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert _sse_text(streamed.text) == fake_llm.answer(
            [{"role": "user", "content": "Tell me more"}]
        )
        assert client.get("/healthz").json()["status"] == "ok"


def _check(rows: list[dict[str, Any]], model_name: str) -> None:
    if model_name == "gpt-4o-mini":  # the real openai client, autologged
        calls = [[s for s in r["spans"] if s.span_type == "CHAT_MODEL"] for r in rows]
        assert [len(c) for c in calls] == [1, 1, 1]
        for (call,), row in zip(calls, rows, strict=True):
            assert call.attributes["mlflow.llm.model"] == "gpt-4o-mini"
            messages = call.inputs["messages"]
            usage = call.attributes["mlflow.chat.tokenUsage"]
            assert usage["input_tokens"] == fake_llm.prompt_tokens(messages)
            assert usage["output_tokens"] == fake_llm.tokens(fake_llm.answer(messages))
            assert call.parent_id == row["spans"][1].span_id  # under call_llm / stream_llm
    assert [(r["name"], r["user"], r["session"]) for r in rows] == [
        ("chat", "alice", "a-1"),
        ("chat", "bob", "b-1"),
        ("chat_stream", "alice", "a-1"),
    ]
    llm = rows[2]["spans"][1]
    assert (llm.name, llm.span_type) == ("stream_llm", "LLM")
    # The second turn of alice's session carries its history; bob's does not share it.
    assert [m["role"] for m in llm.inputs["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert rows[2]["spans"][0].outputs == llm.outputs
    assert len(rows[1]["spans"][1].inputs["messages"]) == 2


def test_fastapi_example(model_env: str) -> None:
    module = load("fastapi_app")
    expected = "FakeChatModel" if model_env == "in-process fake" else "OpenAICompatibleChatModel"
    assert type(module.model).__name__ == expected
    with uvicorn_server(module.app) as base:
        _exercise(base)
    _check(stored(), module.model.name)


def test_flask_example(model_env: str) -> None:
    module = load("flask_app")
    expected = "FakeChatModel" if model_env == "in-process fake" else "OpenAICompatibleChatModel"
    assert type(module.model).__name__ == expected
    with werkzeug_server(module.app) as base:
        _exercise(base)
    _check(stored(), module.model.name)


def test_fake_llm_speaks_the_openai_wire_format() -> None:
    messages = [{"role": "user", "content": "What is 2+2?"}]
    with fake_llm.FakeLLMServer() as server:
        plain = httpx.post(f"{server.base_url}/chat/completions", json={"messages": messages})
        with httpx.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json={"messages": messages, "stream": True},
        ) as streamed:
            lines = [line for line in streamed.iter_lines() if line]
        bad = httpx.post(f"{server.base_url}/chat/completions", json={"nope": 1})
    body = plain.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == fake_llm.answer(messages)
    assert lines[-1] == "data: [DONE]"
    deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines[:-1]]
    assert "".join(deltas) == fake_llm.answer(messages)
    assert bad.status_code == 400
    assert fake_llm.answer(messages) == fake_llm.answer(messages)  # deterministic


def test_make_demo_script_runs_offline_and_prints_the_summary(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat_demo.py"), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "10 traces in" in out
    # (user, traces, sessions) and (session, user, turns) as the script sent them.
    for user, traces, sessions in (("user-alice", 4, 2), ("user-bob", 4, 2), ("user-carol", 2, 1)):
        assert re.search(rf"^  {user} +{traces} +{sessions} ", out, re.M), user
    for session, user, turns in (("session-a1", "user-alice", 3), ("session-c1", "user-carol", 2)):
        assert re.search(rf"^  {session} +{user} +{turns}  ", out, re.M), session
    assert "user-alice: 4 interactions across 2 sessions" in out
    assert "success rate 100%" in out
    rows = stored(db)
    assert {(r["user"], r["session"]) for r in rows} == {
        ("user-alice", "session-a1"),
        ("user-alice", "session-a2"),
        ("user-bob", "session-b1"),
        ("user-bob", "session-b2"),
        ("user-carol", "session-c1"),
    }
    assert sorted({r["name"] for r in rows}) == ["chat", "chat_stream"]
    # Every turn called the model once through the real openai client: one CHAT_MODEL
    # span each, with the fake server's model and usage.
    assert "Tokens and cost per user" in out
    assert re.search(r"^  user-alice +4 +\d+ +\d+ +\$0\.\d{6}$", out, re.M)
    model_line = r"^  model gpt-4o-mini \(openai\): 10 calls, \d+ tokens, \$0\.\d{6}$"
    assert re.search(model_line, out, re.M)
    calls = [s for r in rows for s in r["spans"] if s.span_type == "CHAT_MODEL"]
    assert len(calls) == 10
    assert all(s.attributes["mlflow.chat.tokenUsage"]["total_tokens"] > 0 for s in calls)
