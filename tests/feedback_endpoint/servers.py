"""Real servers on 127.0.0.1 for the endpoint tests (the middleware tests' helpers)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from middleware.servers import uvicorn_server, werkzeug_server
from middleware.test_connection_reuse import hypercorn_server, waitress_server

ASGI_SERVERS = ["uvicorn", "hypercorn"]
WSGI_SERVERS = ["werkzeug", "waitress"]


@contextlib.contextmanager
def serve(app: Any, server: str) -> Iterator[str]:
    """Serve ``app`` with ``server`` in a thread of this process; yields the base URL."""
    if server == "uvicorn":
        with uvicorn_server(app, loop="asyncio", http="h11") as base:
            yield base
    elif server == "hypercorn":
        with hypercorn_server(app, "asyncio") as base:
            yield base
    elif server == "hypercorn-trio":
        with hypercorn_trio_server(app) as base:
            yield base
    elif server == "werkzeug":
        with werkzeug_server(app) as base:
            yield base
    else:
        with waitress_server(app) as base:
            yield base


@contextlib.contextmanager
def hypercorn_trio_server(app: Any) -> Iterator[str]:
    """hypercorn on a trio event loop (``hypercorn -k trio``) in a thread."""
    import socket
    import threading
    import time

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve as trio_serve

    from middleware.servers import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    stop = threading.Event()

    async def main() -> None:
        async def until_stopped() -> None:
            while not stop.is_set():
                await trio.sleep(0.02)

        await trio_serve(app, config, shutdown_trigger=until_stopped)

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert thread.is_alive() and time.monotonic() < deadline, "hypercorn did not start"
            time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(15)
