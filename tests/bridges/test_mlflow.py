"""The MLflow bridge: real mlflow-tracing, read back with ``mlflow.search_traces``,
through real uvicorn and werkzeug servers on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import fake_llm
import httpx
import mlflow
import pytest

import sessiontrace
import sessiontrace.bridges
import sessiontrace.bridges._mlflow
from middleware.servers import uvicorn_server, werkzeug_server
from sessiontrace import ASGIMiddleware, WSGIMiddleware, get_stats
from sessiontrace.bridges import _base

from .apps import flask_app, record, record_overridden, starlette_app

pytestmark = pytest.mark.slow

ID = {"X-User-ID": "user-1", "X-Session-ID": "session-1"}


@pytest.fixture(scope="module")
def llm() -> Iterator[fake_llm.FakeLLMServer]:
    with fake_llm.FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def autolog() -> Iterator[None]:
    mlflow.openai.autolog()
    yield
    mlflow.openai.autolog(disable=True)


def test_without_the_bridge_mlflow_traces_have_no_ids(mlflow_store: Any) -> None:
    with sessiontrace.user_session("u0", "s0"):
        record("plain")
    assert mlflow_store.traces() == {"plain": (None, None)}


def test_enable_outside_a_web_app(mlflow_store: Any) -> None:
    sessiontrace.bridges.enable("mlflow")
    with sessiontrace.user_session("u1", "s1"):
        record("inside")
        record_overridden("overridden")
        with mlflow.tracing.context(user="u-declared"):  # the app's own scope wins
            record("declared")
        with sessiontrace.ContextThreadPoolExecutor(1) as pool:
            pool.submit(record, "thread").result()
    record("outside")
    assert mlflow_store.traces() == {
        "inside": ("s1", "u1"),
        "overridden": ("s-override", "u-override"),
        "declared": ("s1", "u-declared"),
        "thread": ("s1", "u1"),
        "outside": (None, None),
    }
    sessiontrace.bridges.disable("mlflow")
    with sessiontrace.user_session("u2", "s2"):
        record("disabled")
    assert mlflow_store.traces()["disabled"] == (None, None)


def _every_route(base: str, client: httpx.Client, routes: list[str], tag: str) -> None:
    for route in routes:
        r = client.get(f"{base}/{route}", params={"label": f"{tag}-{route}"}, headers=ID)
        assert r.status_code == 200, r.text
    # The next request on the same keep-alive connection, without ids.
    for route in routes:
        r = client.get(f"{base}/{route}", params={"label": f"{tag}-{route}-anon"})
        assert r.status_code == 200


ROUTES_ASGI = ["endpoint", "stream", "background", "pool", "override", "autolog"]
ROUTES_WSGI = ["endpoint", "stream", "pool", "override", "autolog"]


def _expected(tag: str, routes: list[str]) -> dict[str, tuple[str | None, str | None]]:
    expected: dict[str, tuple[str | None, str | None]] = {}
    for route in routes:
        for suffix, ids in (("", ("session-1", "user-1")), ("-anon", (None, None))):
            label = f"{tag}-{route}{suffix}"
            if route == "override":
                ids = ("s-override", "u-override")
            if route == "stream":
                expected.update({f"{label}-{i}": ids for i in range(3)})
            else:
                expected[label] = ids
    return expected


def test_asgi_every_place_a_request_traces(
    mlflow_store: Any, llm: fake_llm.FakeLLMServer, autolog: None
) -> None:
    app = ASGIMiddleware(starlette_app(llm.base_url), bridges=["mlflow"])
    with uvicorn_server(app) as base, httpx.Client() as client:
        _every_route(base, client, ROUTES_ASGI, "asgi")
    assert mlflow_store.traces() == _expected("asgi", ROUTES_ASGI)


def test_wsgi_every_place_a_request_traces(
    mlflow_store: Any, llm: fake_llm.FakeLLMServer, autolog: None
) -> None:
    app = WSGIMiddleware(flask_app(llm.base_url).wsgi_app, bridges=["mlflow"])
    with werkzeug_server(app) as base, httpx.Client() as client:
        _every_route(base, client, ROUTES_WSGI, "wsgi")
    assert mlflow_store.traces() == _expected("wsgi", ROUTES_WSGI)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_concurrent_requests_keep_their_own_ids(mlflow_store: Any, kind: str) -> None:
    if kind == "asgi":
        server = uvicorn_server(ASGIMiddleware(starlette_app(), bridges=["mlflow"]))
    else:
        server = werkzeug_server(WSGIMiddleware(flask_app().wsgi_app, bridges=["mlflow"]))

    def call(base: str, i: int) -> None:
        headers = {"X-User-ID": f"u{i}", "X-Session-ID": f"s{i}"} if i % 3 else {}
        with httpx.Client() as client:  # each thread its own keep-alive connection
            for j in range(3):
                r = client.get(f"{base}/stream", params={"label": f"c{i}.{j}"}, headers=headers)
                assert r.status_code == 200

    with server as base, concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call(base, i), range(16)))
    traces = mlflow_store.traces()
    assert len(traces) == 16 * 3 * 3
    for label, ids in traces.items():
        i = int(label[1:].split(".")[0])
        assert ids == ((f"s{i}", f"u{i}") if i % 3 else (None, None)), label


def test_without_the_hook_the_public_context_is_entered(
    mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An MLflow without get_configured_trace_metadata: the middleware enters
    # mlflow.tracing.context per request (and per WSGI chunk) instead.
    monkeypatch.setattr(sessiontrace.bridges._mlflow, "HOOK_MODULE", "mlflow.no_such_module")
    app = WSGIMiddleware(flask_app().wsgi_app, bridges=["mlflow"])
    assert [b.name for b in _base.registry.scoped] == ["mlflow"]
    with werkzeug_server(app) as base, httpx.Client() as client:
        client.get(f"{base}/stream", params={"label": "public"}, headers=ID)
        client.get(f"{base}/stream", params={"label": "public-anon"})
    traces = mlflow_store.traces()
    assert {k: v for k, v in traces.items() if k.startswith("public-")} == {
        **{f"public-{i}": ("session-1", "user-1") for i in range(3)},
        **{f"public-anon-{i}": (None, None) for i in range(3)},
    }


def test_a_failing_bridge_never_fails_the_request(
    mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ASGIMiddleware(starlette_app(), bridges=["mlflow", "openlayer"])
    openlayer = _base.registry.enabled["openlayer"]

    def broken(*args: Any) -> Any:
        raise RuntimeError("tracer down")

    monkeypatch.setattr(openlayer, "enter", broken)
    before = get_stats()["internal_errors"].get("bridge_openlayer", 0)
    with uvicorn_server(app) as base, httpx.Client() as client:
        assert client.get(f"{base}/endpoint", params={"label": "survives"}, headers=ID).text == "ok"
    assert get_stats()["internal_errors"]["bridge_openlayer"] == before + 1
    assert mlflow_store.traces() == {"survives": ("session-1", "user-1")}


def test_bad_bridge_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown bridge"):
        ASGIMiddleware(starlette_app(), bridges=["zipkin"])
    with pytest.raises(TypeError, match="list of names"):
        WSGIMiddleware(flask_app().wsgi_app, bridges="mlflow")


def test_the_hashed_user_id_is_what_mlflow_gets(mlflow_store: Any) -> None:
    key = b"k" * 32
    app = ASGIMiddleware(starlette_app(), bridges=["mlflow"], user_id_hmac_key=key)
    with uvicorn_server(app) as base, httpx.Client() as client:
        client.get(f"{base}/endpoint", params={"label": "hashed"}, headers=ID)
    session, user = mlflow_store.traces()["hashed"]
    assert session == "session-1"
    assert user is not None and user.startswith("u-") and "user-1" not in user
