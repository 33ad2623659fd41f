"""The tracing SDK as a user sees it: decorators, spans, trace-level updates, read-back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import sessiontrace
from sessiontrace import Trace


def last_trace() -> Trace:
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    trace = sessiontrace.get_trace(trace_id)
    assert trace is not None
    return trace


def spans_by_name(trace: Trace) -> dict[str, sessiontrace.Span]:
    return {s.name: s for s in trace.data.spans}


# -- the decorator ---------------------------------------------------------------------


def test_bare_and_configured_decorator() -> None:
    @sessiontrace.trace(name="retrieve", span_type="RETRIEVER", attributes={"k": 3})
    def search(query: str, limit: int = 2) -> list[str]:
        return [query] * limit

    @sessiontrace.trace
    def app(query: str) -> int:
        return len(search(query))

    assert app("q") == 2
    trace = last_trace()
    spans = spans_by_name(trace)
    assert set(spans) == {"app", "retrieve"}
    retrieve = spans["retrieve"]
    assert retrieve.span_type == "RETRIEVER"
    assert retrieve.attributes == {"k": 3}
    assert retrieve.inputs == {"query": "q", "limit": 2}  # defaults are applied
    assert retrieve.outputs == ["q", "q"]
    assert retrieve.parent_id == spans["app"].span_id
    assert spans["app"].span_type == "UNKNOWN"
    assert trace.info.name == "app"
    assert retrieve.start_time_ns >= spans["app"].start_time_ns
    assert retrieve.end_time_ns is not None and spans["app"].end_time_ns is not None
    assert retrieve.end_time_ns <= spans["app"].end_time_ns


def test_keyword_and_variadic_arguments_are_captured() -> None:
    @sessiontrace.trace
    def f(a: int, *rest: int, flag: bool = False, **extra: Any) -> int:
        return a + sum(rest)

    assert f(1, 2, 3, flag=True, colour="red") == 6
    assert last_trace().data.spans[0].inputs == {
        "a": 1,
        "rest": [2, 3],
        "flag": True,
        "extra": {"colour": "red"},
    }


def test_methods_classmethods_and_staticmethods() -> None:
    class Bot:
        greeting = "hi"

        @sessiontrace.trace
        def reply(self, name: str) -> str:
            return f"{self.greeting} {name}"

        @sessiontrace.trace
        @classmethod
        def make(cls, n: int) -> int:
            return n * 2

        @sessiontrace.trace
        @staticmethod
        def pure(x: int) -> int:
            return x + 1

    assert Bot().reply("ann") == "hi ann"
    assert last_trace().data.spans[0].inputs == {"name": "ann"}  # no self
    assert Bot.make(4) == 8
    assert last_trace().data.spans[0].inputs == {"n": 4}  # no cls
    assert Bot.pure(1) == 2
    assert last_trace().data.spans[0].inputs == {"x": 1}


def test_inputs_are_snapshotted_at_call_time() -> None:
    @sessiontrace.trace
    def chat(messages: list[dict[str, str]]) -> str:
        return "answer"

    history = [{"role": "user", "content": "hello"}]
    chat(history)
    history.append({"role": "assistant", "content": "answer"})
    assert last_trace().data.spans[0].inputs == {"messages": [{"role": "user", "content": "hello"}]}


def test_odd_values_never_break_the_call() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    circular: list[Any] = []
    circular.append(circular)

    @sessiontrace.trace
    def f(a: Any, b: Any) -> Any:
        return {1, 2}

    assert f(Opaque(), circular) == {1, 2}
    span = last_trace().data.spans[0]
    assert span.inputs["a"] == "<Opaque>"
    assert span.inputs["b"] == ["<circular reference>"]  # only the cycle is degraded
    assert sorted(span.outputs) == [1, 2]


def test_exception_marks_error_is_recorded_and_propagates_unchanged() -> None:
    class Boom(Exception):
        pass

    original = Boom("model timed out")

    @sessiontrace.trace
    def inner() -> None:
        raise original

    @sessiontrace.trace
    def outer() -> None:
        inner()

    with pytest.raises(Boom) as caught:
        outer()
    assert caught.value is original
    trace = last_trace()
    assert trace.info.state == "ERROR"
    for span in trace.data.spans:
        assert span.status == "ERROR"
        assert "model timed out" in span.status_message
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"].endswith("Boom")
        assert event.attributes["exception.message"] == "model timed out"
        assert "raise original" in event.attributes["exception.stacktrace"]


def test_handled_child_error_leaves_the_trace_ok() -> None:
    @sessiontrace.trace
    def flaky() -> None:
        raise ValueError("retry me")

    @sessiontrace.trace
    def app() -> str:
        try:
            flaky()
        except ValueError:
            return "recovered"
        return "unreachable"

    assert app() == "recovered"
    trace = last_trace()
    assert trace.info.state == "OK"
    assert spans_by_name(trace)["flaky"].status == "ERROR"


# -- async, tasks, generators ----------------------------------------------------------


def test_async_functions_and_tasks_nest_by_context() -> None:
    @sessiontrace.trace
    async def tool(n: int) -> int:
        await asyncio.sleep(0.001 * n)
        return n

    @sessiontrace.trace
    async def agent() -> int:
        results = await asyncio.gather(tool(3), tool(1), tool(2))
        return sum(results)

    assert asyncio.run(agent()) == 6
    trace = last_trace()
    root = spans_by_name(trace)["agent"]
    tools = [s for s in trace.data.spans if s.name == "tool"]
    assert len(tools) == 3
    assert {s.parent_id for s in tools} == {root.span_id}
    assert sorted(s.outputs for s in tools) == [1, 2, 3]


def test_concurrent_async_roots_are_separate_traces() -> None:
    @sessiontrace.trace
    async def handle(user: str) -> str:
        sessiontrace.update_trace_user_session(user_id=user)
        await asyncio.sleep(0.001)
        return user

    async def main() -> list[str]:
        return await asyncio.gather(*(handle(f"u{i}") for i in range(20)))

    asyncio.run(main())
    sessiontrace.flush()
    store = sessiontrace._runtime.get_store()
    traces = store.load_traces(store.list_trace_ids(limit=100))
    assert len(traces) == 20
    for trace in traces:
        assert trace.info.user_id == trace.data.spans[0].inputs["user"]
        assert len(trace.data.spans) == 1


def test_generator_trace_ends_with_the_stream_and_joins_text() -> None:
    @sessiontrace.trace
    def tokens(n: int) -> Iterator[str]:
        for i in range(n):
            yield f"t{i} "

    stream = tokens(3)
    assert sessiontrace.get_last_active_trace_id() is None  # nothing started yet
    assert next(stream) == "t0 "
    assert sessiontrace.get_last_active_trace_id() is None  # still streaming
    assert list(stream) == ["t1 ", "t2 "]
    span = last_trace().data.spans[0]
    assert span.outputs == "t0 t1 t2 "
    assert span.inputs == {"n": 3}
    assert span.status == "OK"


def test_generator_children_nest_under_the_generator_span() -> None:
    @sessiontrace.trace
    def lookup(i: int) -> int:
        return i * 10

    @sessiontrace.trace
    def stream() -> Iterator[int]:
        for i in range(2):
            yield lookup(i)

    @sessiontrace.trace
    def app() -> list[int]:
        return list(stream())

    assert app() == [0, 10]
    trace = last_trace()
    spans = trace.data.spans
    by_id = {s.span_id: s for s in spans}
    lookups = [s for s in spans if s.name == "lookup"]
    assert [by_id[s.parent_id].name for s in lookups if s.parent_id] == ["stream", "stream"]
    assert spans_by_name(trace)["stream"].outputs == [0, 10]  # non-text chunks stay a list


def test_generator_consumer_code_is_not_inside_the_span() -> None:
    @sessiontrace.trace
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    seen: list[str | None] = []
    for _ in stream():
        span = sessiontrace.get_current_active_span()
        seen.append(None if span is None else span.name)
    assert seen == [None, None]


def test_generator_closed_early_and_failing() -> None:
    @sessiontrace.trace(output_reducer=lambda chunks: len(chunks))
    def stream() -> Iterator[int]:
        yield from range(100)

    gen = stream()
    next(gen)
    next(gen)
    gen.close()
    span = last_trace().data.spans[0]
    assert span.outputs == 2
    assert span.attributes["stream.closed_early"] is True

    @sessiontrace.trace
    def broken() -> Iterator[str]:
        yield "a"
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        list(broken())
    trace = last_trace()
    assert trace.info.state == "ERROR"
    assert trace.data.spans[0].outputs == "a"


def test_generator_return_value_and_send_pass_through() -> None:
    @sessiontrace.trace
    def echo() -> Iterator[str]:
        received = yield "ready"
        yield f"got {received}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    with pytest.raises(StopIteration):
        next(gen)
    assert last_trace().data.spans[0].outputs == "readygot x"


def test_async_generator() -> None:
    @sessiontrace.trace
    async def tokens(n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield str(i)

    async def consume() -> list[str]:
        return [t async for t in tokens(4)]

    assert asyncio.run(consume()) == ["0", "1", "2", "3"]
    span = last_trace().data.spans[0]
    assert span.outputs == "0123"
    assert span.inputs == {"n": 4}


# -- start_span ------------------------------------------------------------------------


def test_start_span_sync_and_async() -> None:
    with sessiontrace.start_span("pipeline", span_type="CHAIN") as root:
        root.set_inputs({"q": "why"})
        with sessiontrace.start_span("llm", attributes={"model": "fake"}) as llm:
            llm.set_attribute("tokens", 12)
            llm.set_attributes({"temperature": 0.5})
            llm.add_event("first_token", {"ms": 3})
            llm.set_outputs("because")
        root.set_outputs({"answer": "because"})
    trace = last_trace()
    spans = spans_by_name(trace)
    assert spans["pipeline"].span_type == "CHAIN"
    assert spans["pipeline"].inputs == {"q": "why"}
    assert spans["llm"].attributes == {"model": "fake", "tokens": 12, "temperature": 0.5}
    assert spans["llm"].events[0].name == "first_token"
    assert spans["llm"].events[0].attributes == {"ms": 3}
    assert spans["llm"].parent_id == spans["pipeline"].span_id
    assert trace.info.request_preview == '{"q":"why"}'
    assert trace.info.response_preview == '{"answer":"because"}'

    async def run() -> None:
        async with sessiontrace.start_span("async-root") as span:
            span.set_outputs(1)

    asyncio.run(run())
    assert last_trace().data.spans[0].name == "async-root"


def test_start_span_records_errors() -> None:
    with pytest.raises(KeyError), sessiontrace.start_span("lookup"):
        raise KeyError("missing")
    trace = last_trace()
    assert trace.info.state == "ERROR"
    assert trace.data.spans[0].events[0].attributes["exception.type"] == "KeyError"


def test_span_status_validation() -> None:
    with sessiontrace.start_span("s") as span:
        span.set_status("error", "bad answer")
        with pytest.raises(ValueError, match="span status"):
            span.set_status("MAYBE")
    trace = last_trace()
    assert trace.data.spans[0].status == "ERROR"
    assert trace.info.state == "ERROR"  # the root span's status decides


# -- update_current_trace --------------------------------------------------------------


def test_update_current_trace_outside_a_trace_warns_and_returns() -> None:
    with pytest.warns(UserWarning, match="no active trace"):
        sessiontrace.update_current_trace(tags={"a": "b"})
    with pytest.warns(UserWarning, match="no active trace"):
        sessiontrace.update_trace_user_session(user_id="u")
    assert sessiontrace.get_last_active_trace_id() is None


def test_update_current_trace_fields() -> None:
    @sessiontrace.trace
    def app() -> str:
        sessiontrace.update_current_trace(
            tags={"query_category": "chat"},
            metadata={"app_version": "1.1.0", "deployment_id": "deployment-456"},
            client_request_id="req-42",
            request_preview="short request",
            response_preview="short response",
        )
        sessiontrace.update_current_trace(state="ERROR")
        return "fine"

    assert app() == "fine"
    info = last_trace().info
    assert info.tags == {"query_category": "chat"}
    assert info.trace_metadata["app_version"] == "1.1.0"
    assert info.trace_metadata["deployment_id"] == "deployment-456"
    assert info.client_request_id == "req-42"
    assert info.request_preview == "short request"
    assert info.response_preview == "short response"
    assert info.state == "ERROR"  # explicit state wins over the root span's OK


def test_update_current_trace_converts_non_strings_with_a_warning() -> None:
    @sessiontrace.trace
    def app() -> None:
        with pytest.warns(UserWarning, match="stored as a string"):
            sessiontrace.update_current_trace(metadata={"attempt": 3}, tags={"score": 0.5})

    app()
    info = last_trace().info
    assert info.trace_metadata["attempt"] == "3"
    assert info.tags["score"] == "0.5"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"state": "MAYBE"}, ValueError),
        ({"state": "IN_PROGRESS"}, ValueError),
        ({"tags": ["a"]}, TypeError),
        ({"metadata": "user=1"}, TypeError),
        ({"metadata": {"": "x"}}, ValueError),
        ({"tags": {1: "x"}}, ValueError),
    ],
)
def test_update_current_trace_rejects_bad_arguments(kwargs: dict[str, Any], error: type) -> None:
    @sessiontrace.trace
    def app() -> None:
        sessiontrace.update_current_trace(**kwargs)

    with pytest.raises(error):
        app()


def test_state_is_case_insensitive() -> None:
    @sessiontrace.trace
    def app() -> None:
        sessiontrace.update_current_trace(state="error")

    app()
    assert last_trace().info.state == "ERROR"


# -- tags after logging, late spans ----------------------------------------------------


def test_tags_stay_editable_metadata_does_not() -> None:
    @sessiontrace.trace
    def app() -> None:
        sessiontrace.update_current_trace(metadata={"app_version": "1"}, tags={"a": "1"})

    app()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    sessiontrace.set_trace_tag(trace_id, "reviewed", "yes")
    sessiontrace.set_trace_tag(trace_id, "a", "2")
    sessiontrace.delete_trace_tag(trace_id, "reviewed")
    info = last_trace().info
    assert info.tags == {"a": "2"}
    assert info.trace_metadata["app_version"] == "1"
    with pytest.raises(sessiontrace.TraceNotFoundError):
        sessiontrace.set_trace_tag("tr-does-not-exist", "a", "b")
    with pytest.raises(sessiontrace.TraceNotFoundError):
        sessiontrace.delete_trace_tag("tr-does-not-exist", "a")


def test_set_trace_tag_on_a_live_trace() -> None:
    @sessiontrace.trace
    def app() -> None:
        span = sessiontrace.get_current_active_span()
        assert span is not None
        sessiontrace.set_trace_tag(span.trace_id, "live", "yes")
        sessiontrace.set_trace_tag(span.trace_id, "gone", "soon")
        sessiontrace.delete_trace_tag(span.trace_id, "gone")

    app()
    assert last_trace().info.tags == {"live": "yes"}


def test_child_that_outlives_its_root_is_still_recorded() -> None:
    release = threading.Event()
    finished = threading.Event()

    @sessiontrace.trace
    def background_job() -> str:
        release.wait(5)
        with pytest.warns(UserWarning, match="immutable"):
            sessiontrace.update_current_trace(metadata={"late": "x"}, tags={"late_tag": "y"})
        return "late result"

    @sessiontrace.trace
    def app() -> None:
        thread = threading.Thread(
            target=sessiontrace.wrap_with_context(lambda: (background_job(), finished.set()))
        )
        thread.start()

    app()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    release.set()
    assert finished.wait(5)
    trace = sessiontrace.get_trace(trace_id)
    assert trace is not None
    job = spans_by_name(trace)["background_job"]
    assert job.outputs == "late result"
    assert job.status == "OK"
    assert "late" not in trace.info.trace_metadata
    assert trace.info.tags["late_tag"] == "y"


def test_last_active_trace_id_per_thread() -> None:
    @sessiontrace.trace
    def app() -> None:
        pass

    app()
    main_id = sessiontrace.get_last_active_trace_id(thread_local=True)
    other: list[str | None] = []

    def worker() -> None:
        other.append(sessiontrace.get_last_active_trace_id(thread_local=True))
        app()
        other.append(sessiontrace.get_last_active_trace_id(thread_local=True))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert other[0] is None
    assert other[1] not in (None, main_id)
    assert sessiontrace.get_last_active_trace_id(thread_local=True) == main_id
    assert sessiontrace.get_last_active_trace_id() == other[1]


def test_traces_are_listed_newest_first_and_ids_look_like_mlflow() -> None:
    @sessiontrace.trace
    def app(i: int) -> int:
        return i

    for i in range(5):
        app(i)
    sessiontrace.flush()
    store = sessiontrace._runtime.get_store()
    ids = store.list_trace_ids(limit=10)
    assert [t.data.spans[0].inputs["i"] for t in store.load_traces(ids)] == [4, 3, 2, 1, 0]
    assert all(len(i) == 35 and i.startswith("tr-") for i in ids)


def test_trace_object_shape_matches_mlflow() -> None:
    @sessiontrace.trace
    def app(message: str) -> str:
        return message.upper()

    app("hi")
    trace = last_trace()
    info = trace.info
    assert info.request_id == info.trace_id
    assert info.timestamp_ms == info.request_time
    assert isinstance(info.execution_duration, int)
    assert info.execution_time_ms == info.execution_duration
    assert info.status == info.state == "OK"
    assert trace.data.request == '{"message":"hi"}'
    assert trace.data.response == '"HI"'
    assert trace.to_dict()["info"]["trace_id"] == info.trace_id
    assert trace.search_spans(name="app")[0].name == "app"


# -- tracing failures stay inside sessiontrace ---------------------------------------------


def test_a_broken_tracer_runs_the_call_untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(sessiontrace._tracing, "_open_span", broken)

    @sessiontrace.trace
    def f(x: int) -> int:
        return x + 1

    @sessiontrace.trace
    async def g(x: int) -> int:
        return x + 2

    @sessiontrace.trace
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    @sessiontrace.trace
    async def astream() -> AsyncIterator[int]:
        yield 3

    async def consume() -> list[int]:
        return [i async for i in astream()]

    assert f(1) == 2
    assert asyncio.run(g(1)) == 3
    assert list(stream()) == [1, 2]
    assert asyncio.run(consume()) == [3]
    assert sessiontrace.get_stats()["internal_errors"]["open_span"] == 4
    assert sessiontrace.get_last_active_trace_id() is None


def test_misbehaving_arguments_are_captured_without_failing_the_call() -> None:
    class BadKey:
        def __hash__(self) -> int:
            raise TypeError("unhashable today")

    @sessiontrace.trace
    def f(**kwargs: Any) -> str:
        return "ok"

    assert f(a=1) == "ok"
    assert last_trace().data.spans[0].inputs == {"kwargs": {"a": 1}}
    del BadKey


def test_invalid_environment_does_not_break_the_first_traced_call(
    store_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sessiontrace import _runtime

    _runtime.reset_for_tests()
    monkeypatch.setenv("SESSIONTRACE_BATCH_SIZE", "lots")
    monkeypatch.setenv("SESSIONTRACE_TRACKING_URI", f"sqlite:///{store_path}")

    @sessiontrace.trace
    def f() -> int:
        return 7

    with caplog.at_level("ERROR", logger="sessiontrace"):
        assert f() == 7
    assert "SESSIONTRACE_BATCH_SIZE" in caplog.text
    assert _runtime.settings().batch_size == 2000
    assert last_trace().data.spans[0].outputs == 7
    with pytest.raises(ValueError, match="SESSIONTRACE_BATCH_SIZE"):
        sessiontrace.configure()  # explicit configuration is strict
    monkeypatch.delenv("SESSIONTRACE_BATCH_SIZE")
    with pytest.raises(ValueError, match="batch_size"):
        sessiontrace.configure(batch_size="lots")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        sessiontrace.configure(max_queue_size=0)
    with pytest.raises(TypeError, match="must be a number"):
        sessiontrace.configure(flush_interval=[1])  # type: ignore[arg-type]
