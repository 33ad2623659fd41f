"""Record every call the ``anthropic`` SDK makes: one span per call, with its tokens.

>>> import sessiontrace
>>> sessiontrace.anthropic.autolog()

Importing this module does not import ``anthropic``; ``autolog()`` does.
"""

from __future__ import annotations

__all__ = ["autolog"]


def autolog(disable: bool = False) -> None:
    """Trace the ``anthropic`` SDK's ``messages.create`` (``stream=True`` too) and
    ``messages.stream()``, sync and async (MLflow's ``mlflow.anthropic.autolog`` name).

    Each call is a span with the request, the response (streams reassembled), the
    model and ``mlflow.chat.tokenUsage``, whose ``input_tokens`` include cache reads
    and writes. Calling it twice changes nothing; ``disable=True`` puts the SDK's
    methods back. Headers and API keys are never recorded.
    """
    from .llm import _anthropic

    _anthropic.autolog(disable=disable)
