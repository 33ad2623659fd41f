"""Feedback from the app's own front end: an ASGI and a WSGI app to mount.

>>> app.add_middleware(sessiontrace.ASGIMiddleware, echo_trace_id=True)
>>> app.mount("/feedback", sessiontrace.feedback_app())

The front end reads ``X-Trace-ID`` from a chat response and posts
``{"trace_id": ..., "name": "thumbs_up", "value": false}`` to ``/feedback``.
``_core`` holds what both apps share (validation, who may post, the store calls);
``_asgi`` and ``_wsgi`` only move bytes.
"""

from ._asgi import FeedbackApp, feedback_app
from ._core import DEFAULT_NAMES
from ._wsgi import FeedbackWSGIApp, feedback_wsgi_app

__all__ = ["DEFAULT_NAMES", "FeedbackApp", "FeedbackWSGIApp", "feedback_app", "feedback_wsgi_app"]
