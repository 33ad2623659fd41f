"""What a person does in the UI, in a real Chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

import sessiontrace

from .seed import CONVERSATIONS

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _no_js_errors(page: Any, *, allow_bad_request: bool = False) -> None:
    expected = "the server responded with a status of 400"
    errors = [e for e in page.js_errors if not (allow_bad_request and expected in e)]
    assert errors == []


def test_sessions_page_then_a_session_shows_turns_in_order(
    page: Any, live_server: Any, seeded: list[str]
) -> None:
    page.goto(f"{live_server.url}/sessions")
    rows = page.locator("table.grid tbody tr")
    rows.first.wait_for()
    assert rows.count() == len(CONVERSATIONS)
    page.get_by_role("link", name="session-alice-1", exact=True).click()
    page.wait_for_url(re.compile(r"/session\?id=session-alice-1$"))
    turns = page.locator("#chat li.turn")
    turns.first.wait_for()
    expected = CONVERSATIONS[("alice", "session-alice-1")]
    assert turns.count() == len(expected)
    for i, (question, answer) in enumerate(expected):
        assert turns.nth(i).locator(".bubble.user .text").inner_text() == question
        assert turns.nth(i).locator(".bubble.app .text").inner_text() == answer
    assert page.locator(".stats").inner_text().count("alice") == 1
    _no_js_errors(page)


def test_user_to_session_to_trace(page: Any, live_server: Any, seeded: list[str]) -> None:
    """The path the issue's 'done when' names: users list -> user -> session -> trace."""
    page.goto(f"{live_server.url}/users")
    page.get_by_role("link", name="carol", exact=True).click()
    page.wait_for_url(re.compile(r"/user\?id=carol"))
    page.locator("svg.chart g.day").first.wait_for()
    assert "query_category" in page.locator(".tag-grid").inner_text()
    page.get_by_role("link", name="session-carol-1", exact=True).first.click()
    page.wait_for_url(re.compile(r"/session\?id=session-carol-1"))
    second = page.locator("#chat li.turn").nth(1)
    assert "ERROR" in second.locator(".turn-meta").inner_text()
    second.get_by_role("link", name="trace →").click()
    page.wait_for_url(re.compile(r"/trace\?id=tr-"))
    page.locator(".tl-row").first.wait_for()
    names = page.locator(".tl-row .tl-name").all_inner_texts()
    assert [n.split(" ", 1)[1] for n in names] == ["chat", "retrieve", "call_model"]
    page.locator(".tl-row", has_text="call_model").click()
    assert "the model timed out" in page.locator("#span-detail").inner_text()
    assert "Make it rhyme" in page.locator("#span-detail .io-inputs").inner_text()
    _no_js_errors(page)


def test_filter_box_good_and_bad(page: Any, live_server: Any, seeded: list[str]) -> None:
    page.goto(f"{live_server.url}/traces")
    page.locator("table.grid tbody tr").first.wait_for()
    assert page.locator("table.grid tbody tr").count() == len(seeded)

    page.fill("#filter", "user = 'bob' AND tags.query_category = 'translation'")
    page.press("#filter", "Enter")
    page.wait_for_url(re.compile(r"filter="))
    expect(page.locator("table.grid tbody tr")).to_have_count(1)
    assert set(page.locator("td a.filter-user").all_inner_texts()) == {"bob"}

    bad = "user = 'bob' AND tags.x <> 'y'"
    page.fill("#filter", bad)
    page.press("#filter", "Enter")
    error = page.locator(".filter-error")
    error.wait_for()
    position = int(error.get_attribute("data-position"))
    assert bad[position:].startswith("<>")
    assert error.locator("mark").inner_text() == "<"
    assert page.locator("#filter").get_attribute("aria-invalid") == "true"
    assert page.locator("table.grid").count() == 0

    # Clicking a session id filters by it; the group toggle groups by session.
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    page.locator("a.filter-session", has_text="session-alice-1").first.click()
    expect(page.locator("table.grid tbody tr")).to_have_count(3)
    assert page.locator("#filter").input_value() == "session = 'session-alice-1'"
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    expect(page.locator("table.grid tbody tr")).to_have_count(len(seeded))
    page.check("#group-by-session")
    page.locator("tr.group-row").first.wait_for()
    assert page.locator("tr.group-row").count() == len(CONVERSATIONS)
    _no_js_errors(page, allow_bad_request=True)  # the bad filter's answer


