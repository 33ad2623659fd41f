"""Bridges: other tracers' traces get the request's user and session too.

Many apps already trace with MLflow, OpenTelemetry, OpenInference or Openlayer. A
bridge gives *their* traces the ids our middleware (or ``user_session()``) put in
context, with no other change to the app:

>>> app.add_middleware(sessiontrace.ASGIMiddleware, bridges=["mlflow", "opentelemetry"])
>>> sessiontrace.bridges.enable("mlflow")     # outside a web app: user_session() reaches MLflow

=================  ================================================================
``mlflow``         ``mlflow.trace.user`` / ``mlflow.trace.session`` on every MLflow trace
                   started while our context has ids (decorators, autologgers)
``opentelemetry``  ``user.id`` / ``session.id`` on every span of the global SDK
                   provider, incl. an OTel server middleware's span mounted outside ours
``openinference``  the request's ids as OpenInference context attributes
                   (what ``using_attributes`` sets), for ``OITracer`` spans
``openlayer``      the request's ids as Openlayer's user/session context
=================  ================================================================

``enable()`` is process-wide: every middleware instance then applies the bridge's
per-request step, and the MLflow and OpenTelemetry hooks also read ``user_session()``
outside requests. A bridge's failure never reaches the request: it is logged once and
counted in ``sessiontrace.get_stats()["internal_errors"]["bridge_<name>"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._base import Bridge, registry

__all__ = ["NAMES", "SessionTraceSpanProcessor", "disable", "enable", "enabled"]


def __getattr__(name: str) -> Any:
    # Imported on first use: it needs opentelemetry-sdk.
    if name == "SessionTraceSpanProcessor":
        from ._otel import SessionTraceSpanProcessor

        return SessionTraceSpanProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The bridges there are.
NAMES = ("mlflow", "opentelemetry", "openinference", "openlayer")


def _make(name: str) -> Bridge:
    # Each bridge module is imported only when asked for: its tracer may be missing.
    if name == "mlflow":
        from ._mlflow import MlflowBridge

        return MlflowBridge()
    if name == "opentelemetry":
        from ._otel import OpenTelemetryBridge

        return OpenTelemetryBridge()
    if name == "openinference":
        try:
            from ._openinference import OpenInferenceBridge
        except ImportError as exc:
            raise ImportError(
                "the openinference bridge needs openinference-instrumentation: "
                "pip install 'sessiontrace[openinference]'"
            ) from exc
        return OpenInferenceBridge()
    if name == "openlayer":
        from ._openlayer import OpenlayerBridge

        return OpenlayerBridge()
    raise ValueError(f"unknown bridge {name!r}; choose from {', '.join(NAMES)}")


def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """The names, validated (the middleware's ``bridges=`` option)."""
    if isinstance(names, str):
        raise TypeError("bridges must be a list of names, not a single str")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in NAMES:
            raise ValueError(f"unknown bridge {name!r}; choose from {', '.join(NAMES)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def enable(*names: str, tracer_provider: Any = None) -> None:
    """Turn bridges on for the whole process (idempotent).

    Raises ``ImportError`` naming the extra to install when a tracer is missing,
    ``ValueError`` for an unknown name. ``tracer_provider``: the OpenTelemetry SDK
    provider to hook (default: the global one, which must be an SDK provider by then).
    """
    for name in check_names(names):
        with registry.lock:
            bridge = registry.enabled.get(name)
            if bridge is not None and (name != "opentelemetry" or tracer_provider is None):
                continue  # already on (a middleware's bridges= keeps the provider chosen)
            bridge = bridge or _make(name)
            if name == "opentelemetry":
                bridge.install(tracer_provider=tracer_provider)
            else:
                bridge.install()
            registry.enabled[name] = bridge
            registry.refresh()


def disable(*names: str) -> None:
    """Turn bridges off (all of them when no name is given)."""
    with registry.lock:
        for name in check_names(names) if names else tuple(registry.enabled):
            bridge = registry.enabled.pop(name, None)
            if bridge is not None:
                bridge.uninstall()
        registry.refresh()


def enabled() -> tuple[str, ...]:
    """The names of the bridges in force."""
    return tuple(registry.enabled)
