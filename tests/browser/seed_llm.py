"""Chat traces with LLM calls: models, token usage and prices, spread over a few days.

The traces go through the ingest path (the wire format, priced by ``price_items``, then
the store), as a process without a local store would send them: that is how they can
start days ago. Every LLM span is hand-made with the attributes autologging writes
(``mlflow.chat.tokenUsage``, ``mlflow.llm.model``, ``mlflow.llm.provider``); prices are
set with ``set_model_price`` so the expected costs below follow from the data alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import time
from typing import Any

import sessiontrace
from sessiontrace import _runtime
from sessiontrace._store import SQLiteStore
from sessiontrace.llm._keys import MODEL, PROVIDER, USAGE
from sessiontrace.llm._pricing import price_items
from sessiontrace.server._ingest import parse_batch

DAY_MS = 86_400_000

# USD per million tokens: (input, output, cache read or None).
PRICES: dict[str, tuple[float, float, float | None]] = {
    "gpt-4o-mini": (0.15, 0.60, None),
    "gpt-4o": (2.50, 10.00, None),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "llama-3.1-8b-local": (0.0, 0.0, None),  # self-hosted: free, shown as $0.00
}
UNPRICED_MODEL = "acme-finetune-7b"  # no price anywhere: "unpriced", never $0


@dataclasses.dataclass(frozen=True)
class Call:
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cache_read: int | None = None
    # Calls made inside this one (an agent step that reports its children's usage):
    # stored and shown, but not counted again in the totals.
    inner: tuple[Call, ...] = ()

    @property
    def usage(self) -> dict[str, int]:
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        if self.cache_read is not None:
            usage["cache_read_input_tokens"] = self.cache_read
        return usage

    @property
    def cost(self) -> float | None:
        """USD, computed here from PRICES (independently of the pricer)."""
        if self.model not in PRICES:
            return None
        inp, out, read = PRICES[self.model]
        cached = self.cache_read or 0
        read_rate = inp if read is None else read
        return (
            (self.input_tokens - cached) * inp + cached * read_rate + self.output_tokens * out
        ) / 1e6


@dataclasses.dataclass(frozen=True)
class Turn:
    question: str
    answer: str
    calls: tuple[Call, ...]
    days_ago: int
    error: bool = False


MINI = "gpt-4o-mini"
CONVERSATIONS: dict[tuple[str, str], list[Turn]] = {
    ("alice", "llm-alice-1"): [
        Turn(
            "What is a token?",
            "A piece of text the model reads.",
            (Call(MINI, "openai", 1200, 85),),
            3,
        ),
        Turn(
            "Plan a three-day trip to Lisbon",
            "Day 1: Alfama. Day 2: Belém. Day 3: Sintra.",
            (
                Call(MINI, "openai", 310, 12),  # the router
                Call("gpt-4o", "openai", 2400, 310),
            ),
            3,
        ),
    ],
    ("alice", "llm-alice-2"): [
        Turn(
            "Summarise the contract",
            "Twelve months, thirty days' notice.",
            (Call("claude-sonnet-4", "anthropic", 5200, 420, cache_read=4096),),
            1,
        ),
    ],
    ("bob", "llm-bob-1"): [
        Turn("Classify this ticket", "billing", (Call(UNPRICED_MODEL, "openai", 500, 3),), 2),
        Turn(
            "Answer it",
            "Your refund is on its way.",
            (Call("llama-3.1-8b-local", None, 800, 60),),
            0,
        ),
    ],
    ("carol", "llm-carol-1"): [
        Turn(
            "Research agent: who won in 1998?",
            "France won the 1998 World Cup.",
            (
                # The agent step reports the usage of its two inner calls (MLflow's rule:
                # a call inside a call with usage is not counted again).
                Call(
                    "gpt-4o",
                    "openai",
                    1500,
                    200,
                    inner=(Call("gpt-4o", "openai", 900, 120), Call("gpt-4o", "openai", 600, 80)),
                ),
                Call(UNPRICED_MODEL, "openai", 250, 5),
            ),
            0,
        ),
        Turn("And in 2002?", "ERROR", (Call(MINI, "openai", 400, 0),), 0, error=True),
    ],
    ("dave", "llm-dave-1"): [
        Turn("Just echo this", "Just echo this", (), 0),  # no LLM call at all
    ],
}


def set_prices() -> None:
    for model, (inp, out, read) in PRICES.items():
        sessiontrace.set_model_price(
            model, input_per_mtok=inp, output_per_mtok=out, cache_read_per_mtok=read
        )


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}-{next(counter):04d}"


def _turn_item(
    user: str, session: str, version: str, turn: Turn, start_ms: int, new_id: Any
) -> tuple[str, dict[str, Any]]:
    trace_id = new_id("tr-llm")
    root_id = new_id("sp")
    start = start_ms * 1_000_000
    t = start + 1_000_000
    spans: list[dict[str, Any]] = []

    def add_call(call: Call, parent: str) -> None:
        nonlocal t
        span_id = new_id("sp")
        begin = t
        t += 2_000_000
        for inner in call.inner:
            add_call(inner, span_id)
        t += 40_000_000
        anthropic = call.provider == "anthropic"
        spans.append(
            {
                "span_id": span_id,
                "parent_id": parent,
                "name": "Messages.create" if anthropic else "Completions.create",
                "span_type": "CHAT_MODEL",
                "start_ns": begin,
                "end_ns": t,
                "status": "OK",
                "inputs": {
                    "model": call.model,
                    "messages": [{"role": "user", "content": turn.question}],
                },
                "outputs": {"content": turn.answer},
                "attributes": {
                    USAGE: call.usage,
                    MODEL: call.model,
                    **({PROVIDER: call.provider} if call.provider else {}),
                    "mlflow.message.format": "anthropic" if anthropic else "openai",
                },
            }
        )
        t += 1_000_000

    for call in turn.calls:
        add_call(call, root_id)
    end = t + 1_000_000
    error = turn.error
    root = {
        "span_id": root_id,
        "parent_id": None,
        "name": "chat",
        "span_type": "CHAIN",
        "start_ns": start,
        "end_ns": end,
        "status": "ERROR" if error else "OK",
        "status_message": "the model timed out" if error else "",
        "inputs": {"message": turn.question},
        "outputs": None if error else {"answer": turn.answer},
    }
    item = {
        "kind": "trace",
        "trace_id": trace_id,
        "start_ns": start,
        "end_ns": end,
        "state": "ERROR" if error else "OK",
        "metadata": {
            "mlflow.trace.user": user,
            "mlflow.trace.session": session,
            "app_version": version,
        },
        "tags": {},
        "request_preview": json.dumps({"message": turn.question}),
        "response_preview": None if error else json.dumps({"answer": turn.answer}),
        "spans": [root, *spans],
    }
    return trace_id, item


def seed_llm(now_ms: int | None = None) -> dict[tuple[str, int], str]:
    """Write the conversations into the configured store; returns the trace id of each
    (session, turn index)."""
    set_prices()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    new_id = _ids()
    ids: dict[tuple[str, int], str] = {}
    items = []
    for (user, session), turns in CONVERSATIONS.items():
        version = "2.1.0" if user == "bob" else "2.0.0"
        for i, turn in enumerate(turns):
            start_ms = now - turn.days_ago * DAY_MS - (len(turns) - i) * 60_000
            trace_id, item = _turn_item(user, session, version, turn, start_ms, new_id)
            ids[(session, i)] = trace_id
            items.append(item)
    body = json.dumps({"version": 1, "items": items}).encode()
    store_items = parse_batch(body, max_items=len(items))
    store_items = price_items(store_items)  # as the ingest server does
    store = SQLiteStore(_runtime.get_store().path)
    try:
        store.export(store_items)
    finally:
        store.close()
    return ids


# -- what the pages must show, computed from the data above ---------------------------


@dataclasses.dataclass
class Totals:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add_calls(self, calls: tuple[Call, ...]) -> Totals:
        # Only the outermost calls count (their inner calls' usage is inside theirs).
        for call in calls:
            self.llm_calls += 1
            self.input_tokens += call.input_tokens
            self.output_tokens += call.output_tokens
            if call.cost is None:
                self.unpriced_calls += 1
            else:
                self.cost = (self.cost or 0.0) + call.cost
        return self


def turn_totals(turn: Turn) -> Totals:
    return Totals().add_calls(turn.calls)


def totals_where(user: str | None = None, session: str | None = None) -> Totals:
    out = Totals()
    for (u, s), turns in CONVERSATIONS.items():
        if user not in (None, u) or session not in (None, s):
            continue
        for turn in turns:
            out.add_calls(turn.calls)
    return out


def daily_cost(now_ms: int, user: str | None = None) -> dict[str, Totals]:
    """Totals per UTC date (YYYY-MM-DD) for the timestamps seed_llm(now_ms) writes."""
    out: dict[str, Totals] = {}
    for (u, _), turns in CONVERSATIONS.items():
        if user not in (None, u):
            continue
        for i, turn in enumerate(turns):
            start_ms = now_ms - turn.days_ago * DAY_MS - (len(turns) - i) * 60_000
            day = datetime.datetime.fromtimestamp(start_ms / 1000, tz=datetime.timezone.utc)
            out.setdefault(day.strftime("%Y-%m-%d"), Totals()).add_calls(turn.calls)
    return out


def usd(value: float | None, llm_calls: int = 1) -> str:
    """The UI's cost text (app.js fmtUsd / costCell), for the expected values."""
    if value is None:
        return "—" if llm_calls == 0 else "unpriced"
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = max(2, 2 - math.floor(math.log10(value)))
    whole, frac = f"{value:.{decimals}f}".split(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"
