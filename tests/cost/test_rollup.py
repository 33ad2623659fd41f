"""A trace's LLM totals: MLflow's no-double-counting rule, late spans, re-delivery."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace.llm._rollup import llm_call as read_call
from sessiontrace.llm._rollup import rollup

from .conftest import COST, MODEL, USAGE, last_trace, llm_call, usage


def columns(store_path: Path, trace_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(store_path) as conn:
        row = conn.execute(
            "SELECT input_tokens, output_tokens, total_tokens, cost, llm_calls, unpriced_calls "
            "FROM traces WHERE trace_id = ?",
            (trace_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def span_flags(store_path: Path, trace_id: str) -> dict[str, Any]:
    with sqlite3.connect(store_path) as conn:
        return dict(
            conn.execute(
                "SELECT name, llm FROM spans WHERE trace_id = ? AND llm IS NOT NULL", (trace_id,)
            ).fetchall()
        )


def metadata(trace: sessiontrace.Trace) -> tuple[Any, Any]:
    md = trace.info.trace_metadata
    usage_text, cost_text = md.get("mlflow.trace.tokenUsage"), md.get("mlflow.trace.cost")
    return (
        None if usage_text is None else json.loads(usage_text),
        None if cost_text is None else json.loads(cost_text),
    )


def test_siblings_are_summed_in_mlflows_shapes(store_path: Path) -> None:
    sessiontrace.set_model_price("m*", input_per_mtok=1, output_per_mtok=2)
    with sessiontrace.start_span("chat"):
        llm_call("a", model="m1", tokens=usage(100, 10, cache_read=40))
        llm_call("b", model="m2", tokens=usage(200, 20, cache_write=5))
    trace = last_trace()
    tokens, cost = metadata(trace)
    assert tokens == {
        "input_tokens": 300,
        "output_tokens": 30,
        "total_tokens": 330,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 5,
    }
    assert cost == pytest.approx({"input_cost": 300e-6, "output_cost": 60e-6, "total_cost": 360e-6})
    assert trace.info.token_usage == tokens
    assert columns(store_path, trace.info.trace_id) == (300, 30, 330, pytest.approx(360e-6), 2, 0)
    assert span_flags(store_path, trace.info.trace_id) == {"a": 1, "b": 1}


def test_a_parent_with_usage_hides_its_children_for_tokens_and_cost_alike(
    store_path: Path,
) -> None:
    # An agent span reporting its own total (no model: unpriced) around two priced
    # calls: MLflow counts the agent's tokens but the children's cost; we count the
    # same spans for both, so cost says "unpriced" instead of disagreeing.
    with sessiontrace.start_span("chat"):
        with sessiontrace.start_span("agent", span_type="AGENT") as agent:
            agent.set_attribute(USAGE, usage(1000, 500))
            llm_call("inner1", tokens=usage(400, 100))
            with sessiontrace.start_span("tool"):
                llm_call("inner2", tokens=usage(600, 400))
        llm_call("outer", tokens=usage(10, 5))
    trace = last_trace()
    tid = trace.info.trace_id
    tokens, cost = metadata(trace)
    assert tokens == {"input_tokens": 1010, "output_tokens": 505, "total_tokens": 1515}
    outer_cost = next(s for s in trace.data.spans if s.name == "outer").attributes[COST]
    assert cost == outer_cost  # the priced spans that count: only "outer"
    assert columns(store_path, tid) == (1010, 505, 1515, outer_cost["total_cost"], 2, 1)
    assert span_flags(store_path, tid) == {"agent": 1, "inner1": 0, "inner2": 0, "outer": 1}
    models = sessiontrace.model_breakdown()
    assert [(m.model, m.llm_calls, m.total_tokens) for m in models] == [
        (None, 1, 1500),
        ("gpt-4o-mini", 1, 15),
    ] or [(m.model, m.llm_calls, m.total_tokens) for m in models] == [
        ("gpt-4o-mini", 1, 15),
        (None, 1, 1500),
    ]
    assert sum(m.total_tokens for m in models) == 1515


def test_a_trace_without_llm_calls_gets_nothing(store_path: Path) -> None:
    with sessiontrace.start_span("chat") as span:
        span.set_attribute("model", "not an llm call")
    trace = last_trace()
    assert metadata(trace) == (None, None)
    assert columns(store_path, trace.info.trace_id) == (None,) * 6
    assert span_flags(store_path, trace.info.trace_id) == {}
    assert sessiontrace.search_traces("trace.total_tokens = 0", return_type="list")
    assert not sessiontrace.search_traces("trace.total_tokens > 0", return_type="list")


def test_a_call_without_usage_counts_as_an_unpriced_call(store_path: Path) -> None:
    with sessiontrace.start_span("chat"):
        llm_call("lost", tokens=None, **{"sessiontrace.llm.usage_missing": True})
    trace = last_trace()
    assert metadata(trace) == (None, None)
    assert columns(store_path, trace.info.trace_id) == (0, 0, 0, None, 1, 1)


def _late_child(started: threading.Event, release: threading.Event, inner: bool) -> None:
    with sessiontrace.start_span("late", span_type="CHAT_MODEL") as span:
        if inner:  # a call of its own that ends before the root does
            llm_call("early", tokens=usage(7, 3))
        started.set()
        release.wait(5)
        span.set_attributes({USAGE: usage(1000, 100, cache_read=400), MODEL: "gpt-4o-mini"})


@pytest.mark.parametrize("inner", [False, True])
def test_late_spans_keep_the_totals_exact(store_path: Path, inner: bool) -> None:
    started, release = threading.Event(), threading.Event()
    with sessiontrace.start_span("chat"):
        llm_call("first", model="gpt-4o", tokens=usage(100, 10))
        thread = threading.Thread(
            target=sessiontrace.wrap_with_context(_late_child), args=(started, release, inner)
        )
        thread.start()
        started.wait(5)
    tid = sessiontrace.get_last_active_trace_id() or ""
    sessiontrace.flush()
    before = columns(store_path, tid)
    assert before[4] == 1 + inner  # first (+ early): the running one has no usage yet
    release.set()
    thread.join()
    sessiontrace.flush()
    trace = sessiontrace.get_trace(tid)
    assert trace is not None
    late = next(s for s in trace.data.spans if s.name == "late")
    assert late.attributes[COST]["total_cost"] == pytest.approx(0.00018)  # priced when late
    first = next(s for s in trace.data.spans if s.name == "first").attributes[COST]
    tokens, cost = metadata(trace)
    # "early" is inside "late", which now has usage: no longer counted
    assert tokens == {
        "input_tokens": 1100,
        "output_tokens": 110,
        "total_tokens": 1210,
        "cache_read_input_tokens": 400,
    }
    assert cost["total_cost"] == pytest.approx(first["total_cost"] + 0.00018)
    assert columns(store_path, tid) == (1100, 110, 1210, pytest.approx(cost["total_cost"]), 2, 0)
    expected_flags = {"first": 1, "late": 1, **({"early": 0} if inner else {})}
    assert span_flags(store_path, tid) == expected_flags
    # the key/value rows that filters read agree with the row's JSON copy
    assert sessiontrace.search_traces(
        "metadata.`mlflow.trace.tokenUsage` LIKE '%1210%'", return_type="list"
    )


def test_rollup_agrees_with_a_direct_walk_on_random_trees() -> None:
    import random

    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 12)
        spans: list[tuple[str, str | None, dict[str, Any] | None]] = []
        for i in range(n):
            parent = None if i == 0 else f"s{rng.randrange(i)}"
            attrs: dict[str, Any] | None = None
            if rng.random() < 0.5:
                attrs = {}
                if rng.random() < 0.8:
                    attrs[USAGE] = usage(rng.randrange(100), rng.randrange(100))
                if rng.random() < 0.7:
                    attrs[MODEL] = "m"
                if rng.random() < 0.5 and USAGE in attrs:
                    attrs[COST] = {"input_cost": 1.0, "output_cost": 0.5, "total_cost": 1.5}
                attrs = attrs or None
            spans.append((f"s{i}", parent, attrs))
        parents = {sid: p for sid, p, _ in spans}
        by_id = {sid: a for sid, _, a in spans}

        counted = [
            a
            for sid, _, a in spans
            if a and (USAGE in a or MODEL in a) and not _has_usage_above(sid, parents, by_id)
        ]
        totals = rollup((sid, p, read_call(a)) for sid, p, a in spans)
        if not counted:
            assert totals is None or totals.llm_calls == 0
            continue
        assert totals is not None
        assert totals.llm_calls == len(counted)
        assert totals.input_tokens == sum(a[USAGE]["input_tokens"] for a in counted if USAGE in a)
        assert totals.total_tokens == sum(a[USAGE]["total_tokens"] for a in counted if USAGE in a)
        priced = [a for a in counted if COST in a]
        assert totals.unpriced_calls == len(counted) - len(priced)
        assert totals.cost == (1.5 * len(priced) if priced else None)


def _has_usage_above(
    sid: str, parents: dict[str, str | None], by_id: dict[str, dict[str, Any] | None]
) -> bool:
    p = parents[sid]
    while p is not None:
        attrs = by_id[p]
        if attrs and USAGE in attrs:
            return True
        p = parents[p]
    return False
