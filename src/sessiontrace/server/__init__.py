"""The sessiontrace server: web UI, JSON API and remote ingest (``pip install 'sessiontrace[ui]'``).

>>> from sessiontrace.server import create_app, serve
>>> serve(db="traces.db", port=5000)          # what `sessiontrace ui` runs

Starlette, uvicorn and pydantic are imported when ``create_app`` or ``serve`` is
first used, so the CLI works (and says what to install) without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._run import serve

__all__ = ["create_app", "serve"]

INSTALL_HINT = "the sessiontrace server needs {name}: pip install 'sessiontrace[ui]'"


def _require_extra() -> None:
    for name in ("starlette", "uvicorn", "pydantic"):
        try:
            __import__(name)
        except ImportError:
            raise ImportError(INSTALL_HINT.format(name=name), name=name) from None


def __getattr__(name: str) -> Any:
    if name == "create_app":
        _require_extra()
        from ._app import create_app

        return create_app
    if name == "serve":
        _require_extra()
        from ._run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
