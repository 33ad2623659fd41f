"""What an LLM span carries (usage, model, cost) and a trace's totals over its spans.

A trace's totals follow MLflow's rule (``_aggregate_from_nodes``): a span's numbers
count only if none of its ancestors has usage, so a parent that already reports the
usage of its children is not counted twice. Unlike MLflow, tokens and cost come from
the *same* spans, so they always describe the same calls.

An *LLM call* is a span with ``mlflow.chat.tokenUsage`` or ``mlflow.llm.model``.
Of the counted calls, those without a cost (unknown model, no usage reported, no
model) are *unpriced*: a trace's ``cost`` covers ``llm_calls - unpriced_calls``
calls and is ``None`` when none was priced, never 0 for "unknown".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ._keys import COST, MODEL, PROVIDER, USAGE

__all__ = ["LLMCall", "Totals", "llm_call", "rollup"]


class LLMCall(NamedTuple):
    """The LLM numbers of one span (see ``llm_call``)."""

    model: str | None
    provider: str | None
    has_usage: bool
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    input_cost: float | None
    output_cost: float | None
    total_cost: float | None


def _count(value: Any) -> int | None:
    """A token count: a non-negative int (an integral float is accepted)."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def _money(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return None


def usage_counts(usage: Any) -> tuple[int, int, int, int | None, int | None] | None:
    """(input incl. cache, output, total, cache read, cache write) of a
    ``mlflow.chat.tokenUsage`` value; ``None`` when it is not a usable dict."""
    if not isinstance(usage, Mapping):
        return None
    inp = _count(usage.get("input_tokens", 0))
    out = _count(usage.get("output_tokens", 0))
    if inp is None or out is None:
        return None
    total = _count(usage.get("total_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    return inp, out, inp + out if total is None else total, cache_read, cache_write


def llm_call(attributes: Mapping[str, Any] | None) -> LLMCall | None:
    """The span's LLM numbers, or ``None`` when it is not an LLM call."""
    if not attributes:
        return None
    usage = attributes.get(USAGE)
    model = attributes.get(MODEL)
    if usage is None and model is None:
        return None
    counts = usage_counts(usage)
    provider = attributes.get(PROVIDER)
    cost = attributes.get(COST)
    total_cost = input_cost = output_cost = None
    if isinstance(cost, Mapping):
        total_cost = _money(cost.get("total_cost"))
        input_cost = _money(cost.get("input_cost"))
        output_cost = _money(cost.get("output_cost"))
        if total_cost is None and input_cost is not None and output_cost is not None:
            total_cost = input_cost + output_cost
    inp, out, total, cache_read, cache_write = counts or (0, 0, 0, None, None)
    return LLMCall(
        model if isinstance(model, str) else None,
        provider if isinstance(provider, str) else None,
        counts is not None,
        inp,
        out,
        total,
        cache_read,
        cache_write,
        input_cost,
        output_cost,
        total_cost,
    )


class Totals(NamedTuple):
    """A trace's LLM totals; ``counted`` maps each LLM span's id to 1 when it counts,
    0 when an ancestor with usage hides it."""

    llm_calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float | None
    unpriced_calls: int
    token_usage_json: str | None  # mlflow.trace.tokenUsage, None without usage
    cost_json: str | None  # mlflow.trace.cost, None when nothing was priced
    counted: dict[str, int]


def rollup(spans: Iterable[tuple[str, str | None, LLMCall | None]]) -> Totals | None:
    """Totals over ``(span_id, parent_id, llm_call(...))`` of one trace's spans;
    ``None`` when no span is an LLM call."""
    parents: dict[str, str | None] = {}
    calls: dict[str, LLMCall] = {}
    for span_id, parent_id, call in spans:
        parents[span_id] = parent_id
        if call is not None:
            calls[span_id] = call
    if not calls:
        return None
    with_usage = {sid for sid, c in calls.items() if c.has_usage}
    counted: dict[str, int] = {}
    n = inp = out = total = unpriced = 0
    cache_read = cache_write = None
    cost_in = cost_out = cost_total = 0.0
    priced = False
    for span_id, call in calls.items():
        if _hidden(span_id, parents, with_usage):
            counted[span_id] = 0
            continue
        counted[span_id] = 1
        n += 1
        inp += call.input_tokens
        out += call.output_tokens
        total += call.total_tokens
        if call.cache_read_tokens is not None:
            cache_read = (cache_read or 0) + call.cache_read_tokens
        if call.cache_write_tokens is not None:
            cache_write = (cache_write or 0) + call.cache_write_tokens
        if call.total_cost is None:
            unpriced += 1
        else:
            priced = True
            cost_total += call.total_cost
            cost_in += call.input_cost or 0.0
            cost_out += call.output_cost or 0.0
    usage_json = None
    if any(c.has_usage for sid, c in calls.items() if counted[sid]):
        usage: dict[str, int] = {"input_tokens": inp, "output_tokens": out, "total_tokens": total}
        if cache_read is not None:
            usage["cache_read_input_tokens"] = cache_read
        if cache_write is not None:
            usage["cache_creation_input_tokens"] = cache_write
        usage_json = json.dumps(usage)
    cost_json = None
    if priced:
        cost_json = json.dumps(
            {"input_cost": cost_in, "output_cost": cost_out, "total_cost": cost_total}
        )
    return Totals(
        n,
        inp,
        out,
        total,
        cost_total if priced else None,
        unpriced,
        usage_json,
        cost_json,
        counted,
    )


def _hidden(span_id: str, parents: Mapping[str, str | None], with_usage: set[str]) -> bool:
    """Whether an ancestor of the span has usage (bounded: a malformed tree with a
    cycle must not hang the writer)."""
    seen = 0
    parent = parents.get(span_id)
    while parent is not None and seen < 10_000:
        if parent in with_usage:
            return True
        parent = parents.get(parent)
        seen += 1
    return False
