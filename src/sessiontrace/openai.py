"""Record every call the ``openai`` SDK makes: one span per call, with its tokens.

>>> import sessiontrace
>>> sessiontrace.openai.autolog()

Importing this module does not import ``openai``; ``autolog()`` does.
"""

from __future__ import annotations

__all__ = ["autolog"]


def autolog(disable: bool = False, *, stream_usage: bool = True) -> None:
    """Trace the ``openai`` SDK's model calls (MLflow's ``mlflow.openai.autolog`` names).

    Chat completions, legacy completions, embeddings and responses, ``create`` and
    ``parse`` and the ``.stream()`` helpers, sync and async, ``with_raw_response``
    and ``with_streaming_response``: each call is a span (a child of the current
    span, or a trace of its own) with the request, the response (streams
    reassembled), the model, the provider and ``mlflow.chat.tokenUsage``.

    Calling it twice changes nothing; ``disable=True`` puts the SDK's methods back.
    ``stream_usage``: ask for usage in chat and completion streams when the caller
    did not set ``stream_options`` (the extra usage chunk is hidden from the caller).
    Headers, API keys and ``extra_headers`` values are never recorded.
    """
    from .llm import _openai

    _openai.autolog(disable=disable, stream_usage=stream_usage)
