"""The FastAPI app the ASGI tests serve: every endpoint records traces labelled by the test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

import sessiontrace


class AppError(Exception):
    """Raised by /boom; the tests check it reaches the server unchanged."""


@sessiontrace.trace
def record(label: str) -> list[str | None]:
    return list(sessiontrace.get_user_session_context())


@sessiontrace.trace
def record_as_someone_else(label: str) -> list[str | None]:
    sessiontrace.update_trace_user_session(user_id="different_user_123")
    return list(sessiontrace.get_user_session_context())


def make_app(*, lifespan_label: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if lifespan_label is not None:
            record(f"{lifespan_label}-startup")
        yield
        if lifespan_label is not None:
            record(f"{lifespan_label}-shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/whoami")
    async def whoami(label: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"seen": record(label)}

    @app.get("/sync")
    def sync_endpoint(label: str) -> dict[str, Any]:
        return {"seen": record(label), "thread": threading.get_ident()}

    @app.get("/threads")
    async def threads(label: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        seen["run_in_threadpool"] = await run_in_threadpool(record, f"{label}-run_in_threadpool")

        def in_thread(name: str, target: Any) -> None:
            t = threading.Thread(target=target, args=(f"{label}-{name}",))
            t.start()
            t.join()

        in_thread("raw_thread", record)
        in_thread("wrapped_thread", sessiontrace.wrap_with_context(record))
        with sessiontrace.ContextThreadPoolExecutor(1) as pool:
            seen["context_pool"] = pool.submit(record, f"{label}-context_pool").result()
        with ThreadPoolExecutor(1) as pool:
            seen["plain_pool"] = pool.submit(record, f"{label}-plain_pool").result()
            seen["plain_pool_wrapped"] = pool.submit(
                sessiontrace.wrap_with_context(record), f"{label}-plain_pool_wrapped"
            ).result()
        loop = asyncio.get_running_loop()
        seen["run_in_executor"] = await loop.run_in_executor(
            None, sessiontrace.wrap_with_context(record), f"{label}-run_in_executor"
        )
        return seen

    @app.get("/stream")
    async def stream(label: str, n: int = 3) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for i in range(n):
                await asyncio.sleep(0.001)
                record(f"{label}-{i}")
                yield f"chunk {i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/sse")
    async def sse(label: str) -> StreamingResponse:
        @sessiontrace.trace(name="generate")
        async def tokens() -> AsyncIterator[str]:
            for i in range(3):
                await asyncio.sleep(0.001)
                yield f"data: token{i}\n\n"

        async def events() -> AsyncIterator[str]:
            async for event in tokens():
                yield event
            record(f"{label}-after")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/stream-sync")
    def stream_sync(label: str) -> StreamingResponse:
        def chunks() -> Iterator[str]:  # iterated in the thread pool by Starlette
            for i in range(3):
                record(f"{label}-{i}")
                yield f"chunk {i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/slow-stream")
    async def slow_stream(label: str) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for i in range(200):
                yield f"chunk {i}\n"
                await asyncio.sleep(0.02)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom(label: str) -> None:
        record(label)
        raise AppError(label)

    @app.get("/background")
    async def background(label: str, tasks: BackgroundTasks) -> dict[str, str]:
        async def later() -> None:
            await asyncio.sleep(0.01)
            record(f"{label}-async-task")

        tasks.add_task(later)
        tasks.add_task(record, f"{label}-sync-task")
        return {"ok": label}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"item": item_id, "seen": record(f"item-{item_id}")}

    @app.get("/override")
    async def override(label: str) -> dict[str, Any]:
        record_as_someone_else(f"{label}-override")
        return {"seen": record(label)}

    @app.get("/healthz")
    async def healthz(label: str) -> dict[str, Any]:
        return {"seen": record(label)}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_json({"seen": record(text)})

    return app


# For uvicorn in a subprocess (``asgi_apps:app``): the plain middleware line.
app = make_app()
app.add_middleware(sessiontrace.ASGIMiddleware)
