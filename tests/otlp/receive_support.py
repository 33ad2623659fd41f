"""Helpers of the OTLP receiver tests: our app under a real uvicorn on 127.0.0.1, and
hand-made ExportTraceServiceRequests (for the odd deliveries an SDK never makes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from sessiontrace.server import create_app

TOKEN = "otlp-test-token-0123456789"
T0 = 1_700_000_000_000_000_000


@contextlib.contextmanager
def receiver(db: str, **options: Any) -> Iterator[str]:
    """``create_app(db=..., **options)`` served by uvicorn in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(db=db, **options), log_level="warning", lifespan="on")
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


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def span(
    trace: int,
    span_id: int,
    parent: int | None = None,
    *,
    name: str = "s",
    start: int = 0,
    end: int | None = 10,
    flags: int = 0x100,
    status: int = 0,
    **attrs: Any,
) -> Span:
    """A span of trace ``trace`` (ids as small ints); times in ms after T0."""
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=b"" if parent is None else parent.to_bytes(8, "big"),
        flags=flags,
        name=name,
        start_time_unix_nano=T0 + start * 1_000_000,
        end_time_unix_nano=0 if end is None else T0 + end * 1_000_000,
        status=Status(code=status),
        attributes=[KeyValue(key=k.replace("__", "."), value=value(v)) for k, v in attrs.items()],
    )


def request(*spans: Span, scope: str = "test") -> bytes:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [KeyValue(key="service.name", value=value("shop"))]},
                scope_spans=[ScopeSpans(scope={"name": scope}, spans=list(spans))],
            )
        ]
    ).SerializeToString()


def trace_id(n: int) -> str:
    return "tr-" + n.to_bytes(16, "big").hex()


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    """Poll ``check()`` until it returns something truthy (the SDK exports on its thread)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)
