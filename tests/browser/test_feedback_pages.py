"""Users' feedback in the UI: on the turn it was given for, in the satisfaction of
sessions, users and app versions, and as inert text however hostile."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

import sessiontrace

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _human(user: str) -> Any:
    return sessiontrace.AssessmentSource(source_type="HUMAN", source_id=user)


def _give_feedback(ids: list[str]) -> dict[str, Any]:
    """seed()'s traces, in order: alice-1 (3 turns), alice-2, bob-1 (2), carol-1 (2).
    alice and carol run 1.0.0 and are happy; bob runs 1.1.0 and is not."""
    fb = sessiontrace.log_feedback
    fb(ids[0], "thumbs_up", True, source=_human("alice"), rationale="clear")
    down = fb(ids[1], "thumbs_up", False, source=_human("alice"), rationale="that is not how")
    first = fb(ids[2], "thumbs_up", False, source=_human("alice"), rationale="misread it")
    fixed = sessiontrace.override_feedback(
        ids[2], first.assessment_id, True, rationale="misclicked", source=_human("alice")
    )
    fb(ids[2], "rating", 4, source=_human("alice"))
    fb(ids[4], "thumbs_up", False, source=_human("bob"), rationale="Bonjour?! Too short")
    fb(ids[5], "thumbs_up", False, source=_human("bob"))
    fb(ids[6], "thumbs_up", True, source=_human("carol"))
    assert sessiontrace.flush(10)
    return {"down": down, "overridden": first, "fix": fixed}


def _no_js_errors(page: Any) -> None:
    assert page.js_errors == []


def test_the_thumbs_down_is_on_its_turn(page: Any, live_server: Any, seeded: list[str]) -> None:
    _give_feedback(seeded)
    page.goto(f"{live_server.url}/session?id=session-alice-1")
    turns = page.locator("#chat li.turn")
    turns.first.wait_for()
    assert turns.count() == 3
    # Turn 2 carries the thumbs-down, its comment and who gave it; only it is marked.
    second = turns.nth(1)
    expect(second.locator(".fb")).to_have_count(1)
    assert second.locator(".fb").get_attribute("data-value") == "false"
    assert second.locator(".fb .fb-value.neg svg.thumb.down").count() == 1
    assert second.locator(".fb .fb-comment").inner_text() == "that is not how"
    assert second.locator(".fb .fb-source").inner_text() == "alice"
    assert second.get_attribute("data-trace-id") == seeded[1]
    assert page.locator("li.turn-negative").count() == 1
    assert "turn-negative" in (second.get_attribute("class") or "")
    # Turn 1: a thumbs-up. Turn 3: the overridden thumbs-down stays, marked and struck,
    # beside its correction and a numeric rating.
    assert turns.nth(0).locator(".fb .fb-value.pos svg.thumb.up").count() == 1
    third = turns.nth(2).locator(".fb")
    expect(third).to_have_count(3)
    overridden = turns.nth(2).locator(".fb.overridden")
    expect(overridden).to_have_count(1)
    assert overridden.get_attribute("data-value") == "false"
    assert "overridden" in overridden.locator(".fb-overridden").inner_text()
    assert overridden.locator(".fb-value").evaluate(
        "e => getComputedStyle(e).textDecorationLine"
    ) == ("line-through")
    valid = turns.nth(2).locator(".fb:not(.overridden)")
    assert sorted(valid.nth(i).get_attribute("data-value") for i in range(2)) == ["4", "true"]
    # The session's satisfaction: 2 of 3 valid thumbs are up (the rating is not a thumb).
    stats = page.locator(".stats").inner_text()
    assert re.search(r"Satisfaction\s+66\.7% · 4 feedback · +1\b", stats), stats
    assert page.locator(".stats .fb-mean[data-name=rating]").inner_text() == "4.00 mean · 1"
    _no_js_errors(page)


def test_lists_sort_by_satisfaction_and_negative_feedback(
    page: Any, live_server: Any, seeded: list[str]
) -> None:
    _give_feedback(seeded)
    page.goto(f"{live_server.url}/sessions")
    page.locator("table.grid tbody tr").first.wait_for()
    page.click("a.sort-negative")
    page.wait_for_url(re.compile(r"order_by=negative_feedback"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("session-bob-1")
    first = page.locator("table.grid tbody tr").first
    assert first.locator("td[data-col=negative]").inner_text().strip() == "2"
    assert first.locator("td[data-col=negative] svg.thumb.down").count() == 1
    assert first.locator("td[data-col=satisfaction]").inner_text().startswith("0.0%")
    # Clicking the column header flips the order; sessions without feedback show "—".
    page.get_by_role("button", name=re.compile("^Negative")).click()
    page.wait_for_url(re.compile(r"negative_feedback\+ASC|negative_feedback%20ASC"))
    cells = page.locator("td[data-col=satisfaction]").all_inner_texts()
    assert "—" in cells  # session-alice-2 has none

    page.goto(f"{live_server.url}/users")
    page.locator("table.grid tbody tr").first.wait_for()
    page.click("a.sort-satisfaction")
    page.wait_for_url(re.compile(r"order_by=satisfaction"))
    expect(page.locator("table.grid tbody tr").first).to_contain_text("bob")
    users = [t.split("\t")[0] for t in page.locator("table.grid tbody tr").all_inner_texts()]
    assert users[0] == "bob"
    carol = page.locator("table.grid tbody tr", has_text="carol")
    assert carol.locator("td[data-col=satisfaction]").inner_text().startswith("100.0%")
    _no_js_errors(page)


def test_user_and_versions_pages_show_satisfaction(
    page: Any, live_server: Any, seeded: list[str]
) -> None:
    _give_feedback(seeded)
    page.goto(f"{live_server.url}/user?id=bob")
    page.locator("#satisfaction svg.satisfaction-chart").wait_for()
    stats = page.locator(".stats").inner_text()
    assert re.search(r"Satisfaction\s+0\.0% · 2 feedback · +2\b", stats), stats
    today = page.locator("#satisfaction circle.fb-day")
    expect(today).to_have_count(1)  # every verdict today: one point
    assert float(today.get_attribute("data-rate")) == 0.0
    assert today.get_attribute("data-negative") == "2"

    page.goto(f"{live_server.url}/versions")
    page.locator("table.grid tbody tr").first.wait_for()
    rows = page.locator("table.grid tbody tr")
    by_version = {
        rows.nth(i).locator("td").first.inner_text(): rows.nth(i) for i in range(rows.count())
    }
    assert set(by_version) == {"1.0.0", "1.1.0"}
    # 1.0.0: alice's 2 up 1 down (the overridden one not counted) and carol's up: 3/4.
    assert by_version["1.0.0"].locator("td[data-col=satisfaction]").inner_text().startswith("75.0%")
    assert by_version["1.1.0"].locator("td[data-col=satisfaction]").inner_text().startswith("0.0%")
    assert by_version["1.1.0"].locator("td[data-col=negative]").inner_text().strip() == "2"
    chart = page.locator("#satisfaction svg.satisfaction-chart")
    chart.wait_for()
    series = chart.locator("g.series")
    assert sorted(series.evaluate_all("gs => gs.map(g => g.dataset.series)")) == [
        "1.0.0",
        "1.1.0",
    ]
    rate = chart.locator("g.series[data-series='1.1.0'] circle.fb-day").get_attribute("data-rate")
    assert float(rate) == 0.0
    assert "1.1.0" in page.locator("#satisfaction .legend").inner_text()
    # Sorting the versions by satisfaction puts the worse one first.
    page.goto(f"{live_server.url}/versions?order_by=satisfaction+ASC")
    expect(page.locator("table.grid tbody tr").first.locator("td").first).to_have_text("1.1.0")
    _no_js_errors(page)


def test_trace_page_lists_its_feedback(page: Any, live_server: Any, seeded: list[str]) -> None:
    given = _give_feedback(seeded)
    page.goto(f"{live_server.url}/trace?id={seeded[2]}")
    items = page.locator("#feedback .fb")
    items.first.wait_for()
    assert items.count() == 3
    overridden = page.locator("#feedback .fb.overridden")
    assert overridden.locator(".fb-comment").inner_text() == given["overridden"].rationale
    assert "correction" in page.locator("#feedback .fb", has_text="misclicked").inner_text()
    # An expectation (the answer wanted) is listed as one, not counted as feedback.
    sessiontrace.log_expectation(seeded[0], "expected_answer", {"answer": "An ML platform"})
    page.goto(f"{live_server.url}/trace?id={seeded[0]}")
    expected = page.locator("#feedback .fb", has_text="expected_answer")
    expected.wait_for()
    assert "(expected)" in expected.inner_text()
    assert expected.locator(".fb-value").inner_text() == '{"answer":"An ML platform"}'
    page.goto(f"{live_server.url}/session?id=session-alice-1")
    page.locator("#chat li.turn").first.wait_for()
    assert "expected_answer" not in page.locator("#chat").inner_text()
    page.goto(f"{live_server.url}/trace?id={seeded[3]}")
    expect(page.locator("#feedback")).to_have_text("No feedback on this trace.")
    _no_js_errors(page)


# -- hostile feedback text --------------------------------------------------------------

IMG = "<img src=x onerror=\"window.__pwned='img';alert(1)\">"
SCRIPT_END = "</script><script>window.__pwned='script';alert(2)</script>"
SVG = "\"'><svg onload=\"window.__pwned='svg';alert(3)\"></svg>"
BIDI = "\u202egnp.exe\u202c \u200b\u200d\ufeff zero\u200bwidth \u2067isolate\u2069"
HOSTILE = f"{IMG}{SCRIPT_END}{SVG} {BIDI}"
LONG = "A" * 3000 + IMG + "B" * 3000
DETAILS = {"html": IMG, "list": [SCRIPT_END]}


def _hostile_feedback(ids: list[str]) -> None:
    fb = sessiontrace.log_feedback
    fb(ids[0], "thumbs_up", False, source=_human(f"alice{IMG}"), rationale=HOSTILE)
    fb(ids[1], "thumbs_up", False, source=_human("alice"), rationale=LONG)
    fb(ids[2], f"label{SVG}", HOSTILE, source=_human("alice"), metadata={"k": HOSTILE})
    fb(ids[4], "details", DETAILS, source=_human("bob"))

    # An app version named by a payload: its line and legend on the versions chart.
    @sessiontrace.trace(name="chat")
    def chat() -> str:
        sessiontrace.update_current_trace(metadata={"app_version": HOSTILE})
        return "ok"

    with sessiontrace.user_session(user_id="alice", session_id="session-evil"):
        chat()
    evil = sessiontrace.get_last_active_trace_id()
    assert evil is not None and sessiontrace.flush(10)
    fb(evil, "thumbs_up", False, source=_human("alice"), rationale=HOSTILE)
    assert sessiontrace.flush(10)


def _assert_inert(page: Any, url: str, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__pwned") is None, url
    injected = page.evaluate(
        "() => document.querySelectorAll('main img, main script, main svg[onload], "
        "main [onerror], main [onload]').length"
    )
    assert injected == 0, url
    assert dialogs == [], url


def _visit(page: Any, base: str, ids: list[str]) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pages = [
        ("/session", {"id": "session-alice-1"}, "#chat .fb"),
        ("/trace", {"id": ids[0]}, "#feedback .fb"),
        ("/trace", {"id": ids[2]}, "#feedback .fb"),
        ("/trace", {"id": ids[4]}, "#feedback .fb"),
        ("/sessions", {}, "table.grid"),
        ("/users", {}, "table.grid"),
        ("/user", {"id": "alice"}, "#satisfaction"),
        ("/versions", {}, "#satisfaction"),
    ]
    for path, params, ready in pages:
        url = f"{base}{path}?{urlencode(params)}" if params else f"{base}{path}"
        page.goto(url)
        page.locator(ready).first.wait_for()
        _assert_inert(page, url, dialogs)
    # The text is on the page, literally: markup, bidi and zero-width characters and all.
    page.goto(f"{base}/session?id=session-alice-1")
    turns = page.locator("#chat li.turn")
    turns.first.wait_for()
    assert turns.nth(0).locator(".fb-comment").text_content() == HOSTILE
    assert turns.nth(0).locator(".fb-source").text_content() == f"alice{IMG}"
    assert turns.nth(1).locator(".fb-comment").text_content() == LONG
    # A long comment stays inside the page's width (it wraps, it does not widen main).
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width
    third = turns.nth(2).locator(".fb")
    assert third.locator(".fb-name").text_content() == f"label{SVG}"
    assert third.locator(".fb-value").text_content() == HOSTILE
    page.goto(f"{base}/versions")
    legend = page.locator("#satisfaction .legend-item", has_text="gnp")
    legend.wait_for()
    assert legend.text_content().strip() == HOSTILE
    series = page.locator("#satisfaction g.series").evaluate_all(
        "gs => gs.map(g => g.getAttribute('data-series'))"
    )
    assert HOSTILE in series
    page.goto(f"{base}/trace?id={ids[4]}")
    value = page.locator("#feedback .fb-value")
    value.wait_for()
    assert value.text_content() == json.dumps(DETAILS, separators=(",", ":"))
    _assert_inert(page, "final", dialogs)


def test_hostile_feedback_stays_inert(page: Any, live_server: Any, seeded: list[str]) -> None:
    _hostile_feedback(seeded)
    _visit(page, live_server.url, seeded)
    _no_js_errors(page)


def test_hostile_feedback_stays_inert_without_csp(
    page_without_csp: Any, live_server: Any, seeded: list[str]
) -> None:
    _hostile_feedback(seeded)
    _visit(page_without_csp, live_server.url, seeded)
    _no_js_errors(page_without_csp)


def test_trace_list_shows_each_traces_thumbs(
    page: Any, live_server: Any, seeded: list[str]
) -> None:
    _give_feedback(seeded)
    page.goto(f"{live_server.url}/traces?" + urlencode({"filter": "session = 'session-alice-1'"}))
    page.locator("table.grid tbody tr").first.wait_for()
    cells = page.locator("td[data-col=feedback]")
    expect(cells).to_have_count(3)
    brief = {
        cells.nth(i).locator("xpath=..").locator("a.mono").first.get_attribute("href"): (
            cells.nth(i).locator("svg.thumb.up").count(),
            cells.nth(i).locator("svg.thumb.down").count(),
            cells.nth(i).inner_text().strip(),
        )
        for i in range(3)
    }
    assert brief[f"/trace?id={seeded[0]}"] == (1, 0, "")
    assert brief[f"/trace?id={seeded[1]}"] == (0, 1, "")
    # The overridden thumbs-down is not shown; the correction is, with the rating as +1.
    assert brief[f"/trace?id={seeded[2]}"] == (1, 0, "+1")
    _no_js_errors(page)
