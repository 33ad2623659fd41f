"""LLM output is full of HTML: payloads anywhere in a trace must stay inert text."""

from __future__ import annotations

import json
from typing import Any

import pytest

import sessiontrace

SCRIPT = "<script>window.__pwned = 'script'</script>"
IMG = "<img src=x onerror=\"window.__pwned = 'img'\">"
SVG = "\"'><svg onload=\"window.__pwned = 'svg'\"></svg>"
PAYLOAD = f"{SCRIPT}{IMG}{SVG}"
MODEL_NAME = f"model{IMG}"  # an LLM span's model name is trace content too


def _record_hostile_traces() -> str:
    @sessiontrace.trace(name=f"chat{IMG}")
    def chat(message: str) -> dict[str, str]:
        sessiontrace.update_current_trace(
            metadata={"app_version": PAYLOAD, f"key{IMG}": PAYLOAD},
            tags={"category": PAYLOAD, f"tag{SCRIPT}": IMG},
        )
        with sessiontrace.start_span(f"tool{SVG}", span_type=IMG) as span:
            span.set_attribute(f"attr{IMG}", PAYLOAD)
            span.add_event(f"event{IMG}", {"x": PAYLOAD})
        with sessiontrace.start_span(f"llm{SCRIPT}", span_type="CHAT_MODEL") as llm:
            llm.set_attributes(
                {
                    "mlflow.chat.tokenUsage": {"input_tokens": 12, "output_tokens": 3},
                    "mlflow.llm.model": MODEL_NAME,
                    "mlflow.llm.provider": SCRIPT,
                    "mlflow.llm.cost": {"total_cost": PAYLOAD},  # not a number: not a cost
                }
            )
        return {"answer": PAYLOAD}

    with sessiontrace.user_session(user_id=f"user{IMG}", session_id=f"session{SCRIPT}"):
        chat(PAYLOAD)
    tid = sessiontrace.get_last_active_trace_id()
    assert tid is not None
    assert sessiontrace.flush(5)
    return tid


def _pages(trace_id: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/traces", {}),
        ("/traces", {"group": "1"}),
        ("/traces", {"filter": f"tags.category = '{PAYLOAD}'"}),
        ("/traces", {"filter": PAYLOAD}),  # a bad filter echoes the text back
        ("/sessions", {}),
        ("/session", {"id": f"session{SCRIPT}"}),
        ("/users", {}),
        ("/user", {"id": f"user{IMG}"}),
        ("/versions", {}),
        ("/versions", {"key": f"key{IMG}"}),
        ("/trace", {"id": trace_id}),
        ("/models", {}),
        ("/models", {"filter": PAYLOAD}),
        ("/session", {"id": PAYLOAD}),  # a 404 that names the id
    ]


def _visit_all(page: Any, base: str, trace_id: str) -> None:
    from urllib.parse import urlencode

    for path, params in _pages(trace_id):
        url = f"{base}{path}" + (f"?{urlencode(params)}" if params else "")
        page.goto(url)
        page.locator(
            "main :is(table, ol, .error, .filter-error, .empty, .span-detail)"
        ).first.wait_for()
        assert page.evaluate("() => window.__pwned") is None, url
        injected = page.evaluate(
            "() => document.querySelectorAll('main img, main script, main svg[onload], "
            "main [onerror], main [onload]').length"
        )
        assert injected == 0, url
    # The payloads are on the page, as text.
    page.goto(f"{base}/trace?id={trace_id}")
    page.locator("#span-detail pre").first.wait_for()
    as_json = json.dumps(PAYLOAD)[1:-1]  # inputs/outputs are shown as JSON
    assert as_json in page.locator("#span-detail .io-inputs").inner_text()
    assert as_json in page.locator("#span-detail .io-outputs").inner_text()
    assert "null" not in page.locator("#span-detail h3").inner_text()
    assert PAYLOAD in page.locator("#metadata").inner_text()
    assert page.locator("[data-tag-key=category]").input_value() == PAYLOAD
    # The model and provider names, as text, where LLM calls are shown.
    page.locator(".tl-row", has=page.locator(".tl-model")).click()
    assert page.locator(".tl-model").inner_text() == MODEL_NAME
    assert page.locator("#llm-call .llm-model").inner_text() == MODEL_NAME
    assert SCRIPT in page.locator("#llm-call").inner_text()
    assert page.locator("#llm-call .llm-cost").inner_text() == "unpriced"
    page.goto(f"{base}/models")
    cell = page.locator("table.grid tbody td[data-col=model]", has_text="model")
    assert cell.inner_text() == MODEL_NAME
    assert page.locator("table.grid tbody td[data-col=provider]").inner_text() == SCRIPT
    assert page.evaluate("() => window.__pwned") is None


def test_payloads_stay_inert(page: Any, live_server: Any) -> None:
    trace_id = _record_hostile_traces()
    _visit_all(page, live_server.url, trace_id)


@pytest.mark.parametrize("_", ["escaping alone, without the CSP"])
def test_payloads_stay_inert_even_without_csp(
    page_without_csp: Any, live_server: Any, _: str
) -> None:
    trace_id = _record_hostile_traces()
    _visit_all(page_without_csp, live_server.url, trace_id)
