"""One line gives every trace in a request its user and session.

>>> app.add_middleware(sessiontrace.ASGIMiddleware)                  # FastAPI, Starlette
>>> flask_app.wsgi_app = sessiontrace.WSGIMiddleware(flask_app.wsgi_app)  # Flask, any WSGI

The ids come from client headers (``X-User-ID``, ``X-Session-ID``) or from a
resolver the app supplies. They are analytics labels, not credentials: never use
them for authorization.
"""

from ._asgi import ASGIMiddleware
from ._config import DEFAULT_ALLOWED_CHARS
from ._wsgi import WSGIMiddleware

__all__ = ["DEFAULT_ALLOWED_CHARS", "ASGIMiddleware", "WSGIMiddleware"]
