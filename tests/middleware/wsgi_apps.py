"""The Flask app the WSGI tests serve (also loaded by gunicorn as ``wsgi_apps:app``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request, stream_with_context

import sessiontrace


class AppError(Exception):
    """Raised by /boom."""


@sessiontrace.trace
def record(label: str) -> list[str | None]:
    return list(sessiontrace.get_user_session_context())


def make_flask() -> Flask:
    app = Flask(__name__)

    @app.get("/__ping__")
    def ping() -> str:
        return "pong"

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"seen": record(request.args["label"]), "thread": threading.get_ident()}

    @app.post("/chat")
    def chat() -> dict[str, Any]:
        with sessiontrace.start_span("chat-turn"):
            body = request.get_data()
            return {"seen": record(request.args["label"]), "size": len(body)}

    @app.get("/leave-span-open")
    def leave_span_open() -> dict[str, Any]:
        # A bug apps have: a span entered and never exited taints the worker thread.
        sessiontrace.start_span("left-open").__enter__()
        return {"seen": record(f"{request.args['label']}-child")}

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        return {"item": item_id, "seen": record(f"item-{item_id}")}

    @app.get("/stream")
    def stream() -> Response:
        label = request.args["label"]

        @sessiontrace.trace(name="generate")
        def chunks() -> Iterator[str]:
            for i in range(3):
                record(f"{label}-{i}")
                yield f"chunk {i}\n"

        return Response(chunks(), mimetype="text/plain")

    @app.get("/stream-untraced")
    def stream_untraced() -> Response:
        label = request.args["label"]

        def chunks() -> Iterator[str]:  # not traced: relies on per-chunk re-entry
            for i in range(3):
                time.sleep(0.001)
                record(f"{label}-{i}")
                yield f"chunk {i}\n"

        return Response(chunks(), mimetype="text/plain")

    @app.get("/stream-with-context")
    def stream_ctx() -> Response:
        def chunks() -> Iterator[str]:
            for i in range(2):
                record(f"{request.args['label']}-{i}")
                yield f"chunk {i}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/slow-stream")
    def slow_stream() -> Response:
        def chunks() -> Iterator[str]:
            for i in range(200):
                yield f"chunk {i}\n" + " " * 4096
                time.sleep(0.02)

        return Response(chunks(), mimetype="text/plain")

    @app.get("/on-close")
    def on_close() -> Response:
        label = request.args["label"]
        response = Response("ok")
        response.call_on_close(lambda: record(f"{label}-close"))
        return response

    @app.get("/boom")
    def boom() -> str:
        record(request.args["label"])
        raise AppError(request.args["label"])

    @app.get("/threads")
    def threads() -> dict[str, Any]:
        label = request.args["label"]
        for name, target in (("raw", record), ("wrapped", sessiontrace.wrap_with_context(record))):
            t = threading.Thread(target=target, args=(f"{label}-{name}",))
            t.start()
            t.join()
        with sessiontrace.ContextThreadPoolExecutor(1) as pool:
            pool.submit(record, f"{label}-pool").result()
        return {"ok": True}

    return app


def make_app(**options: Any) -> Flask:
    app = make_flask()
    app.wsgi_app = sessiontrace.WSGIMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


# For gunicorn: the options come from the environment of the test that starts it.
app = make_app(
    trace_requests=os.environ.get("TEST_TRACE_REQUESTS") == "1", exclude_paths=["/__ping__"]
)
