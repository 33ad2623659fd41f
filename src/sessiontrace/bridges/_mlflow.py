"""MLflow: traces started while our context holds ids carry ``mlflow.trace.user`` /
``mlflow.trace.session``.

MLflow reads the metadata that ``mlflow.tracing.context(session_id=, user=)`` declares
once, when a trace's root span starts (``BaseMlflowSpanProcessor`` asks
``get_configured_trace_metadata()``). The bridge wraps that one function: our ids go
in first and whatever the app declared with ``mlflow.tracing.context`` goes on top,
so the app's values win, and ``mlflow.update_current_trace(session_id=, user=)`` still
wins for its trace because it runs later. Reading our context at the moment MLflow
reads its own means every place our ids reach (the endpoint, a streamed body, a
background task, ``ContextThreadPoolExecutor``, ``user_session()`` outside any web
app) reaches MLflow too, at no cost per request.

When a future MLflow no longer has that function, the bridge falls back to MLflow's
public API: the middleware enters ``mlflow.tracing.context`` around each request (and
each WSGI body chunk); ``user_session()`` outside a web app is then not bridged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .._context import _user_session
from ._base import Bridge, contained_failure

__all__ = ["MlflowBridge"]

USER_KEY = "mlflow.trace.user"
SESSION_KEY = "mlflow.trace.session"
#: Where MLflow's span processor looks up the metadata ``mlflow.tracing.context`` declared.
HOOK_MODULE = "mlflow.tracing.processor.base_mlflow"


class MlflowBridge(Bridge):
    name = "mlflow"

    def __init__(self) -> None:
        self._module: Any = None
        self._original: Callable[[], dict[str, str] | None] | None = None
        self._context: Any = None

    def install(self, **options: Any) -> None:
        try:
            import mlflow.tracing
        except ImportError as exc:
            raise ImportError(
                "the mlflow bridge needs mlflow-tracing (or mlflow): "
                "pip install 'sessiontrace[mlflow]'"
            ) from exc
        self._context = mlflow.tracing.context
        if self._original is not None:
            return
        base_mlflow: Any
        try:
            base_mlflow = importlib.import_module(HOOK_MODULE)
        except ImportError:
            base_mlflow = None
        original = getattr(base_mlflow, "get_configured_trace_metadata", None)
        if base_mlflow is None or not callable(original):
            # No hook in this MLflow: enter its public context per request instead.
            self.per_request = True
            return
        self.per_request = False
        self._module = base_mlflow
        self._original = original
        base_mlflow.get_configured_trace_metadata = _with_our_ids(original)

    def uninstall(self) -> None:
        if self._module is not None and self._original is not None:
            self._module.get_configured_trace_metadata = self._original
        self._module = self._original = None

    # The fallback, public-API path (only when the hook is missing).
    def enter(self, user_id: str | None, session_id: str | None) -> Any:
        if user_id is None and session_id is None:
            return None
        manager = self._context(session_id=session_id, user=user_id)
        manager.__enter__()
        return manager

    def exit(self, token: Any) -> None:
        if token is not None:
            token.__exit__(None, None, None)


def _with_our_ids(
    original: Callable[[], dict[str, str] | None],
) -> Callable[[], dict[str, str] | None]:
    def get_configured_trace_metadata() -> dict[str, str] | None:
        declared = original()
        try:
            current = _user_session.get()
            user, session = current.user_id, current.session_id
            if user is None and session is None:
                return declared
            ours: dict[str, str] = {}
            if user is not None:
                ours[USER_KEY] = user
            if session is not None:
                ours[SESSION_KEY] = session
            if declared:
                ours.update(declared)  # the app's mlflow.tracing.context wins
            return ours
        except Exception:
            contained_failure("mlflow")
            return declared

    get_configured_trace_metadata.__wrapped__ = original  # type: ignore[attr-defined]
    return get_configured_trace_metadata
