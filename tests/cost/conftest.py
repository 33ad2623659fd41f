"""Helpers for LLM spans made by hand, with the attributes the autologgers write."""

from __future__ import annotations

from typing import Any

import sessiontrace

USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"
PROVIDER = "mlflow.llm.provider"
COST = "mlflow.llm.cost"


def usage(
    inp: int, out: int, *, cache_read: int | None = None, cache_write: int | None = None
) -> dict[str, int]:
    u = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    if cache_read is not None:
        u["cache_read_input_tokens"] = cache_read
    if cache_write is not None:
        u["cache_creation_input_tokens"] = cache_write
    return u


def llm_call(
    name: str = "llm",
    *,
    model: str | None = "gpt-4o-mini",
    provider: str | None = "openai",
    tokens: dict[str, int] | None = None,
    span_type: str = "CHAT_MODEL",
    **extra: Any,
) -> sessiontrace.LiveSpan:
    """A finished child span carrying an LLM call's attributes (inside a trace)."""
    attributes: dict[str, Any] = dict(extra)
    if tokens is not None:
        attributes[USAGE] = tokens
    if model is not None:
        attributes[MODEL] = model
    if provider is not None:
        attributes[PROVIDER] = provider
    with sessiontrace.start_span(name, span_type=span_type, attributes=attributes) as span:
        pass
    return span


def last_trace() -> sessiontrace.Trace:
    trace = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id() or "")
    assert trace is not None
    return trace


def span_attributes(trace: sessiontrace.Trace, name: str) -> dict[str, Any]:
    return next(s for s in trace.data.spans if s.name == name).attributes
