"""The sessiontrace server: web UI, JSON API and remote ingest (``pip install 'sessiontrace[ui]'``).

>>> from sessiontrace.server import create_app, serve
>>> serve(db="traces.db", port=5000)          # what `sessiontrace ui` runs
"""

from __future__ import annotations

try:
    import pydantic  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the sessiontrace server needs {exc.name}: pip install 'sessiontrace[ui]'"
    ) from exc

from ._app import create_app
from ._run import serve

__all__ = ["create_app", "serve"]
