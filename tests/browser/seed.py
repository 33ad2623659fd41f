"""A small, realistic set of chat traces: three users, several sessions, two app versions."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import sessiontrace

CONVERSATIONS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("alice", "session-alice-1"): [
        ("What is MLflow?", "MLflow is an open-source platform for the ML lifecycle."),
        ("And what is a trace?", "A trace records one request: its spans, inputs and outputs."),
        ("How do I group traces by user?", "Set mlflow.trace.user in the trace's metadata."),
    ],
    ("alice", "session-alice-2"): [
        ("Summarise our last chat", "We discussed MLflow, traces and user metadata."),
    ],
    ("bob", "session-bob-1"): [
        ("Translate 'hello' to French", "Bonjour"),
        ("And to German?", "Hallo"),
    ],
    ("carol", "session-carol-1"): [
        (
            "Write a haiku about SQLite",
            "One file on the disk / WAL pages hum quietly / queries come and go",
        ),
        ("Make it rhyme", "ERROR"),
    ],
}


@sessiontrace.trace(span_type="LLM")
def call_model(messages: list[dict[str, str]], model: str = "demo-1") -> dict[str, Any]:
    time.sleep(0.002)
    answer = _ANSWERS[messages[-1]["content"]]
    if answer == "ERROR":
        raise RuntimeError("the model timed out")
    return {"choices": [{"message": {"role": "assistant", "content": answer}}]}


@sessiontrace.trace
def retrieve(query: str) -> list[str]:
    return [f"doc about {query.split()[0].lower()}"]


_ANSWERS: dict[str, str] = {q: a for turns in CONVERSATIONS.values() for q, a in turns}


@sessiontrace.trace(name="chat")
def chat(user_id: str, session_id: str, message: str, version: str) -> str:
    sessiontrace.update_current_trace(
        metadata={
            "mlflow.trace.user": user_id,
            "mlflow.trace.session": session_id,
            "app_version": version,
        },
        tags={"query_category": "translation" if "ranslate" in message else "chat"},
    )
    retrieve(message)
    response = call_model([{"role": "user", "content": message}])
    return str(response["choices"][0]["message"]["content"])


def seed() -> list[str]:
    """Record the conversations in order; returns the trace ids."""
    ids = []
    for (user, session), turns in CONVERSATIONS.items():
        version = "1.1.0" if user == "bob" else "1.0.0"
        for question, _ in turns:
            with contextlib.suppress(RuntimeError):  # carol's second turn fails on purpose
                chat(user, session, question, version)
            tid = sessiontrace.get_last_active_trace_id()
            assert tid is not None
            ids.append(tid)
    assert sessiontrace.flush(10)
    return ids
