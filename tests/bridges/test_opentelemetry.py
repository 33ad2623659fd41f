"""The OpenTelemetry bridge: the real SDK and an in-memory exporter; the real OTel
ASGI/WSGI server middleware in either order around ours, on real servers; spans of the
real OpenInference OpenAI instrumentor against the fake LLM server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fake_llm
import httpx
import openai
import pytest
from flask import Flask
from openinference.instrumentation import using_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import sessiontrace
import sessiontrace.bridges
from middleware.servers import uvicorn_server, werkzeug_server
from sessiontrace import ASGIMiddleware, WSGIMiddleware

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def ids(self) -> dict[str, tuple[Any, Any]]:
        """span name -> (session.id, user.id); fails on a name seen with two values."""
        out: dict[str, tuple[Any, Any]] = {}
        for span in self.exporter.get_finished_spans():
            attrs = span.attributes or {}
            ids = (attrs.get("session.id"), attrs.get("user.id"))
            assert out.setdefault(span.name, ids) == ids, span.name
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.provider.shutdown()


def test_every_span_in_context_and_the_app_wins(otel: Otel) -> None:
    with otel.tracer.start_as_current_span("before"):
        pass
    sessiontrace.bridges.enable("opentelemetry", tracer_provider=otel.provider)
    with sessiontrace.user_session("ou", "os"):
        with otel.tracer.start_as_current_span("root"), otel.tracer.start_as_current_span("child"):
            pass
        with otel.tracer.start_as_current_span("mine", attributes={"user.id": "set-by-app"}):
            pass
    with otel.tracer.start_as_current_span("outside"):
        pass
    sessiontrace.bridges.disable()
    with sessiontrace.user_session("ou", "os"), otel.tracer.start_as_current_span("disabled"):
        pass
    assert otel.ids() == {
        "before": (None, None),
        "root": ("os", "ou"),
        "child": ("os", "ou"),
        "mine": ("os", "set-by-app"),
        "outside": (None, None),
        "disabled": (None, None),
    }


def test_the_processor_added_by_hand(otel: Otel) -> None:
    otel.provider.add_span_processor(sessiontrace.bridges.SessionTraceSpanProcessor())
    with sessiontrace.user_session("hu", "hs"), otel.tracer.start_as_current_span("by-hand"):
        pass
    assert otel.ids() == {"by-hand": ("hs", "hu")}


def test_enable_needs_an_sdk_provider() -> None:
    from opentelemetry.trace import NoOpTracerProvider

    with pytest.raises(RuntimeError, match="SDK TracerProvider"):
        sessiontrace.bridges.enable("opentelemetry", tracer_provider=NoOpTracerProvider())


def starlette_app(otel: Otel) -> Starlette:
    async def work(req: Request) -> Response:
        with otel.tracer.start_as_current_span("work"), otel.tracer.start_as_current_span("child"):
            pass
        return PlainTextResponse("ok")

    async def stream(req: Request) -> Response:
        async def body() -> Any:
            for i in range(3):
                with otel.tracer.start_as_current_span(f"chunk-{i}"):
                    yield f"{i}\n"

        return StreamingResponse(body())

    return Starlette(routes=[Route("/work/{who}", work), Route("/stream/{who}", stream)])


def flask_app(otel: Otel) -> Flask:
    app = Flask(__name__)

    @app.get("/work/<who>")
    def work(who: str) -> str:
        with otel.tracer.start_as_current_span("work"), otel.tracer.start_as_current_span("child"):
            pass
        return "ok"

    @app.get("/stream/<who>")
    def stream(who: str) -> Any:
        def body() -> Iterator[str]:
            for i in range(3):
                with otel.tracer.start_as_current_span(f"chunk-{i}"):
                    yield f"{i}\n"

        return app.response_class(body(), mimetype="text/plain")

    return app


def _serve(kind: str, order: str, otel: Otel) -> Any:
    if kind == "asgi":
        inner: Any = starlette_app(otel)
        if order == "otel-outside":
            app = OtelASGI(
                ASGIMiddleware(inner, bridges=["opentelemetry"]), tracer_provider=otel.provider
            )
        else:
            app = ASGIMiddleware(
                OtelASGI(inner, tracer_provider=otel.provider), bridges=["opentelemetry"]
            )
        return uvicorn_server(app)
    inner = flask_app(otel).wsgi_app
    if order == "otel-outside":
        app = OtelWSGI(
            WSGIMiddleware(inner, bridges=["opentelemetry"]), tracer_provider=otel.provider
        )
    else:
        app = WSGIMiddleware(
            OtelWSGI(inner, tracer_provider=otel.provider), bridges=["opentelemetry"]
        )
    return werkzeug_server(app)


def by_trace(otel: Otel) -> dict[str, set[tuple[Any, Any]]]:
    """The server span's name of each trace -> the ids its spans carry."""
    traces: dict[int, list[Any]] = {}
    for span in otel.exporter.get_finished_spans():
        traces.setdefault(span.context.trace_id, []).append(span)
    out: dict[str, set[tuple[Any, Any]]] = {}
    for spans in traces.values():
        root = next(s for s in spans if s.parent is None)
        ids = {
            ((s.attributes or {}).get("session.id"), (s.attributes or {}).get("user.id"))
            for s in spans
        }
        assert root.name not in out
        out[root.name] = ids
        names = {s.name for s in spans}
        assert {"work", "child"} <= names or {"chunk-0", "chunk-1", "chunk-2"} <= names, names
    return out


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("order", ["otel-outside", "otel-inside"])
def test_the_server_span_in_either_order(otel: Otel, kind: str, order: str) -> None:
    sessiontrace.bridges.enable("opentelemetry", tracer_provider=otel.provider)
    with _serve(kind, order, otel) as base, httpx.Client() as client:
        for who in ("id", "anon"):  # the same keep-alive connection, then without ids
            for path in ("work", "stream"):
                headers = ID if who == "id" else {}
                assert client.get(f"{base}/{path}/{who}", headers=headers).status_code == 200
    assert by_trace(otel) == {
        "GET /work/id": {("session-1", "user-1")},
        "GET /stream/id": {("session-1", "user-1")},
        "GET /work/anon": {(None, None)},
        "GET /stream/anon": {(None, None)},
    }


