"""User and session: defaults, per-trace overrides, precedence, threads and tasks."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import sessiontrace
from sessiontrace import TraceInfo


def info(trace_id: str | None = None) -> TraceInfo:
    trace_id = trace_id or sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    trace = sessiontrace.get_trace(trace_id)
    assert trace is not None
    return trace.info


def ids(i: TraceInfo) -> tuple[str | None, str | None]:
    """Both views of the ids: first-class fields and the MLflow metadata keys must agree."""
    assert i.user_id == i.trace_metadata.get("mlflow.trace.user")
    assert i.session_id == i.trace_metadata.get("mlflow.trace.session")
    return i.user_id, i.session_id


@sessiontrace.trace
def traced() -> str:
    return "ok"


def test_default_context_reaches_every_trace() -> None:
    sessiontrace.set_user_session_context(user_id="user-456", session_id="session-123")
    try:
        traced()
        assert ids(info()) == ("user-456", "session-123")
        traced()
        assert ids(info()) == ("user-456", "session-123")
    finally:
        sessiontrace.clear_user_session_context()
    traced()
    assert ids(info()) == (None, None)


def test_clear_restores_the_enclosing_value() -> None:
    sessiontrace.set_user_session_context(user_id="outer", session_id="s-outer")
    sessiontrace.set_user_session_context(user_id="inner")  # session omitted: kept
    assert sessiontrace.get_user_session_context() == ("inner", "s-outer")
    sessiontrace.set_user_session_context(session_id=None)  # explicit None: unset
    assert sessiontrace.get_user_session_context() == ("inner", None)
    sessiontrace.clear_user_session_context()
    assert sessiontrace.get_user_session_context() == ("inner", "s-outer")
    sessiontrace.clear_user_session_context()
    assert sessiontrace.get_user_session_context() == ("outer", "s-outer")
    sessiontrace.clear_user_session_context()
    assert sessiontrace.get_user_session_context() == (None, None)
    sessiontrace.clear_user_session_context()  # nothing set: a no-op
    assert sessiontrace.get_user_session_context() == (None, None)


def test_user_session_context_manager_restores_even_on_error() -> None:
    with sessiontrace.user_session(user_id="a", session_id="s"):
        with pytest.raises(RuntimeError), sessiontrace.user_session(user_id="b"):
            assert sessiontrace.get_user_session_context() == ("b", "s")
            raise RuntimeError
        assert sessiontrace.get_user_session_context() == ("a", "s")
    assert sessiontrace.get_user_session_context() == (None, None)


@pytest.mark.parametrize("bad", [123, b"bytes", ["u"]])
def test_ids_must_be_strings(bad: object) -> None:
    with pytest.raises(TypeError, match="user_id"):
        sessiontrace.set_user_session_context(user_id=bad)  # type: ignore[arg-type]
    with (
        pytest.raises(TypeError, match="session_id"),
        sessiontrace.user_session(session_id=bad),  # type: ignore[arg-type]
    ):
        pass

    @sessiontrace.trace
    def app() -> None:
        sessiontrace.update_trace_user_session(user_id=bad)  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        app()


# -- precedence ------------------------------------------------------------------------


def test_per_trace_override_beats_the_default_and_does_not_leak() -> None:
    @sessiontrace.trace
    def special() -> None:
        sessiontrace.update_trace_user_session(user_id="different_user_123")

    with sessiontrace.user_session(user_id="request-user", session_id="request-session"):
        special()
        assert ids(info()) == ("different_user_123", "request-session")
        traced()  # a sibling trace
        assert ids(info()) == ("request-user", "request-session")
        assert sessiontrace.get_user_session_context() == ("request-user", "request-session")


def test_last_override_wins_across_both_apis() -> None:
    @sessiontrace.trace
    def a() -> None:
        sessiontrace.update_trace_user_session(user_id="first")
        sessiontrace.update_current_trace(metadata={"mlflow.trace.user": "second"})

    @sessiontrace.trace
    def b() -> None:
        sessiontrace.update_current_trace(metadata={"mlflow.trace.user": "first"})
        sessiontrace.update_trace_user_session(user_id="second", session_id="s2")

    with sessiontrace.user_session(user_id="default", session_id="s"):
        a()
        assert ids(info()) == ("second", "s")
        b()
        assert ids(info()) == ("second", "s2")


def test_explicit_none_clears_for_that_trace_only() -> None:
    @sessiontrace.trace
    def anonymous() -> None:
        sessiontrace.update_trace_user_session(user_id=None)

    @sessiontrace.trace
    def no_session() -> None:
        sessiontrace.update_current_trace(metadata={"mlflow.trace.session": None})

    with sessiontrace.user_session(user_id="u", session_id="s"):
        anonymous()
        assert ids(info()) == (None, "s")
        no_session()
        assert ids(info()) == ("u", None)
        traced()
        assert ids(info()) == ("u", "s")


def test_default_is_snapshotted_when_the_trace_starts() -> None:
    @sessiontrace.trace
    def app() -> None:
        sessiontrace.clear_user_session_context()  # the request ends mid-trace
        sessiontrace.set_user_session_context(user_id="someone-else")

    sessiontrace.set_user_session_context(user_id="u1", session_id="s1")
    app()
    assert ids(info()) == ("u1", "s1")
    sessiontrace.clear_user_session_context()


def test_child_spans_do_not_change_the_trace_ids() -> None:
    @sessiontrace.trace
    def child() -> None:
        pass

    @sessiontrace.trace
    def root() -> None:
        with sessiontrace.user_session(user_id="inner"):
            child()  # a child span, not a new trace: the root's user stays

    with sessiontrace.user_session(user_id="outer"):
        root()
    assert ids(info())[0] == "outer"


# -- threads and tasks -------------------------------------------------------------------


def test_plain_threads_do_not_inherit_but_the_helpers_carry_it() -> None:
    results: dict[str, str | None] = {}

    def work(label: str) -> None:
        traced()
        results[label] = info().user_id

    with sessiontrace.user_session(user_id="u-thread"):
        t = threading.Thread(target=work, args=("plain",))
        t.start()
        t.join()
        t = threading.Thread(target=sessiontrace.wrap_with_context(work), args=("wrapped",))
        t.start()
        t.join()
        with sessiontrace.ContextThreadPoolExecutor(max_workers=2) as pool:
            pool.submit(work, "executor").result()
            list(pool.map(work, ["mapped"]))
        with ThreadPoolExecutor(max_workers=1) as plain_pool:
            plain_pool.submit(sessiontrace.wrap_with_context(work), "run_with").result()

        async def in_executor() -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sessiontrace.wrap_with_context(work), "executor2")

        asyncio.run(in_executor())
    assert results == {
        "plain": None,  # documented: a raw Thread starts with an empty context
        "wrapped": "u-thread",
        "executor": "u-thread",
        "mapped": "u-thread",
        "run_with": "u-thread",
        "executor2": "u-thread",
    }


def test_executor_worker_threads_keep_nothing_between_tasks() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def work() -> None:
        seen.append(sessiontrace.get_user_session_context())

    with sessiontrace.ContextThreadPoolExecutor(max_workers=1) as pool:
        with sessiontrace.user_session(user_id="first", session_id="s1"):
            pool.submit(work).result()
        pool.submit(work).result()  # same worker thread, anonymous submitter
    assert seen == [("first", "s1"), (None, None)]


def test_asyncio_tasks_are_isolated() -> None:
    async def request(user: str) -> tuple[str, str | None]:
        sessiontrace.set_user_session_context(user_id=user, session_id=f"s-{user}")
        await asyncio.sleep(0.001)
        traced()
        return user, sessiontrace.get_last_active_trace_id(thread_local=True)

    async def main() -> list[tuple[str, str | None]]:
        return await asyncio.gather(*(request(f"u{i}") for i in range(30)))

    asyncio.run(main())
    assert sessiontrace.get_user_session_context() == (None, None)  # tasks set their own copy
    sessiontrace.flush()
    store = sessiontrace._runtime.get_store()
    rows = store.connection().execute("SELECT user_id, session_id FROM traces").fetchall()
    assert len(rows) == 30
    assert all(session == f"s-{user}" for user, session in rows)
    assert len({user for user, _ in rows}) == 30
