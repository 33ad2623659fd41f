"""A small chat app: FastAPI + sessiontrace; one middleware line gives every trace its
user and session from the X-User-ID / X-Session-ID headers, and one mount takes the
users' feedback on each turn.

    cd examples/fastapi_app && uvicorn app:app --port 8000
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the model client

import llm_client

import sessiontrace

app = FastAPI(title="sessiontrace chat example")
# echo_trace_id: each response names its trace (X-Trace-ID), so the chat front end can
# send the user's thumbs up or down for the turn it just showed to /feedback.
app.add_middleware(sessiontrace.ASGIMiddleware, exclude_paths=["/healthz"], echo_trace_id=True)
app.mount("/feedback", sessiontrace.feedback_app())

model = llm_client.from_env()
# Conversation history per session, in memory: enough for an example.
histories: dict[str, list[dict[str, str]]] = {}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


class ChatRequest(BaseModel):
    message: str


@sessiontrace.trace(span_type="LLM")
def call_llm(messages: list[dict[str, str]]) -> str:
    return model.complete(messages)


@sessiontrace.trace(span_type="LLM")
def stream_llm(messages: list[dict[str, str]]) -> Iterator[str]:
    yield from model.stream(messages)


def _history() -> list[dict[str, str]]:
    _, session_id = sessiontrace.get_user_session_context()
    return histories.setdefault(session_id or "anonymous", [SYSTEM])


@sessiontrace.trace(span_type="CHAIN")
def chat(message: str) -> str:
    """One turn. The trace gets the request's user and session from the middleware."""
    history = _history()
    history.append({"role": "user", "content": message})
    reply = call_llm(list(history))
    history.append({"role": "assistant", "content": reply})
    return reply


@sessiontrace.trace(span_type="CHAIN")
def chat_stream(message: str) -> Iterator[str]:
    history = _history()
    history.append({"role": "user", "content": message})
    pieces = []
    for piece in stream_llm(list(history)):
        pieces.append(piece)
        yield piece
    history.append({"role": "assistant", "content": "".join(pieces)})


@app.post("/chat")
def handle_chat(request: ChatRequest) -> dict[str, str]:
    return {"response": chat(request.message)}


@app.post("/chat/stream")
def handle_chat_stream(request: ChatRequest) -> StreamingResponse:
    def events() -> Iterator[str]:
        for piece in chat_stream(request.message):
            yield f"data: {json.dumps(piece)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "model": model.name}
