"""The testing helper users put in their own suites."""

from __future__ import annotations

import sessiontrace
from sessiontrace.testing import capture_traces


@sessiontrace.trace
def chat(message: str) -> str:
    return helper(message)


@sessiontrace.trace
def helper(message: str) -> str:
    return message.upper()


def test_capture_traces_is_isolated_and_restores_the_previous_store(store_path: object) -> None:
    chat("outside")  # goes to the fixture's store
    with capture_traces() as captured:
        with sessiontrace.user_session(user_id="u1", session_id="s1"):
            chat("a")
        chat("b")
        assert [t.data.spans[0].inputs["message"] for t in captured.traces] == ["a", "b"]
        assert captured.last().info.user_id is None
        assert captured.traces[0].info.user_id == "u1"
        assert len(captured) == 2
    chat("after")
    sessiontrace.flush()
    store = sessiontrace._runtime.get_store()
    inputs = [t.data.spans[0].inputs["message"] for t in store.load_traces(store.list_trace_ids())]
    assert inputs == ["after", "outside"]


def test_deterministic_ids_and_clock_make_rows_exact() -> None:
    with capture_traces(deterministic=True) as captured:
        chat("x")
        chat("y")
        first, second = captured.traces
    assert first.info.trace_id == "tr-" + "0" * 31 + "1"
    assert second.info.trace_id == "tr-" + "0" * 31 + "2"
    assert [(s.span_id, s.parent_id) for s in first.data.spans] == [
        ("0000000000000001", None),
        ("0000000000000002", "0000000000000001"),
    ]
    root, child = first.data.spans
    # one tick (1 ms) per clock read: root start, child start, child end, root end
    assert (root.start_time_ns, child.start_time_ns) == (
        1_700_000_000_001_000_000,
        1_700_000_000_002_000_000,
    )
    assert child.end_time_ns == 1_700_000_000_003_000_000
    assert root.end_time_ns == 1_700_000_000_004_000_000
    assert first.info.execution_duration == 3
    assert first.info.request_time == 1_700_000_000_001
    assert sessiontrace._tracing.ids["trace"] is sessiontrace._tracing._new_trace_id
