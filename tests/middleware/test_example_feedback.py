"""The example apps take their users' feedback: a chat front end reads X-Trace-ID from
a reply (streamed or not) and posts a verdict to /feedback; someone else's verdict
on that turn is refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import httpx
import pytest

import sessiontrace

from .servers import ROOT, uvicorn_server, werkzeug_server

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_feedback_{name}", EXAMPLES / name / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def in_process_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _front_end(base: str, feedback: str) -> None:
    """``feedback``: the endpoint's path (Starlette's Mount answers /feedback with a
    redirect to /feedback/; werkzeug's dispatcher serves /feedback itself)."""
    alice = {"X-User-ID": "alice", "X-Session-ID": "a-1"}
    with httpx.Client(base_url=base, timeout=30) as client:
        plain = client.post("/chat", json={"message": "Hello"}, headers=alice)
        streamed = client.post("/chat/stream", json={"message": "More"}, headers=alice)
        first, second = plain.headers["X-Trace-ID"], streamed.headers["X-Trace-ID"]
        assert first != second
        down = {"trace_id": first, "name": "thumbs_up", "value": False, "comment": "<b>no</b>"}
        posted = client.post(feedback, json=down, headers=alice)
        assert posted.status_code in (200, 201), posted.text
        up = {"trace_id": second, "name": "thumbs_up", "value": True}
        assert client.post(feedback, json=up, headers=alice).status_code in (200, 201)
        # bob may not rate alice's turn.
        bob = {"X-User-ID": "bob", "X-Session-ID": "b-1"}
        refused = client.post(feedback, json={**down, "value": True}, headers=bob)
        assert refused.status_code == 403, refused.text
        assert json.loads(refused.text).get("error")


def _check() -> None:
    assert sessiontrace.flush(10)
    traces = sessiontrace.search_traces(return_type="list", order_by=["timestamp_ms ASC"])
    given = [
        [(a.name, a.value, a.rationale, a.source.source_id) for a in t.info.assessments]
        for t in traces
    ]
    assert [t.info.name for t in traces] == ["chat", "chat_stream"]
    assert given == [
        [("thumbs_up", False, "<b>no</b>", "alice")],
        [("thumbs_up", True, None, "alice")],
    ]


def test_fastapi_example_takes_feedback() -> None:
    module = load("fastapi_app")
    with uvicorn_server(module.app) as base:
        _front_end(base, "/feedback/")
    _check()


def test_flask_example_takes_feedback() -> None:
    module = load("flask_app")
    with werkzeug_server(module.app) as base:
        _front_end(base, "/feedback")
    _check()
