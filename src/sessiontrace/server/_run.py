"""Run the server with uvicorn, refusing a public bind without a token."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import TextIO

from ._security import is_loopback

__all__ = ["serve"]


def serve(
    *,
    db: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    token: str | None = None,
    log_level: str = "warning",
    out: TextIO | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the UI until interrupted; prints the URL (a one-time login link with a token).

    A host other than loopback needs ``token``: trace content is private, and the
    UI can edit tags.
    """
    import uvicorn

    from .._config import redact_uri
    from ._app import create_app
    from ._security import LOOPBACK_HOSTS

    out = out or sys.stdout
    public = not is_loopback(host)
    if public and not token:
        raise ValueError(
            f"refusing to serve on {host!r} without a token: anyone who can reach it "
            "would read every trace. Pass --token (or SESSIONTRACE_UI_TOKEN)."
        )
    app = create_app(
        db=db,
        token=token,
        allowed_hosts=None if public else (*LOOPBACK_HOSTS, host),
    )
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}/"
    if token:
        url = f"{url}login?code={app.state.auth.new_login_code()}"
        print(f"sessiontrace UI: {url}  (one-time login link)", file=out, flush=True)
    else:
        print(f"sessiontrace UI: {url}", file=out, flush=True)
    # What the user named (a URI may hold a password: redacted), else the store's file.
    served = redact_uri(os.fspath(db) if db is not None else str(app.state.store.path))
    print(f"serving {served}; Ctrl+C to stop", file=out, flush=True)
    if on_ready is not None:
        on_ready(url)
    _tune_gc()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        # uvicorn builds every access-log line's arguments even when the level drops
        # the line: about 30 us a request. Logged only at a level that shows them.
        access_log=log_level in ("trace", "debug", "info"),
        server_header=False,
    )


def _tune_gc() -> None:
    """Garbage-collector settings for this process, which is the server's own.

    An ingest batch is thousands of short-lived objects (validated models, then the
    store's items), alive together until the batch is written, so they survive the
    young collections and every few batches a full collection walks the whole heap:
    the modules, Starlette, pydantic's schemas. Freezing what exists at start-up
    takes that heap out of the walks, and a larger first threshold runs the young
    collections less often. Measured on ingest: about 60 us a trace of parsing and
    writing became about 37. (An app that embeds ``create_app`` keeps its own
    settings: this runs only under ``sessiontrace ui``.)
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(5000, 20, 20)
