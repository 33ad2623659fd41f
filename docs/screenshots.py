"""Regenerate the README's screenshots: seed a small chat history (plain traces and
traces with LLM calls, tokens and cost), serve it, shoot each page.

.venv/bin/python docs/screenshots.py      # needs the test extra and /usr/bin/chromium
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import sessiontrace  # noqa: E402
from browser.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer  # noqa: E402
from browser.seed import seed  # noqa: E402
from browser.seed_llm import seed_llm  # noqa: E402
from sessiontrace.server import create_app  # noqa: E402

OUT = Path(__file__).resolve().parent / "screenshots"


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        sessiontrace.configure(tracking_uri=f"sqlite:///{db}", flush_interval=0.01)
        ids = seed()
        sessiontrace.set_trace_tag(ids[0], "feedback", "thumbs_up")
        llm_ids = seed_llm()
        shots = {
            "sessions": "/sessions?order_by=cost+DESC",
            "session": "/session?id=llm-alice-1",
            "traces": "/traces?group=1",
            "trace": f"/trace?id={llm_ids[('llm-carol-1', 0)]}",
            "users": "/users?order_by=cost+DESC",
            "user": "/user?id=alice&days=7",
            "versions": "/versions",
            "models": "/models",
            "filter-error": "/traces?filter=user+%3D+%27bob%27+AND+tags.x+%3C%3E+%27y%27",
        }
        with LiveServer(create_app(db=db)) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            for name, path in shots.items():
                page.goto(srv.url + path)
                page.locator("main :is(table, ol, .filter-error, .span-detail)").first.wait_for()
                if name == "trace":  # the agent step: an LLM call with inner calls
                    page.locator(".tl-row:has(.tl-model)").first.click()
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
                print("wrote", OUT / f"{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
