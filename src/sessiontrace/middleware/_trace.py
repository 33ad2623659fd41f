"""The request trace of ``trace_requests=True``: one root span per HTTP request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._entities import SpanStatus, SpanType
from .._runtime import count_internal_error
from .._serialize import dumps
from .._tracing import LiveSpan, _close_span, _current_span, _open_span

__all__ = ["RequestTrace"]


class RequestTrace:
    """Collects status and (a bounded prefix of) the body; ends exactly once."""

    __slots__ = (
        "body",
        "content_type",
        "done",
        "limit",
        "method",
        "route",
        "size",
        "span",
        "status",
        "truncated",
    )

    def __init__(self, method: str, path: str, scheme: str, limit: int) -> None:
        self.method = method
        self.route: str | None = None
        self.span: LiveSpan = _open_span(
            f"{method} {path}",
            SpanType.HTTP,
            {"http.method": method, "http.target": path, "http.scheme": scheme},
            _current_span.get(),
        )
        self.span.set_inputs({"method": method, "path": path})
        self.status: int | None = None
        self.content_type = ""
        self.body: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.truncated = False
        self.done = False

    def add_body(self, chunk: bytes) -> None:
        if not chunk:
            return
        room = self.limit - self.size
        if room <= 0:
            self.truncated = True
        elif len(chunk) > room:
            self.body.append(chunk[:room])
            self.truncated = True
        else:
            self.body.append(chunk)
        self.size += len(chunk)

    def finish(self, exc: BaseException | None, disconnected: bool = False) -> None:
        if self.done:
            return
        self.done = True
        span = self.span
        route = self.route
        try:
            if route:
                span.name = f"{self.method} {route}"
                span.set_attribute("http.route", route)
            if self.status is not None:
                span.set_attribute("http.status_code", self.status)
                if self.status >= 500 and exc is None:
                    span.set_status(SpanStatus.ERROR, f"HTTP {self.status}")
            span.set_attribute("http.response_bytes", self.size)
            if self.truncated:
                span.set_attribute("http.response_truncated", True)
            if disconnected:
                span.set_attribute("http.client_disconnected", True)
            span.outputs_json = self._output()
        except Exception:  # the request trace must never fail the request
            count_internal_error("middleware_request_trace")
        finally:
            _close_span(span, exc)

    def _output(self) -> str | None:
        if not self.body:
            return None
        text = b"".join(self.body).decode("utf-8", "replace")
        if not self.truncated and "json" in self.content_type:
            try:
                return dumps(json.loads(text))  # stored as the structured value
            except ValueError:
                pass
        return dumps(text)


def route_of(scope: Mapping[str, Any]) -> str | None:
    """The route template (``/items/{id}``) once routing ran; FastAPI sets ``scope["route"]``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None
