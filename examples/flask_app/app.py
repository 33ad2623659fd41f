"""A small chat app: Flask + sessiontrace; wrapping ``wsgi_app`` gives every trace its
user and session from the X-User-ID / X-Session-ID headers, streamed replies included,
and a mounted endpoint takes the users' feedback on each turn.

    cd examples/flask_app && flask --app app run --port 5000
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the model client

import llm_client

import sessiontrace

app = Flask(__name__)
# /feedback takes the users' verdicts on their turns; echo_trace_id=True names each
# response's trace (X-Trace-ID) so the front end knows which turn a verdict is for.
app.wsgi_app = sessiontrace.WSGIMiddleware(  # type: ignore[method-assign]
    DispatcherMiddleware(app.wsgi_app, {"/feedback": sessiontrace.feedback_wsgi_app()}),
    exclude_paths=["/healthz"],
    echo_trace_id=True,
)

model = llm_client.from_env()
histories: dict[str, list[dict[str, str]]] = {}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


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
    # Runs while the server sends the body, after the view returned: the middleware
    # re-enters the request's user and session for every chunk.
    history = _history()
    history.append({"role": "user", "content": message})
    pieces = []
    for piece in stream_llm(list(history)):
        pieces.append(piece)
        yield piece
    history.append({"role": "assistant", "content": "".join(pieces)})


@app.post("/chat")
def handle_chat() -> dict[str, str]:
    return {"response": chat(request.get_json()["message"])}


@app.post("/chat/stream")
def handle_chat_stream() -> Response:
    message = request.get_json()["message"]

    def events() -> Iterator[str]:
        for piece in chat_stream(message):
            yield f"data: {json.dumps(piece)}\n\n"
        yield "data: [DONE]\n\n"

    return Response(events(), mimetype="text/event-stream")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "model": model.name}
