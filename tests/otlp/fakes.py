"""A scripted fake OTLP/HTTP endpoint and the loader of scripts/otlp_servers.py."""

from __future__ import annotations

import gzip
import http.server
import importlib.util
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/x-protobuf"


@dataclass
class Received:
    headers: dict[str, str]
    request: ExportTraceServiceRequest

    @property
    def spans(self) -> list[Any]:
        return [
            span for rs in self.request.resource_spans for ss in rs.scope_spans for span in ss.spans
        ]


class FakeOTLP:
    """An OTLP/HTTP endpoint that records every request and answers from a script:
    ``replies`` are used first to last, then ``default``. ``gate``, when set, holds
    every request until it is released (a target that hangs)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.default = Reply()
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if fake.gate is not None:
                    fake.gate.wait(30)
                with fake.lock:
                    fake.received.append(
                        Received(
                            {k.lower(): v for k, v in self.headers.items()},
                            ExportTraceServiceRequest.FromString(body),
                        )
                    )
                    reply = fake.replies.pop(0) if fake.replies else fake.default
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def spans(self) -> list[Any]:
        with self.lock:
            return [span for r in self.received for span in r.spans]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def partial(rejected: int, message: str = "bad span") -> bytes:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = rejected
    response.partial_success.error_message = message
    return response.SerializeToString()


def partial_json(rejected: int, message: str = "bad span") -> bytes:
    return json.dumps(
        {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}
    ).encode()


def load_otlp_servers() -> ModuleType:
    """``scripts/otlp_servers.py``, imported by path: scripts/ is not a package."""
    name = "otlp_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "otlp_servers.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
