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
    elif server == "werkzeug":
        with werkzeug_server(app) as base:
            yield base
    else:
        with waitress_server(app) as base:
            yield base
