"""``sessiontrace.autolog()``: every supported LLM SDK that is installed."""

from __future__ import annotations

import importlib.util

__all__ = ["autolog"]


def autolog(disable: bool = False) -> list[str]:
    """Trace the model calls of every installed SDK (``openai``, ``anthropic``).

    Returns the names of the SDKs it (un)patched. Calling it twice changes nothing;
    ``disable=True`` puts their methods back.

    >>> sessiontrace.autolog()
    ['openai', 'anthropic']
    """
    from . import _anthropic, _openai

    done = []
    for name, module in (("openai", _openai), ("anthropic", _anthropic)):
        if importlib.util.find_spec(name) is None:
            continue
        module.autolog(disable=disable)
        done.append(name)
    return done
