"""Zero cross-talk: many threads and tasks with different users, checked trace by trace."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiontrace
from sessiontrace._context import UNSET

pytestmark = pytest.mark.backends

IDS = st.sampled_from([UNSET, None, "alice", "bob"])
OVERRIDES = st.sampled_from([UNSET, None, "x", "y"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), IDS, IDS),
        st.tuples(st.just("clear")),
        st.tuples(st.just("trace"), OVERRIDES, OVERRIDES),
    ),
    max_size=25,
)


@sessiontrace.trace
def traced(override_user: Any, override_session: Any) -> None:
    if override_user is not UNSET or override_session is not UNSET:
        sessiontrace.update_trace_user_session(user_id=override_user, session_id=override_session)


def run_against_model(ops: list[tuple[Any, ...]]) -> list[tuple[str, tuple[Any, Any]]]:
    """Apply ``ops`` to the SDK and to a plain model; return (trace id, expected ids)."""
    stack: list[tuple[Any, Any]] = [(None, None)]
    expected: list[tuple[str, tuple[Any, Any]]] = []
    for op in ops:
        user, session = stack[-1]
        if op[0] == "set":
            sessiontrace.set_user_session_context(user_id=op[1], session_id=op[2])
            stack.append((user if op[1] is UNSET else op[1], session if op[2] is UNSET else op[2]))
        elif op[0] == "clear":
            sessiontrace.clear_user_session_context()
            if len(stack) > 1:
                stack.pop()
        else:
            traced(op[1], op[2])
            trace_id = sessiontrace.get_last_active_trace_id(thread_local=True)
            assert trace_id is not None
            expected.append(
                (
                    trace_id,
                    (
                        user if op[1] is UNSET else op[1],
                        session if op[2] is UNSET else op[2],
                    ),
                )
            )
        assert sessiontrace.get_user_session_context() == stack[-1]
    return expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_context_operations_match_a_simple_model(ops: list[tuple[Any, ...]]) -> None:
    # Each example runs in its own copy of the context, like a request would.
    expected = contextvars.copy_context().run(run_against_model, ops)
    sessiontrace.flush()
    store = sessiontrace._runtime.get_store()
    traces = {t.info.trace_id: t for t in store.load_traces([tid for tid, _ in expected])}
    for trace_id, ids in expected:
        info = traces[trace_id].info
        assert (info.user_id, info.session_id) == ids


@sessiontrace.trace
def turn(expect_user: str | None, expect_session: str | None, depth: int) -> str:
    if depth:
        turn_child(depth - 1)
    return f"{expect_user}/{expect_session}"


@sessiontrace.trace
def turn_child(depth: int) -> None:
    if depth:
        turn_child(depth - 1)


@sessiontrace.trace
async def async_turn(expect_user: str | None, expect_session: str | None) -> str:
    await asyncio.sleep(random.random() / 500)
    await async_child()
    return f"{expect_user}/{expect_session}"


@sessiontrace.trace
async def async_child() -> None:
    await asyncio.sleep(0)


def check_every_trace(expected_count: int) -> None:
    assert sessiontrace.flush(60)
    store = sessiontrace._runtime.get_store()
    ids = store.list_trace_ids(limit=expected_count + 10)
    assert len(ids) == expected_count
    for trace in store.load_traces(ids):
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert (trace.info.user_id, trace.info.session_id) == (
            root.inputs["expect_user"],
            root.inputs["expect_session"],
        ), trace.info.trace_id
    assert sessiontrace.get_stats()["dropped"] == 0


def test_many_threads_with_different_users_never_cross_talk() -> None:
    threads_n, per_thread = 8, 300
    barrier = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        rng = random.Random(k)
        barrier.wait()
        for i in range(per_thread):
            user = rng.choice([f"user-{k}-{i}", None])
            session = rng.choice([f"session-{k}-{i % 7}", None])
            if rng.random() < 0.2:  # a per-trace override instead of the default
                with sessiontrace.start_span("override") as span:
                    span.set_inputs({"expect_user": user, "expect_session": session})
                    sessiontrace.update_trace_user_session(user_id=user, session_id=session)
                    turn_child(rng.randrange(3))
            else:
                with sessiontrace.user_session(user_id=user, session_id=session):
                    turn(user, session, rng.randrange(3))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_every_trace(threads_n * per_thread)


def test_many_asyncio_tasks_with_different_users_never_cross_talk() -> None:
    async def request(i: int) -> None:
        user = f"user-{i}" if i % 5 else None
        session = f"session-{i % 13}"
        sessiontrace.set_user_session_context(user_id=user, session_id=session)
        await async_turn(user, session)

    async def main() -> None:
        await asyncio.gather(*(request(i) for i in range(1000)))

    asyncio.run(main())
    check_every_trace(1000)
