"""OpenTelemetry: ``user.id`` and ``session.id`` on every span started in a request.

``SessionTraceSpanProcessor.on_start`` copies our context's ids onto each span as it
starts (the span is still writable there; by ``on_end`` it is not), unless the span
already has the attribute: what the app or an instrumentor (OpenInference's
``using_attributes``) set at creation wins. That covers every tracer on the provider:
plain SDK spans, OpenInference instrumentors, ``mlflow.otel.autolog()``, Langfuse.

One span starts before our middleware can act: the server span of
``opentelemetry-instrumentation-asgi``/``-wsgi`` when that middleware sits *outside*
ours. The middleware's per-request step stamps it (the current span, when it is a
recording server span without the ids) as soon as the request's ids are known.
"""

from __future__ import annotations

from typing import Any

from .._context import _user_session
from ._base import Bridge, contained_failure

__all__ = ["SESSION_KEY", "USER_KEY", "OpenTelemetryBridge", "SessionTraceSpanProcessor"]

USER_KEY = "user.id"
SESSION_KEY = "session.id"

try:
    from opentelemetry import trace as _trace
    from opentelemetry.sdk.trace import SpanProcessor as _SpanProcessor
except ImportError:  # pragma: no cover - the class below needs the SDK
    _trace = None  # type: ignore[assignment]
    _SpanProcessor = object  # type: ignore[assignment,misc,unused-ignore]


class SessionTraceSpanProcessor(_SpanProcessor):  # type: ignore[misc,unused-ignore]
    """Stamp the request's ``user.id`` / ``session.id`` on every span when it starts.

    >>> from opentelemetry import trace
    >>> trace.get_tracer_provider().add_span_processor(SessionTraceSpanProcessor())

    ``sessiontrace.bridges.enable("opentelemetry")`` does that for the global provider.
    """

    def __init__(self) -> None:
        if _trace is None:
            raise ImportError(
                "the opentelemetry bridge needs opentelemetry-sdk: "
                "pip install 'sessiontrace[opentelemetry]'"
            )
        self.active = True

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if not self.active:
            return
        current = _user_session.get()
        user, session = current.user_id, current.session_id
        if user is None and session is None:
            return
        try:
            present = span.attributes or {}
            if user is not None and USER_KEY not in present:
                span.set_attribute(USER_KEY, user)
            if session is not None and SESSION_KEY not in present:
                span.set_attribute(SESSION_KEY, session)
        except Exception:
            contained_failure("opentelemetry")

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# One processor per provider: the SDK cannot remove a processor, so disable() switches
# it off and enable() switches the same one back on.
_processors: dict[int, tuple[Any, SessionTraceSpanProcessor]] = {}


class OpenTelemetryBridge(Bridge):
    name = "opentelemetry"
    per_request = True
    per_chunk = False  # the outer server span is stamped once, at the request's start

    def install(self, *, tracer_provider: Any = None, **options: Any) -> None:
        if _trace is None:
            raise ImportError(
                "the opentelemetry bridge needs opentelemetry-sdk: "
                "pip install 'sessiontrace[opentelemetry]'"
            )
        provider = tracer_provider if tracer_provider is not None else _trace.get_tracer_provider()
        if not hasattr(provider, "add_span_processor"):
            raise RuntimeError(
                "the opentelemetry bridge needs an SDK TracerProvider: call "
                "trace.set_tracer_provider(TracerProvider(...)) first, or pass "
                "tracer_provider=, or add SessionTraceSpanProcessor() to yours"
            )
        known = _processors.get(id(provider))
        if known is not None and known[0] is provider:
            known[1].active = True
            return
        processor = SessionTraceSpanProcessor()
        provider.add_span_processor(processor)
        _processors[id(provider)] = (provider, processor)

    def uninstall(self) -> None:
        for _, processor in _processors.values():
            processor.active = False

    def enter(self, user_id: str | None, session_id: str | None) -> Any:
        # An OTel server middleware mounted outside ours started its span before the
        # ids were known: stamp it now (only a live server span that lacks them).
        if user_id is None and session_id is None:
            return None
        span = _trace.get_current_span()
        if not span.is_recording() or getattr(span, "kind", None) != _trace.SpanKind.SERVER:
            return None
        present = getattr(span, "attributes", None) or {}
        if user_id is not None and USER_KEY not in present:
            span.set_attribute(USER_KEY, user_id)
        if session_id is not None and SESSION_KEY not in present:
            span.set_attribute(SESSION_KEY, session_id)
        return None
