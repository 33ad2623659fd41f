"""`make demo` (and `make demo-postgres`) end to end: the scripted users post their
verdicts through the app's mounted /feedback endpoint (reading X-Trace-ID from each
reply, streamed ones too), and a person who opens the UI sees them on the turn, per
user and per app version."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

import sessiontrace

from .conftest import LiveServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backends,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run_demo(db: str, home: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat_demo.py"), "--db", db],
        capture_output=True,
        text=True,
        timeout=180,
        # This checkout's package, whatever the venv's editable install points at.
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _check_output(out: str) -> None:
    assert "[thumbs down: it missed the action items]" in out
    # The canary (1.1.0) is the worse version: 1 of 4 thumbs up against 4 of 4.
    assert re.search(r"^  1\.0\.0 +4 +5 +0 +100%$", out, re.M), out
    assert re.search(r"^  1\.1\.0 +6 +4 +3 +25%$", out, re.M), out
    assert re.search(r"^  user-bob +33% of 3 feedback, 2 negative$", out, re.M), out


def _check_store(store: Any) -> None:
    traces = sessiontrace.search_traces(return_type="list", store=store)
    given = {
        (t.info.session_id, a.name, a.value, a.rationale, a.source.source_id, a.valid)
        for t in traces
        for a in t.info.assessments
    }
    assert ("session-b1", "thumbs_up", False, "it missed the action items", "user-bob", True) in (
        given
    )
    # A streamed reply's trace got its feedback too (X-Trace-ID on a streamed response).
    assert ("session-b1", "thumbs_up", False, "still too long", "user-bob", True) in given
    # carol changed her mind: her second post replaced the first (one value per user,
    # name and trace), it did not add a second one.
    carol = [g for g in given if g[0] == "session-c1" and g[1] == "thumbs_up"]
    assert carol == [("session-c1", "thumbs_up", True, "fine after all", "user-carol", True)]
    assert ("session-a1", "rating", 5, None, "user-alice", True) in given
    assert len(given) == 9  # 8 thumbs (carol's replaced in place) and one rating
    assert {a.source.source_type for t in traces for a in t.info.assessments} == {"HUMAN"}


def _check_ui(page: Any, db: str, shots: Path) -> None:
    from sessiontrace.server import create_app

    with LiveServer(create_app(db=db)) as server:
        page.goto(f"{server.url}/session?id=session-b1")
        turns = page.locator("#chat li.turn")
        turns.first.wait_for()
        first = turns.nth(0).locator(".fb")
        expect(first).to_have_count(1)
        assert first.locator(".fb-value.neg svg.thumb.down").count() == 1
        assert first.locator(".fb-comment").inner_text() == "it missed the action items"
        assert first.locator(".fb-source").inner_text() == "user-bob"
        assert turns.nth(2).locator(".fb").count() == 0  # "Perfect": no verdict
        page.screenshot(path=str(shots / "session.png"), full_page=True)

        page.goto(f"{server.url}/versions")
        page.locator("#satisfaction svg.satisfaction-chart").wait_for()
        rows = page.locator("table.grid tbody tr")
        cells = {
            rows.nth(i).locator("td").first.inner_text(): rows.nth(i)
            .locator("td[data-col=satisfaction]")
            .inner_text()
            for i in range(rows.count())
        }
        assert cells["1.0.0"].startswith("100.0%") and cells["1.1.0"].startswith("25.0%")
        series = page.locator("#satisfaction g.series")
        assert sorted(series.evaluate_all("gs => gs.map(g => g.dataset.series)")) == [
            "1.0.0",
            "1.1.0",
        ]
        page.screenshot(path=str(shots / "versions.png"), full_page=True)

        page.goto(f"{server.url}/users?order_by=satisfaction+ASC")
        expect(page.locator("table.grid tbody tr").first).to_contain_text("user-bob")
        # The model every turn called: 5 of 8 thumbs up over all its traces.
        page.goto(f"{server.url}/models")
        model = page.locator("table.grid tbody td[data-col=satisfaction]")
        expect(model).to_have_count(1)
        assert model.inner_text().startswith("62.5%")
    assert page.js_errors == []


def test_the_demo_posts_feedback_that_the_ui_shows(
    page: Any, db: str, store: Any, tmp_path: Path
) -> None:
    out = _run_demo(db, tmp_path)
    _check_output(out)
    _check_store(store)
    _check_ui(page, db, tmp_path)
