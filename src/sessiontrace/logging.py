"""The request's user and session, and the current trace and span, in every log record.

>>> import logging, sessiontrace
>>> handler = logging.StreamHandler()
>>> handler.addFilter(sessiontrace.logging.ContextFilter())
>>> handler.setFormatter(logging.Formatter(
...     "%(asctime)s %(user_id)s %(session_id)s %(trace_id)s %(message)s"))

``ContextFilter`` adds ``user_id``, ``session_id``, ``trace_id`` and ``span_id`` to each
record it sees (``None`` outside a request or a trace), so a format string can always
name them. Put it on a *handler* (it then sees records from every logger, including
uvicorn's and gunicorn's) or on a logger (only records logged there). ``trace_id`` and
``span_id`` are sessiontrace's (``tr-…``) when one of our spans is current, else the
current OpenTelemetry span's (32 and 16 hex digits) when OpenTelemetry is in use.

With structlog, add :func:`add_context` to the processors::

    structlog.configure(processors=[sessiontrace.logging.add_context, ...])

The ids are client input (validated by the middleware, hashed if it hashes them):
labels for finding a user's logs, not proof of who sent the request.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from ._context import _user_session
from ._tracing import _current_span

__all__ = ["FIELDS", "ContextFilter", "add_context", "current_fields"]

#: The record attributes / event keys added.
FIELDS = ("user_id", "session_id", "trace_id", "span_id")


def current_fields() -> tuple[str | None, str | None, str | None, str | None]:
    """``(user_id, session_id, trace_id, span_id)`` in force here."""
    ids = _user_session.get()
    span = _current_span.get()
    if span is not None:
        return ids.user_id, ids.session_id, span.trace_id, span.span_id
    otel = sys.modules.get("opentelemetry.trace")  # only when the app uses OpenTelemetry
    if otel is not None:
        try:
            context = otel.get_current_span().get_span_context()
            if context.is_valid:
                return (
                    ids.user_id,
                    ids.session_id,
                    format(context.trace_id, "032x"),
                    format(context.span_id, "016x"),
                )
        except Exception:  # a logging call never fails because of us
            pass
    return ids.user_id, ids.session_id, None, None


class ContextFilter(logging.Filter):
    """Add ``user_id``, ``session_id``, ``trace_id``, ``span_id`` to every record.

    Never drops a record. A record that already has one of them (``extra={...}``)
    keeps its own value.

    In a ``logging.config.dictConfig``::

        "filters": {"sessiontrace": {"()": "sessiontrace.logging.ContextFilter"}},
        "handlers": {"console": {..., "filters": ["sessiontrace"]}},
    """

    def filter(self, record: logging.LogRecord) -> bool:
        values = current_fields()
        attrs = record.__dict__
        for name, value in zip(FIELDS, values, strict=True):
            if name not in attrs:
                attrs[name] = value
        return True


def add_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the same four keys, unless the event already has them."""
    for name, value in zip(FIELDS, current_fields(), strict=True):
        event_dict.setdefault(name, value)
    return event_dict
