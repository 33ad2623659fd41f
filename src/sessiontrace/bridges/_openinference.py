"""OpenInference: our ids as its context attributes (``using_attributes``) per request.

OpenInference's ``OITracer`` copies ``session.id`` / ``user.id`` from the OTel context
onto the spans it starts. The middleware attaches a context with the request's ids
under those keys, as ``using_attributes(session_id=, user_id=)`` does, around the app
(and, for WSGI, around every body chunk) and detaches it by token, so a streamed body
has them and the next request does not. Both keys are set, to a value or ``None``, so a
request without ids never inherits another's from a reused server context. A
``using_attributes`` the app enters inside wins (inner scope).
"""

from __future__ import annotations

from typing import Any

# openinference-instrumentation depends on opentelemetry-api; without it this module
# is not imported (bridges.enable imports each bridge only when asked for).
from opentelemetry.context import attach, detach, get_current, set_value

from ._base import Bridge

__all__ = ["OpenInferenceBridge"]


class OpenInferenceBridge(Bridge):
    name = "openinference"
    per_request = True

    def install(self, **options: Any) -> None:
        try:
            import openinference.instrumentation  # noqa: F401
            from openinference.semconv.trace import SpanAttributes
        except ImportError as exc:
            raise ImportError(
                "the openinference bridge needs openinference-instrumentation: "
                "pip install 'sessiontrace[openinference]'"
            ) from exc
        self._session_key = SpanAttributes.SESSION_ID
        self._user_key = SpanAttributes.USER_ID

    def enter(self, user_id: str | None, session_id: str | None) -> Any:
        ctx = set_value(self._session_key, session_id, get_current())
        return attach(set_value(self._user_key, user_id, ctx))

    def exit(self, token: Any) -> None:
        detach(token)