@pytest.fixture
def llm() -> Iterator[fake_llm.FakeLLMServer]:
    with fake_llm.FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def instrumented(otel: Otel) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=otel.provider)
    yield
    instrumentor.uninstrument()


def _chat(llm: fake_llm.FakeLLMServer, text: str) -> None:
    with openai.OpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )


def test_openinference_spans_and_plain_spans(
    otel: Otel, llm: fake_llm.FakeLLMServer, instrumented: None
) -> None:
    async def chat(req: Request) -> Response:
        with otel.tracer.start_as_current_span("plain"):
            _chat(llm, "hi")
        # The app's own using_attributes wins.
        with (
            using_attributes(session_id="oi-sess", user_id="oi-user"),
            otel.tracer.start_as_current_span("plain-in-oi-scope"),
        ):
            _chat(llm, "again")
        return PlainTextResponse("ok")

    sessiontrace.bridges.enable("opentelemetry", tracer_provider=otel.provider)
    app = ASGIMiddleware(Starlette(routes=[Route("/chat", chat)]), bridges=["openinference"])
    with uvicorn_server(app) as base, httpx.Client() as client:
        assert client.get(f"{base}/chat", headers=ID).status_code == 200
    spans = otel.exporter.get_finished_spans()
    llm_spans = [s for s in spans if (s.attributes or {}).get("openinference.span.kind") == "LLM"]
    assert len(llm_spans) == 2
    by_parent = {s.parent.span_id if s.parent else None: s for s in llm_spans}
    plain = {s.name: s for s in spans}
    first = by_parent[plain["plain"].context.span_id].attributes or {}
    second = by_parent[plain["plain-in-oi-scope"].context.span_id].attributes or {}
    assert (first["session.id"], first["user.id"]) == ("session-1", "user-1")
    assert (second["session.id"], second["user.id"]) == ("oi-sess", "oi-user")
    plain_attrs = plain["plain"].attributes or {}
    assert (plain_attrs["session.id"], plain_attrs["user.id"]) == ("session-1", "user-1")


def test_openinference_bridge_alone_reaches_oi_spans_only(
    otel: Otel, llm: fake_llm.FakeLLMServer, instrumented: None
) -> None:
    async def chat(req: Request) -> Response:
        with otel.tracer.start_as_current_span("plain"):
            _chat(llm, "hi")
        return PlainTextResponse("ok")

    app = ASGIMiddleware(Starlette(routes=[Route("/chat", chat)]), bridges=["openinference"])
    with uvicorn_server(app) as base, httpx.Client() as client:
        assert client.get(f"{base}/chat", headers=ID).status_code == 200
        assert client.get(f"{base}/chat").status_code == 200
    llm_spans = [
        s.attributes or {}
        for s in otel.exporter.get_finished_spans()
        if (s.attributes or {}).get("openinference.span.kind") == "LLM"
    ]
    assert [(a.get("session.id"), a.get("user.id")) for a in llm_spans] == [
        ("session-1", "user-1"),
        (None, None),
    ]
    plain = [s for s in otel.exporter.get_finished_spans() if s.name == "plain"]
    assert all("user.id" not in (s.attributes or {}) for s in plain)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_openinference_context_through_a_streamed_body(otel: Otel, kind: str) -> None:
    from openinference.instrumentation import OITracer, TraceConfig

    oi = OITracer(otel.tracer, config=TraceConfig())

    def body(who: str) -> Iterator[str]:
        for i in range(3):
            with oi.start_as_current_span(f"{who}-{i}"):
                yield f"{i}\n"

    if kind == "asgi":

        async def stream(req: Request) -> Response:
            return StreamingResponse(body(req.path_params["who"]))

        app: Any = ASGIMiddleware(
            Starlette(routes=[Route("/stream/{who}", stream)]), bridges=["openinference"]
        )
        server = uvicorn_server(app)
    else:
        flask = Flask(__name__)

        @flask.get("/stream/<who>")
        def wsgi_stream(who: str) -> Any:
            return flask.response_class(body(who), mimetype="text/plain")

        server = werkzeug_server(WSGIMiddleware(flask.wsgi_app, bridges=["openinference"]))
    with server as base, httpx.Client() as client:
        assert client.get(f"{base}/stream/id", headers=ID).status_code == 200
        assert client.get(f"{base}/stream/anon").status_code == 200
    assert otel.ids() == {
        **{f"id-{i}": ("session-1", "user-1") for i in range(3)},
        **{f"anon-{i}": (None, None) for i in range(3)},
    }
