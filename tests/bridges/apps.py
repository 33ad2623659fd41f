"""The apps the bridge tests serve: each route makes MLflow traces labelled by a query
parameter, from the endpoint, a streamed body, a background task or a thread pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow
from flask import Flask, request
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import sessiontrace


@mlflow.trace
def record(label: str) -> str:
    return label


@mlflow.trace
def record_overridden(label: str) -> str:
    mlflow.update_current_trace(session_id="s-override", user="u-override")
    return label


def pooled(label: str) -> None:
    with sessiontrace.ContextThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(record, label).result()


def chat(base_url: str, label: str) -> None:
    import openai

    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": label}]
        )


def starlette_app(llm_url: str = "") -> Starlette:
    async def endpoint(req: Request) -> Response:
        record(req.query_params["label"])
        return PlainTextResponse("ok")

    async def sync_endpoint(req: Request) -> Response:
        return PlainTextResponse("ok")

    async def stream(req: Request) -> Response:
        label = req.query_params["label"]

        def body() -> Iterator[str]:  # a sync generator: run in the thread pool
            for i in range(3):
                record(f"{label}-{i}")
                yield f"{i}\n"

        return StreamingResponse(body())

    async def background(req: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(record, req.query_params["label"]))

    async def pool(req: Request) -> Response:
        pooled(req.query_params["label"])
        return PlainTextResponse("ok")

    async def override(req: Request) -> Response:
        record_overridden(req.query_params["label"])
        return PlainTextResponse("ok")

    async def autolog(req: Request) -> Response:
        chat(llm_url, req.query_params["label"])
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/endpoint", endpoint),
            Route("/plain", sync_endpoint),
            Route("/stream", stream),
            Route("/background", background),
            Route("/pool", pool),
            Route("/override", override),
            Route("/autolog", autolog),
        ]
    )


def flask_app(llm_url: str = "") -> Flask:
    app = Flask(__name__)

    @app.get("/endpoint")
    def endpoint() -> str:
        record(request.args["label"])
        return "ok"

    @app.get("/stream")
    def stream() -> Any:
        label = request.args["label"]

        def body() -> Iterator[str]:  # iterated by the server after the view returned
            for i in range(3):
                record(f"{label}-{i}")
                yield f"{i}\n"

        return app.response_class(body(), mimetype="text/plain")

    @app.get("/pool")
    def pool() -> str:
        pooled(request.args["label"])
        return "ok"

    @app.get("/override")
    def override() -> str:
        record_overridden(request.args["label"])
        return "ok"

    @app.get("/autolog")
    def autolog() -> str:
        chat(llm_url, request.args["label"])
        return "ok"

    return app
