"""``sessiontrace.autolog()``: every supported LLM SDK that is installed."""

from __future__ import annotations

import importlib.util
import warnings

from .. import _runtime

__all__ = ["autolog"]


def autolog(disable: bool = False) -> list[str]:
    """Trace the model calls of every installed SDK (``openai``, ``anthropic``).

    Returns the names of the SDKs it (un)patched. Calling it twice changes nothing;
    ``disable=True`` puts their methods back. An SDK that cannot be patched (an
    unsupported version) is skipped with a warning; the others still are.

    >>> sessiontrace.autolog()
    ['openai', 'anthropic']
    """
    from . import _anthropic, _openai

    done = []
    for name, module in (("openai", _openai), ("anthropic", _anthropic)):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module.autolog(disable=disable)
        except Exception as exc:
            _runtime.count_internal_error(f"llm.autolog.{name}")
            warnings.warn(
                f"sessiontrace.autolog(): {name} calls are not traced ({type(exc).__name__}: "
                f"{exc}); sessiontrace.{name}.autolog() raises the error itself.",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        done.append(name)
    return done
