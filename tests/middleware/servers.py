"""Real servers on 127.0.0.1 for the middleware tests, and reading back what they stored."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from werkzeug.serving import make_server

import sessiontrace
from sessiontrace import _runtime

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def uvicorn_server(app: Any, **options: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields the base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextlib.contextmanager
def werkzeug_server(app: Any) -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded server; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(15)


@contextlib.contextmanager
def gunicorn_server(
    app: str, db: Path, *, threads: int = 4, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``gunicorn -k gthread`` in a subprocess writing traces to ``db``."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    environ = {
        **os.environ,
        "SESSIONTRACE_TRACKING_URI": f"sqlite:///{db}",
        "SESSIONTRACE_FLUSH_INTERVAL": "0.01",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "examples")]),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            str(threads),
            "--graceful-timeout",
            "5",
            "--log-level",
            "warning",
            app,
        ],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"gunicorn exited: {out}")
            try:
                httpx.get(f"{base}/__ping__", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def stored(
    db: Path | None = None, *, expect: int | None = None, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """All traces as dicts (oldest first), with their metadata and spans.

    ``db`` reads another process's file (polling until ``expect`` traces are there).
    """
    if db is None:
        sessiontrace.flush(10)
        store = _runtime.get_store()
    else:
        store = sessiontrace.SQLiteStore(db)
    try:
        deadline = time.monotonic() + timeout
        while True:
            ids = store.list_trace_ids(limit=100_000)
            if expect is None or len(ids) >= expect or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        traces = store.load_traces(ids)
    finally:
        if db is not None:
            store.close()
    out = []
    for t in traces:
        info = t.info
        out.append(
            {
                "trace_id": info.trace_id,
                "name": t.data.spans[0].name if t.data.spans else None,
                "user": info.trace_metadata.get("mlflow.trace.user"),
                "session": info.trace_metadata.get("mlflow.trace.session"),
                "request_id": info.client_request_id,
                "state": info.state,
                "inputs": t.data.spans[0].inputs if t.data.spans else None,
                "spans": t.data.spans,
                "request_time": info.request_time,
            }
        )
    out.sort(key=lambda r: (r["request_time"], r["trace_id"]))
    return out


def by_label(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The trace holding each ``record(label)`` span, keyed by label (root or child).

    Fails on a label recorded twice, so a request that leaked into another shows.
    """
    result: dict[str, dict[str, Any]] = {}
    for row in rows:
        for span in row["spans"]:
            if span.name == "record" and isinstance(span.inputs, dict):
                label = span.inputs["label"]
                assert label not in result, f"label {label!r} recorded twice"
                result[label] = {**row, "span": span}
    return result


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
