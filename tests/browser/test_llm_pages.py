"""Tokens and cost on every page, in a real Chromium, against sums computed from the seed.

The seed (seed_llm.py) says which calls each turn made and what each model costs; the
expected numbers here come from that alone, never from the store or the API.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import pytest
from playwright.sync_api import expect

from .seed_llm import (
    CONVERSATIONS,
    UNPRICED_MODEL,
    Call,
    Totals,
    daily_cost,
    totals_where,
    turn_totals,
    usd,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def llm_seeded(store_path: Any) -> tuple[dict[tuple[str, int], str], int]:
    from .seed_llm import seed_llm

    now = int(time.time() * 1000)
    return seed_llm(now_ms=now), now


def cost_text(t: Totals) -> str:
    """What costCell shows for these totals."""
    text = usd(t.cost, t.llm_calls)
    if t.cost is not None and t.unpriced_calls:
        text += f" +{t.unpriced_calls} unpriced"
    return text


def tokens_text(t: Totals) -> str:
    return f"{t.total_tokens:,}" if t.llm_calls else "—"


def _text(locator: Any) -> str:
    """A cell's text with its line breaks as spaces ("+1 unpriced" sits on a line of
    its own under the cost)."""
    return " ".join(locator.inner_text().split())


def _cells(page: Any, key_col: int, *cols: str, within: str = "main") -> dict[str, tuple[str, ...]]:
    """Rows of the page's table (the one in ``within``), keyed by the text of column
    ``key_col``."""
    out = {}
    for row in page.locator(f"{within} table.grid tbody tr").all():
        key = _text(row.locator("td").nth(key_col))
        out[key] = tuple(_text(row.locator(f"td[data-col={c}]")) for c in cols)
    return out


def _stat(page: Any, label: str) -> str:
    box = page.locator(".stats > div", has=page.locator("dt", has_text=re.compile(f"^{label}$")))
    return _text(box.locator("dd"))


def _no_js_errors(page: Any) -> None:
    assert page.js_errors == []


def test_users_page_columns_sort_and_daily_cost(
    page: Any, live_server: Any, llm_seeded: Any
) -> None:
    _, now = llm_seeded
    users = {u for u, _ in CONVERSATIONS}
    page.goto(f"{live_server.url}/users")
    page.locator("table.grid tbody tr").first.wait_for()
    expected = {u: (tokens_text(t), cost_text(t)) for u in users for t in [totals_where(user=u)]}
    assert _cells(page, 0, "tokens", "cost") == expected
    # Independently: alice pays for all her calls, bob's only priced call is free,
    # carol's cost leaves one call out, dave made none.
    assert expected["bob"][1] == "$0.00 +1 unpriced"
    assert expected["dave"] == ("—", "—")

    # Most expensive first, then cheapest first (no cost at all sorts below $0).
    page.get_by_role("button", name="Cost").click()
    page.wait_for_url(re.compile(r"order_by=cost\+DESC"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("alice")
    names = [r.split("\t")[0] for r in page.locator("table.grid tbody tr").all_inner_texts()]
    assert names == ["alice", "carol", "bob", "dave"]
    page.get_by_role("button", name=re.compile("^Cost")).click()
    page.wait_for_url(re.compile(r"order_by=cost\+ASC"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("dave")
    page.get_by_role("button", name=re.compile("^Tokens")).click()
    page.wait_for_url(re.compile(r"order_by=total_tokens\+DESC"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("alice")
    names = [r.split("\t")[0] for r in page.locator("table.grid tbody tr").all_inner_texts()]
    by_tokens = sorted(users, key=lambda u: -totals_where(user=u).total_tokens)
    assert names == by_tokens

    # The daily cost chart: one bar per day of the last 30, each the day's sum.
    days = daily_cost(now)
    chart = page.locator("#daily-cost svg.cost-chart")
    assert chart.locator("g.day").count() >= 30
    for date, t in days.items():
        day = chart.locator(f"g.day[data-date='{date}']")
        if t.cost is None:
            assert day.get_attribute("data-cost") == ""
            assert day.locator("rect.bar").count() == 0
        else:
            assert float(day.get_attribute("data-cost")) == pytest.approx(t.cost)
        assert int(day.get_attribute("data-unpriced")) == t.unpriced_calls
        assert day.locator("circle.unpriced-mark").count() == (1 if t.unpriced_calls else 0)
        assert day.locator("title").text_content().startswith(f"{date}: {cost_text(t)}")
    priced_days = [d.get_attribute("data-date") for d in chart.locator("g.day:has(rect)").all()]
    assert sorted(priced_days) == sorted(d for d, t in days.items() if t.cost is not None)
    summary = page.locator(".cost-summary").inner_text()
    total = totals_where()
    assert cost_text(total) in summary and f"{total.total_tokens:,} tokens" in summary

    # A filter narrows the chart like the table.
    page.fill("#filter", "user = 'bob'")
    page.press("#filter", "Enter")
    page.wait_for_url(re.compile(r"filter="))
    expect(page.locator("table.grid tbody tr")).to_have_count(1)
    bob = totals_where(user="bob")
    expect(page.locator(".cost-summary")).to_contain_text(cost_text(bob))
    _no_js_errors(page)


def test_user_page_totals_and_daily_cost(page: Any, live_server: Any, llm_seeded: Any) -> None:
    _, now = llm_seeded
    page.goto(f"{live_server.url}/user?id=bob&days=7")
    chart = page.locator("#daily-cost svg.cost-chart")
    chart.locator("g.day").first.wait_for()
    bob = totals_where(user="bob")
    assert _stat(page, "LLM calls") == str(bob.llm_calls)
    assert _stat(page, "Cost") == "$0.00 +1 unpriced"
    assert _stat(page, "Tokens").startswith(
        f"{bob.total_tokens:,} {bob.input_tokens:,} in / {bob.output_tokens:,} out"
    )
    for date, t in daily_cost(now, user="bob").items():
        day = chart.locator(f"g.day[data-date='{date}']")
        if t.cost == 0:  # the free model's day: a flat bar, not an empty day
            assert day.locator("rect.bar.zero").count() == 1
        if t.cost is None:  # the unknown model's day: a mark, no bar
            assert day.locator("rect").count() == 0
            assert day.locator("circle.unpriced-mark").count() == 1
    assert "cost is unknown, not $0" in page.locator("#daily-cost").inner_text()
    # The user's sessions carry their totals too, and so do the models the user called.
    assert _cells(page, 0, "tokens", "cost", within="#user-sessions") == {
        "llm-bob-1": (tokens_text(bob), cost_text(bob))
    }
    calls = [c for turn in CONVERSATIONS[("bob", "llm-bob-1")] for c in turn.calls]
    assert _cells(page, 0, "calls", "tokens", "cost", within="#user-models") == {
        c.model: ("1", tokens_text(Totals().add_calls((c,))), usd(c.cost)) for c in calls
    }
    # Priced first (the free model at $0.00), the unknown one after it.
    models = page.locator("#user-models td[data-col=model]").all_inner_texts()
    assert models == ["llama-3.1-8b-local", UNPRICED_MODEL]
    _no_js_errors(page)


def test_session_page_per_turn_and_in_the_header(
    page: Any, live_server: Any, llm_seeded: Any
) -> None:
    for (_, session), turns in CONVERSATIONS.items():
        page.goto(f"{live_server.url}/session?id={session}")
        page.locator("#chat li.turn").first.wait_for()
        total = totals_where(session=session)
        assert _stat(page, "LLM calls") == str(total.llm_calls), session
        assert _stat(page, "Cost") == cost_text(total), session
        assert _stat(page, "Tokens").startswith(tokens_text(total)), session
        items = page.locator("#chat li.turn")
        assert items.count() == len(turns)
        for i, turn in enumerate(turns):
            t = turn_totals(turn)
            meta = items.nth(i).locator(".turn-llm")
            if not turn.calls:
                assert meta.count() == 0
                continue
            calls = f"{t.llm_calls} LLM call{'' if t.llm_calls == 1 else 's'}"
            expected = f"{calls} · {t.total_tokens:,} tokens · {cost_text(t)} ·"
            assert meta.inner_text().strip() == expected, (session, i)
    # The agent turn counts its outer call once: its inner calls' usage is inside it.
    agent = CONVERSATIONS[("carol", "llm-carol-1")][0]
    assert turn_totals(agent).total_tokens == 1700 + 255
    _no_js_errors(page)


def _spans(calls: tuple[Call, ...], hidden: bool = False) -> list[tuple[Call, bool]]:
    out = []
    for call in calls:
        out.append((call, hidden))
        out += _spans(call.inner, True)
    return out


def test_trace_page_per_span_and_totals(page: Any, live_server: Any, llm_seeded: Any) -> None:
    ids, _ = llm_seeded
    agent = CONVERSATIONS[("carol", "llm-carol-1")][0]
    page.goto(f"{live_server.url}/trace?id={ids[('llm-carol-1', 0)]}")
    page.locator(".tl-row").first.wait_for()
    t = turn_totals(agent)
    assert _stat(page, "LLM calls") == str(t.llm_calls)
    assert _stat(page, "Cost") == cost_text(t)
    assert _stat(page, "Tokens") == (
        f"{t.total_tokens:,} {t.input_tokens:,} in / {t.output_tokens:,} out"
    )
    rows = page.locator(".tl-row:has(.tl-model)")
    shown = sorted(
        (
            r.locator(".tl-model").inner_text(),
            r.locator(".tl-tokens").inner_text(),
            r.locator(".tl-cost").inner_text(),
            r.locator(".tl-llm.hidden-call").count() == 1,
        )
        for r in rows.all()
    )
    expected = sorted(
        (c.model, f"{c.input_tokens + c.output_tokens:,} tok", usd(c.cost), hidden)
        for c, hidden in _spans(agent.calls)
    )
    assert shown == expected
    assert page.locator(".tl-row").first.locator(".tl-model").count() == 0  # the root

    # The unpriced call's detail says so; an inner call says it is not counted again.
    page.locator(".tl-row", has_text=UNPRICED_MODEL).click()
    detail = page.locator("#llm-call")
    expect(detail.locator(".llm-model")).to_have_text(UNPRICED_MODEL)
    assert detail.locator(".llm-cost").inner_text() == "unpriced"
    assert "no price is known" in detail.inner_text()
    page.locator(".tl-row:has(.hidden-call)").first.click()
    expect(page.locator("#llm-call")).to_contain_text("no: an enclosing call reports this usage")

    # Cached input tokens and the input / output split of a priced call.
    page.goto(f"{live_server.url}/trace?id={ids[('llm-alice-2', 0)]}")
    page.locator(".tl-row", has_text="claude-sonnet-4").click()
    (claude,) = CONVERSATIONS[("alice", "llm-alice-2")][0].calls
    detail = page.locator("#llm-call")
    expect(detail.locator(".llm-input")).to_have_text(f"{claude.input_tokens:,}")
    assert f"incl. {claude.cache_read:,} cache read" in detail.inner_text()
    assert detail.locator(".llm-output").inner_text() == f"{claude.output_tokens:,}"
    assert detail.locator(".llm-cost").inner_text() == usd(claude.cost)
    assert "override:claude-sonnet-4" in detail.inner_text()
    _no_js_errors(page)


def test_lists_sessions_traces_versions_and_models(
    page: Any, live_server: Any, llm_seeded: Any
) -> None:
    page.goto(f"{live_server.url}/sessions")
    page.locator("table.grid tbody tr").first.wait_for()
    assert _cells(page, 0, "tokens", "cost") == {
        s: (tokens_text(t), cost_text(t))
        for _, s in CONVERSATIONS
        for t in [totals_where(session=s)]
    }

    page.goto(f"{live_server.url}/traces")
    page.locator("table.grid tbody tr").first.wait_for()
    shown = sorted(
        tuple(_text(r.locator(f"td[data-col={c}]")) for c in ("tokens", "cost"))
        for r in page.locator("table.grid tbody tr").all()
    )
    every_turn = [turn_totals(turn) for turns in CONVERSATIONS.values() for turn in turns]
    assert shown == sorted((tokens_text(t), cost_text(t)) for t in every_turn)
    # The most expensive traces first: the priced ones by cost, then those without one.
    page.get_by_role("button", name=re.compile("^Cost")).click()
    page.wait_for_url(re.compile(r"order_by=cost\+DESC"))
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Cost")
    costs = [_text(c) for c in page.locator("table.grid tbody td[data-col=cost]").all()]
    priced = sorted((t for t in every_turn if t.cost is not None), key=lambda t: -(t.cost or 0))
    assert costs[: len(priced)] == [cost_text(t) for t in priced]
    assert set(costs[len(priced) :]) <= {"unpriced", "—"}

    page.goto(f"{live_server.url}/versions")
    page.locator("table.grid tbody tr").first.wait_for()
    versions: dict[str, Totals] = defaultdict(Totals)
    for (user, _), turns in CONVERSATIONS.items():
        for turn in turns:
            versions["2.1.0" if user == "bob" else "2.0.0"].add_calls(turn.calls)
    assert _cells(page, 0, "tokens", "cost") == {
        v: (tokens_text(t), cost_text(t)) for v, t in versions.items()
    }
    page.get_by_role("button", name=re.compile("^Cost")).click()
    page.wait_for_url(re.compile(r"order_by=cost\+DESC"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("2.0.0")

    page.goto(f"{live_server.url}/models")
    page.locator("table.grid tbody tr").first.wait_for()
    models: dict[str, Totals] = defaultdict(Totals)
    for turns in CONVERSATIONS.values():
        for turn in turns:
            for call in turn.calls:  # the outer calls: those the totals count
                models[call.model].add_calls((call,))
    cols = ("calls", "input", "output", "tokens", "cost", "unpriced")
    assert _cells(page, 0, *cols) == {
        m: (
            str(t.llm_calls),
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.total_tokens:,}",
            cost_text(t),
            str(t.unpriced_calls),
        )
        for m, t in models.items()
    }
    assert _cells(page, 0, "cost")[UNPRICED_MODEL] == ("unpriced",)
    assert _cells(page, 0, "cost")["llama-3.1-8b-local"] == ("$0.00",)
    page.get_by_role("button", name=re.compile("^Cost")).click()
    page.wait_for_url(re.compile(r"order_by=cost\+DESC"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("gpt-4o")
    first = page.locator("table.grid tbody tr").first.locator("td").first.inner_text()
    assert first == max((m for m in models if models[m].cost), key=lambda m: models[m].cost or 0)
    # A model leads to the traces that called it.
    page.get_by_role("link", name=UNPRICED_MODEL, exact=True).click()
    page.wait_for_url(re.compile(r"/traces\?filter="))
    with_model = sum(
        any(c.model == UNPRICED_MODEL for c, _ in _spans(turn.calls))
        for turns in CONVERSATIONS.values()
        for turn in turns
    )
    expect(page.locator("table.grid tbody tr")).to_have_count(with_model)
    assert page.locator("#filter").input_value() == f"span.model = '{UNPRICED_MODEL}'"
    _no_js_errors(page)


def test_cost_formatting(page: Any, live_server: Any) -> None:
    """USD with sensible precision, a free model at $0.00, an unknown price "unpriced":
    one model per case, priced so that a million input tokens cost the case's amount."""
    import sessiontrace
    from sessiontrace.llm._keys import MODEL, USAGE

    cases = {
        0.0: "$0.00",
        0.00018: "$0.00018",
        0.000183456: "$0.000183",
        0.00575: "$0.00575",
        0.0202255: "$0.0202",
        0.5: "$0.50",
        0.999996: "$1.00",
        1234.5: "$1,234.50",
        1.5e-7: "$0.00000015",
        None: "unpriced",
    }
    with sessiontrace.start_span("chat"):
        for i, value in enumerate(cases):
            if value is not None:
                sessiontrace.set_model_price(f"case-{i}", input_per_mtok=value, output_per_mtok=0)
            with sessiontrace.start_span("call", span_type="CHAT_MODEL") as span:
                span.set_attributes({USAGE: {"input_tokens": 1_000_000}, MODEL: f"case-{i}"})
    assert sessiontrace.flush(5)
    page.goto(f"{live_server.url}/models")
    page.locator("table.grid tbody tr").first.wait_for()
    shown = _cells(page, 0, "cost")
    for i, (value, text) in enumerate(cases.items()):
        assert shown[f"case-{i}"] == (text,), value
        assert usd(value) == text  # the Python mirror the other tests use agrees
    _no_js_errors(page)