def test_pagination(page: Any, live_server: Any, seeded: list[str]) -> None:
    page.goto(f"{live_server.url}/sessions")
    page.locator("table.grid tbody tr").first.wait_for()

    # 50 a page by default: make more sessions than that.
    @sessiontrace.trace
    def ping(i: int) -> int:
        return i

    for i in range(55):
        with sessiontrace.user_session(user_id="dave", session_id=f"s-{i:03d}"):
            ping(i)
    sessiontrace.flush(10)
    page.reload()
    page.locator("table.grid tbody tr").first.wait_for()
    assert page.locator("table.grid tbody tr").count() == 50
    page.click("button.next")
    page.wait_for_url(re.compile(r"page_token="))
    expect(page.locator("table.grid tbody tr")).to_have_count(9)
    _no_js_errors(page)


def test_edit_a_tag(page: Any, live_server: Any, seeded: list[str]) -> None:
    trace_id = seeded[0]
    page.goto(f"{live_server.url}/trace?id={trace_id}")
    page.locator("#tags").wait_for()
    page.fill("[data-tag-key=query_category]", "docs")
    page.click("button.save-tag")
    expect(page.locator(".tag-status")).to_have_text("")
    expect(page.locator("[data-tag-key=query_category]")).to_have_value("docs")
    page.fill("#new-tag-key", "feedback")
    page.fill("#new-tag-value", "thumbs_up")
    page.click("#add-tag")
    page.locator("[data-tag-key=feedback]").wait_for()
    trace = sessiontrace.get_trace(trace_id)
    assert trace is not None
    assert trace.info.tags == {"query_category": "docs", "feedback": "thumbs_up"}
    page.reload()
    assert page.locator("[data-tag-key=feedback]").input_value() == "thumbs_up"
    page.locator("tr", has=page.locator("[data-tag-key=feedback]")).locator(".delete-tag").click()
    expect(page.locator("[data-tag-key=feedback]")).to_have_count(0)
    trace = sessiontrace.get_trace(trace_id)
    assert trace is not None and trace.info.tags == {"query_category": "docs"}
    _no_js_errors(page)


def test_versions_page(page: Any, live_server: Any, seeded: list[str]) -> None:
    page.goto(f"{live_server.url}/versions")
    page.locator("table.grid tbody tr").first.wait_for()
    rows = page.locator("table.grid tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["1.0.0", "1.1.0"]
    assert page.locator("svg.chart g.row").count() == 2
    _no_js_errors(page)


def test_a_token_server_opens_with_the_one_time_login_link(
    page: Any, store_path: Any, seeded: list[str]
) -> None:
    from sessiontrace.server import create_app
    from sessiontrace.server._security import SESSION_COOKIE

    from .conftest import LiveServer

    app = create_app(db=store_path, token="a-token-of-24-characters")
    with LiveServer(app) as server:
        refused = page.goto(f"{server.url}/sessions")
        assert refused is not None and refused.status == 401
        assert "one-time login link" in page.inner_text("body")

        code = app.state.auth.new_login_code()
        page.goto(f"{server.url}/login?code={code}")
        page.wait_for_url(re.compile(r"/sessions$"))
        rows = page.locator("table.grid tbody tr")
        rows.first.wait_for()
        assert rows.count() == len(CONVERSATIONS)  # the API answered the cookie
        cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert SESSION_COOKIE not in page.evaluate("document.cookie")  # out of scripts' reach

        # A tag edit works on the cookie (and its CSRF token), like on a loopback server.
        page.goto(f"{server.url}/trace?id={seeded[0]}")
        page.fill("[data-tag-key=query_category]", "reviewed")
        page.click("button.save-tag")
        expect(page.locator(".tag-status")).to_have_text("")
        trace = sessiontrace.get_trace(seeded[0])
        assert trace is not None and trace.info.tags["query_category"] == "reviewed"

        page.context.clear_cookies()
        reused = page.goto(f"{server.url}/login?code={code}")
        assert reused is not None and reused.status == 403  # a link opens one browser
        again = page.goto(f"{server.url}/sessions")
        assert again is not None and again.status == 401
    # Chromium logs the refused page loads themselves; nothing else may appear.
    refused_loads = re.compile(r"status of 40[13] \((Unauthorized|Forbidden)\)")
    assert [e for e in page.js_errors if not refused_loads.search(e)] == []
