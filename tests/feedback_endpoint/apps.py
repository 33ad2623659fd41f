"""The chat apps the endpoint tests serve: a FastAPI app and a Flask app, each with the
middleware (``echo_trace_id=True``) outside and the feedback app mounted at /feedback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import sessiontrace


@sessiontrace.trace
def answer(label: str) -> str:
    return f"answer to {label}"


def asgi_app(
    *, middleware: dict[str, Any] | None = None, feedback: dict[str, Any] | None = None
) -> FastAPI:
    app = FastAPI()

    @app.get("/chat")
    async def chat(label: str) -> dict[str, str]:
        return {"answer": answer(label)}

    @app.get("/sync-chat")
    def sync_chat(label: str) -> dict[str, str]:
        return {"answer": answer(label)}

    @app.get("/stream")
    async def stream(label: str) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"thinking\n"  # the headers are out before the trace starts
            await anyio.sleep(0.01)
            yield (answer(label) + "\n").encode()

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/quiet")
    async def quiet() -> dict[str, str]:
        return {}

    @app.get("/twice")
    async def twice(label: str) -> dict[str, str]:
        answer(f"{label}-first")
        answer(f"{label}-second")
        return {}

    @app.get("/background")
    async def background(label: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(answer, f"{label}-background")
        return {"answer": answer(label)}

    @app.get("/own-header")
    async def own_header(label: str) -> JSONResponse:
        answer(label)
        return JSONResponse({}, headers={"X-Trace-ID": "the-app-s-own"})

    app.mount("/feedback", sessiontrace.feedback_app(**(feedback or {})))
    app.add_middleware(sessiontrace.ASGIMiddleware, **{"echo_trace_id": True, **(middleware or {})})
    return app


def wsgi_app(
    *, middleware: dict[str, Any] | None = None, feedback: dict[str, Any] | None = None
) -> Any:
    flask = Flask(__name__)

    @flask.get("/chat")
    def chat() -> dict[str, str]:
        return {"answer": answer(request.args["label"])}

    @flask.get("/stream")
    def stream() -> Response:
        label = request.args["label"]

        def body() -> Iterator[str]:
            yield "thinking\n"
            yield answer(label) + "\n"

        return Response(body(), mimetype="text/plain")

    @flask.get("/quiet")
    def quiet() -> dict[str, str]:
        return {}

    @flask.get("/own-header")
    def own_header() -> Response:
        answer(request.args["label"])
        return Response("{}", mimetype="application/json", headers={"X-Trace-ID": "the-app-s-own"})

    dispatched = DispatcherMiddleware(
        flask.wsgi_app, {"/feedback": sessiontrace.feedback_wsgi_app(**(feedback or {}))}
    )
    return sessiontrace.WSGIMiddleware(dispatched, **{"echo_trace_id": True, **(middleware or {})})


def traces_by_label() -> dict[str, dict[str, Any]]:
    """Every stored trace of ``answer(label)``, keyed by label."""
    sessiontrace.flush(10)
    found: dict[str, dict[str, Any]] = {}
    page = sessiontrace.search_traces(max_results=1000, return_type="list")
    for t in page:
        spans = t.data.spans
        label = None
        for span in spans:
            if span.name == "answer" and isinstance(span.inputs, dict):
                label = span.inputs.get("label")
        if label is not None:
            assert label not in found, f"{label} recorded twice"
            found[label] = {
                "trace_id": t.info.trace_id,
                "user": t.info.trace_metadata.get("mlflow.trace.user"),
                "session": t.info.trace_metadata.get("mlflow.trace.session"),
                "root": spans[0].name,
            }
    return found
