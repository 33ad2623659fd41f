"""LLM calls, tokens and cost in every aggregate, checked against sums computed here in
Python from what each random trace was given (not from the store's SQL)."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _tracing

from .conftest import USAGE, llm_call, usage

pytestmark = pytest.mark.backends

BASE_MS = 1_765_000_000_000
DAY_MS = 86_400_000
# Prices per million tokens (input, output, cache read), given as overrides so the
# expected costs are computed here without genai-prices.
RATES = {"alpha-1": (1.0, 2.0, 0.5), "alpha-2": (1.0, 2.0, 0.5), "beta": (3.0, 4.0, 3.0)}
MODELS = [*RATES, "unknown-x"]


@dataclasses.dataclass
class Call:
    model: str | None
    provider: str | None
    inp: int = 0
    out: int = 0
    cache_read: int = 0
    has_usage: bool = True

    @property
    def cost(self) -> float | None:
        if not self.has_usage or self.model not in RATES:
            return None
        rate_in, rate_out, rate_read = RATES[self.model]
        return ((self.inp - self.cache_read) * rate_in + self.cache_read * rate_read) / 1e6 + (
            self.out * rate_out / 1e6
        )


@dataclasses.dataclass
class Planned:
    trace_id: str
    user: str | None
    session: str | None
    start_ms: int
    version: str
    env: str
    counted: list[Call]  # the calls that count in the trace's totals
    hidden_models: list[str]  # models of calls inside an agent with usage

    @property
    def calls(self) -> int:
        return len(self.counted)

    def total(self, attr: str) -> int:
        return sum(getattr(c, attr) for c in self.counted if c.has_usage)

    @property
    def tokens(self) -> int:
        return self.total("inp") + self.total("out")

    @property
    def cost(self) -> float | None:
        costs = [c.cost for c in self.counted if c.cost is not None]
        return sum(costs) if costs else None

    @property
    def unpriced(self) -> int:
        return sum(c.cost is None for c in self.counted)


def _call(rng: random.Random) -> Call:
    model = rng.choice(MODELS)
    inp = rng.randrange(1, 5000)
    return Call(
        model,
        "acme",
        inp,
        rng.randrange(0, 800),
        rng.randrange(0, inp) if rng.random() < 0.4 else 0,
    )


def _emit(call: Call, name: str) -> None:
    tokens = None
    if call.has_usage:
        tokens = usage(call.inp, call.out, cache_read=call.cache_read or None)
    llm_call(name, model=call.model, provider=call.provider, tokens=tokens)


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[Planned]:
    for model, (rate_in, rate_out, rate_read) in RATES.items():
        sessiontrace.set_model_price(
            model, input_per_mtok=rate_in, output_per_mtok=rate_out, cache_read_per_mtok=rate_read
        )
    rng = random.Random(2026)
    clock = {"ns": 0}
    counter = itertools.count(1)
    monkeypatch.setitem(_tracing.clock, "ns", lambda: clock["ns"])
    monkeypatch.setitem(
        _tracing.ids, "trace", lambda: f"tr-{clock['ns'] // 1_000_000:012x}{next(counter):020x}"
    )
    out: list[Planned] = []
    for n in range(240):
        start = BASE_MS + rng.randrange(6 * DAY_MS)
        clock["ns"] = start * 1_000_000
        user = rng.choice([f"u{i}" for i in range(9)] + [None])
        session = None if rng.random() < 0.1 else f"s{rng.randrange(40)}"
        version, env = rng.choice(["1.0", "2.0"]), rng.choice(["staging", "production"])
        counted: list[Call] = []
        hidden: list[str] = []
        with sessiontrace.start_span("chat"):
            sessiontrace.update_current_trace(metadata={"app_version": version, "env": env})
            if user is not None or session is not None:
                sessiontrace.update_trace_user_session(user_id=user, session_id=session)
            for k in range(rng.choice([0, 0, 1, 1, 2, 3])):
                call = _call(rng)
                _emit(call, f"call{k}")
                counted.append(call)
            if rng.random() < 0.25:  # an agent reporting its own usage around calls
                agent = Call(None, None, rng.randrange(1, 900), rng.randrange(0, 90))
                with sessiontrace.start_span("agent", span_type="AGENT") as span:
                    span.set_attribute(USAGE, usage(agent.inp, agent.out))
                    for k in range(rng.randint(1, 2)):
                        inner = _call(rng)
                        _emit(inner, f"inner{k}")
                        hidden.append(inner.model or "")
                counted.append(agent)
            if rng.random() < 0.1:  # a call that reported no usage
                lost = Call("beta", "acme", has_usage=False)
                _emit(lost, "lost")
                counted.append(lost)
        trace_id = sessiontrace.get_last_active_trace_id()
        assert trace_id is not None
        out.append(Planned(trace_id, user, session, start, version, env, counted, hidden))
        if n % 50 == 0:
            clock["ns"] += 1  # never two traces in one nanosecond
    sessiontrace.flush()
    return out


def _sums(traces: Iterable[Planned]) -> dict[str, Any]:
    ts = list(traces)
    costs = [t.cost for t in ts if t.cost is not None]
    return {
        "llm_calls": sum(t.calls for t in ts),
        "input_tokens": sum(t.total("inp") for t in ts),
        "output_tokens": sum(t.total("out") for t in ts),
        "total_tokens": sum(t.tokens for t in ts),
        "cost": pytest.approx(sum(costs), rel=1e-9) if costs else None,
        "unpriced_calls": sum(t.unpriced for t in ts),
    }


def _llm_fields(record: Any) -> dict[str, Any]:
    return {k: getattr(record, k) for k in _sums([])}


def _group(planned: list[Planned], key: Callable[[Planned], Any]) -> dict[Any, list[Planned]]:
    groups: dict[Any, list[Planned]] = defaultdict(list)
    for p in planned:
        if key(p) is not None:
            groups[key(p)].append(p)
    return groups


def test_sessions(planned: list[Planned]) -> None:
    expected = {s: _sums(ts) for s, ts in _group(planned, lambda p: p.session).items()}
    page = sessiontrace.list_sessions(max_results=1000)
    assert {s.session_id: _llm_fields(s) for s in page} == expected
    summary = sessiontrace.get_session_summary("s3")
    assert summary is not None and _llm_fields(summary) == expected["s3"]


def test_session_turns(planned: list[Planned]) -> None:
    turns = sessiontrace.session_flow("s5")
    mine = sorted((p for p in planned if p.session == "s5"), key=lambda p: p.start_ms)
    assert [t.trace_id for t in turns] == [p.trace_id for p in mine]
    assert [_llm_fields(t) for t in turns] == [_sums([p]) for p in mine]


def test_users_sorted_by_cost(planned: list[Planned]) -> None:
    groups = _group(planned, lambda p: p.user)
    expected = {u: _sums(ts) for u, ts in groups.items()}
    page = sessiontrace.list_users(order_by="cost DESC", max_results=100)
    assert {u.user_id: _llm_fields(u) for u in page} == expected
    costs = {u: sum(t.cost or 0 for t in ts) for u, ts in groups.items()}
    assert [u.user_id for u in page] == sorted(costs, key=lambda u: -costs[u])
    top = sessiontrace.list_users(order_by=["total_tokens DESC"], max_results=3)
    tokens = {u: e["total_tokens"] for u, e in expected.items()}
    assert [u.user_id for u in top] == sorted(tokens, key=lambda u: -tokens[u])[:3]


def test_sessions_sorted_by_cost_page_by_page(planned: list[Planned]) -> None:
    groups = _group(planned, lambda p: p.session)
    costs = {s: sum(c for c in (t.cost for t in ts) if c is not None) for s, ts in groups.items()}
    first = sessiontrace.list_sessions(order_by="cost DESC", max_results=7)
    second = sessiontrace.list_sessions(
        order_by="cost DESC", max_results=7, page_token=first.next_page_token
    )
    got = [s.session_id for s in [*first, *second]]
    assert got == sorted(costs, key=lambda s: (-costs[s], s))[:14]


def test_user_report_with_daily_cost(planned: list[Planned]) -> None:
    now = BASE_MS + 7 * DAY_MS
    report = sessiontrace.user_report("u4", days=3, now_ms=now)
    assert report is not None
    window = [p for p in planned if p.user == "u4" and p.start_ms > now - 3 * DAY_MS]
    assert _llm_fields(report) == _sums(window)
    by_day = _group(
        window,
        lambda p: (
            datetime.datetime.fromtimestamp(p.start_ms / 1000, datetime.timezone.utc)
            .date()
            .isoformat()
        ),
    )
    assert {d.date: _llm_fields(d) for d in report.daily_activity} == {
        day: _sums(ts) for day, ts in by_day.items()
    }


@pytest.mark.parametrize("key", ["app_version", "env"])
def test_metadata_values(planned: list[Planned], key: str) -> None:
    attr = "version" if key == "app_version" else "env"
    groups = _group(planned, lambda p: getattr(p, attr))
    rows = sessiontrace.metadata_breakdown(key)
    assert {r.value: _llm_fields(r) for r in rows} == {v: _sums(ts) for v, ts in groups.items()}
    by_cost = sessiontrace.metadata_breakdown(key, order_by="cost ASC")
    assert [r.cost for r in by_cost] == sorted(r.cost for r in rows)


def test_aggregates_with_a_filter_count_only_matching_traces(planned: list[Planned]) -> None:
    matching = [p for p in planned if p.version == "2.0" and p.tokens > 1000]
    groups = _group(matching, lambda p: p.user)
    page = sessiontrace.list_users(
        filter_string="metadata.app_version = '2.0' AND trace.total_tokens > 1000", max_results=100
    )
    assert {u.user_id: _llm_fields(u) for u in page} == {u: _sums(ts) for u, ts in groups.items()}


def test_models(planned: list[Planned]) -> None:
    calls: dict[Any, list[Call]] = defaultdict(list)
    traces: dict[Any, set[str]] = defaultdict(set)
    for p in planned:
        for c in p.counted:
            calls[(c.model, c.provider)].append(c)
            traces[(c.model, c.provider)].add(p.trace_id)
    rows = sessiontrace.model_breakdown()
    got = {(r.model, r.provider): r for r in rows}
    assert set(got) == set(calls)
    for key, cs in calls.items():
        r = got[key]
        priced = [c.cost for c in cs if c.cost is not None]
        assert r.llm_calls == len(cs) and r.traces == len(traces[key])
        assert r.input_tokens == sum(c.inp for c in cs)
        assert r.total_tokens == sum(c.inp + c.out for c in cs)
        assert r.cost == (pytest.approx(sum(priced)) if priced else None)
        assert r.unpriced_calls == len(cs) - len(priced)
    assert [r.llm_calls for r in rows] == sorted((r.llm_calls for r in rows), reverse=True)
    # the models add up to the traces
    assert sum(r.total_tokens for r in rows) == sum(p.tokens for p in planned)
    by_cost = sessiontrace.model_breakdown(order_by="cost DESC", filter_string="user = 'u1'")
    u1 = [c for p in planned if p.user == "u1" for c in p.counted]
    assert sum(r.llm_calls for r in by_cost) == len(u1)
    expensive = sessiontrace.model_breakdown(order_by="cost DESC")
    costs = {r.model: r.cost for r in rows}
    assert [r.model for r in expensive] == sorted(
        costs, key=lambda m: (costs[m] is None, -(costs[m] or 0), m is not None, m or "")
    )  # unpriced last; ties by model name, SQL's NULL first


def test_filters_match_the_planned_traces(planned: list[Planned]) -> None:
    def found(text: str) -> set[str]:
        return {t.info.trace_id for t in sessiontrace.search_traces(text, return_type="list")}

    assert found("trace.total_tokens > 3000") == {p.trace_id for p in planned if p.tokens > 3000}
    assert found("trace.total_tokens < 100") == {p.trace_id for p in planned if p.tokens < 100}
    assert found("trace.input_tokens >= 2500") == {
        p.trace_id for p in planned if p.total("inp") >= 2500
    }
    assert found("trace.output_tokens <= 10") == {
        p.trace_id for p in planned if p.total("out") <= 10
    }
    assert found("trace.cost > 0.005") == {
        p.trace_id for p in planned if p.cost is not None and p.cost > 0.005
    }
    assert found("trace.cost IS NULL") == {p.trace_id for p in planned if p.cost is None}
    assert found("trace.llm_calls = 0") == {p.trace_id for p in planned if not p.calls}
    assert found("trace.unpriced_calls >= 2") == {p.trace_id for p in planned if p.unpriced >= 2}
    # span filters see every call, the ones inside an agent with usage too
    assert found("span.model = 'beta'") == {
        p.trace_id
        for p in planned
        if "beta" in p.hidden_models or any(c.model == "beta" for c in p.counted)
    }
    frame = sessiontrace.search_traces(order_by=["trace.cost DESC"], return_type="pandas")
    costs = [c for c in frame["info.cost"].tolist() if c == c]  # NaN last, then dropped
    assert costs == sorted((p.cost for p in planned if p.cost is not None), reverse=True)
    assert frame["info.total_tokens"].sum() == sum(p.tokens for p in planned)
