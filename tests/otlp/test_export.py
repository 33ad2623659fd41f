"""The OTLP/HTTP exporter against a scripted fake endpoint on 127.0.0.1: what it sends,
which answers it retries (only 429/502/503/504, after Retry-After), partial success,
several targets, settings, and that the caller never waits for a target."""

from __future__ import annotations

import gzip
import http.server
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _runtime
from sessiontrace._export._otlp import OTLPExporter, OTLPTarget, parse_headers
from sessiontrace._pipeline import Pipeline, RetryableExportError
from sessiontrace._records import SpanRecord, TraceRecord

from .fakes import FakeOTLP, Reply, partial, partial_json


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def one_trace(i: int = 0, *, user: str = "u1", session: str = "s1") -> None:
    with (
        sessiontrace.user_session(user, session),
        sessiontrace.start_span("chat_turn", span_type="CHAIN") as root,
    ):
        root.set_inputs({"message": f"q{i}"})
        with sessiontrace.start_span("llm", span_type="CHAT_MODEL") as llm:
            llm.set_inputs({"messages": [{"role": "user", "content": f"q{i}"}]})
            llm.set_attribute("mlflow.llm.model", "gpt-4o-mini")
            llm.set_attribute(
                "mlflow.chat.tokenUsage",
                {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            )
            llm.set_outputs(f"a{i}")
        root.set_outputs(f"a{i}")


def use(store_path: Path, *targets: OTLPTarget, **options: Any) -> None:
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        flush_interval=0.01,
        otlp_targets=list(targets),
        **options,
    )


def otlp_stats() -> list[dict[str, Any]]:
    return list(sessiontrace.get_stats()["otlp"])


def test_sends_protobuf_gzip_with_headers_beside_the_store(
    fake_otlp: FakeOTLP, store_path: Path
) -> None:
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        flush_interval=0.01,
        otlp_endpoint=fake_otlp.url,
        otlp_headers={"x-mlflow-experiment-id": "7"},
        app_version="2.0",
        environment="PRODUCTION",
    )
    one_trace()
    assert sessiontrace.flush(10)
    (got,) = fake_otlp.received
    assert got.headers["content-type"] == "application/x-protobuf"
    assert got.headers["content-encoding"] == "gzip"
    assert got.headers["x-mlflow-experiment-id"] == "7"
    resource = {
        kv.key: kv.value.string_value for kv in got.request.resource_spans[0].resource.attributes
    }
    assert resource["service.version"] == "2.0"
    assert resource["deployment.environment.name"] == "PRODUCTION"
    root, llm = sorted(got.spans, key=lambda s: len(s.parent_span_id))
    r, c = attrs(root), attrs(llm)
    for a in (r, c):
        assert a["session.id"] == a["gen_ai.conversation.id"] == "s1"
        assert a["user.id"] == "u1"
    assert r["input.value"] == '{"message":"q0"}' and r["input.mime_type"] == "application/json"
    assert r["output.value"] == "a0" and r["output.mime_type"] == "text/plain"
    assert r["openinference.span.kind"] == "CHAIN" and r["mlflow.spanType"] == "CHAIN"
    assert r["mlflow.traceTag.mlflow.traceName"] == "chat_turn"
    assert r["sessiontrace.metadata.app_version"] == "2.0"
    assert c["openinference.span.kind"] == "LLM" and c["mlflow.spanType"] == "CHAT_MODEL"
    assert c["gen_ai.request.model"] == c["llm.model_name"] == "gpt-4o-mini"
    assert (c["gen_ai.usage.input_tokens"], c["gen_ai.usage.output_tokens"]) == (3, 4)
    assert (c["llm.token_count.prompt"], c["llm.token_count.completion"]) == (3, 4)
    assert llm.parent_span_id == root.span_id and not root.parent_span_id
    # Beside the local store, not instead of it.
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None and sessiontrace.get_trace(trace_id) is not None
    assert root.trace_id == bytes.fromhex(trace_id[3:])
    (stats,) = otlp_stats()
    assert (stats["exported_traces"], stats["exported_spans"], stats["requests"]) == (1, 2, 1)


def test_otlp_only_skips_the_local_store(fake_otlp: FakeOTLP, store_path: Path) -> None:
    store_path.unlink(missing_ok=True)
    use(store_path, OTLPTarget(fake_otlp.url), otlp_only=True)
    one_trace()
    assert sessiontrace.flush(10)
    assert len(fake_otlp.spans) == 2
    assert not store_path.exists()


def test_429_waits_for_retry_after_then_succeeds(fake_otlp: FakeOTLP, store_path: Path) -> None:
    fake_otlp.replies = [Reply(429, headers={"Retry-After": "1"})]
    use(store_path, OTLPTarget(fake_otlp.url))
    one_trace()
    started = time.monotonic()
    assert sessiontrace.flush(20)
    assert time.monotonic() - started >= 1.0  # it waited as asked
    assert len(fake_otlp.received) == 2  # the refused request, then the same again
    assert fake_otlp.received[0].request == fake_otlp.received[1].request
    (stats,) = otlp_stats()
    assert stats["retryable_failures"] == 1 and stats["exported_traces"] == 1
    assert stats["dropped"] == 0


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(fake_otlp: FakeOTLP, store_path: Path, status: int) -> None:
    fake_otlp.replies = [Reply(status), Reply(status)]
    use(store_path, OTLPTarget(fake_otlp.url))
    one_trace()
    assert sessiontrace.flush(20)
    assert len(fake_otlp.received) == 3
    assert otlp_stats()[0]["exported_spans"] == 2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_other_errors_are_not_retried_and_are_counted(
    fake_otlp: FakeOTLP, store_path: Path, status: int
) -> None:
    fake_otlp.default = Reply(status, body=b"no", content_type="text/plain")
    use(store_path, OTLPTarget(fake_otlp.url))
    one_trace()
    assert sessiontrace.flush(10)
    assert len(fake_otlp.received) == 1  # a one-trace batch: sent once, never again
    (stats,) = otlp_stats()
    assert stats["refused_requests"] == 1
    assert stats["dropped_by_reason"] == {"export_error": 1}
    assert stats["exported_traces"] == 0
    assert stats["last_error"] == f"HTTP {status}"


def record(i: int, session: str = "s") -> TraceRecord:
    span = SpanRecord(
        f"tr-{i:032x}",
        f"{i + 1:016x}",
        None,
        f"t{i}",
        "CHAIN",
        1,
        2,
        "OK",
        "",
        None,
        None,
        None,
        None,
    )
    metadata = {"mlflow.trace.session": session}
    return TraceRecord(span.trace_id, 1, 2, "OK", span, (span,), metadata, {}, None, None, None)


def test_a_refused_trace_does_not_sink_its_batch(fake_otlp: FakeOTLP) -> None:
    # The batch of three is refused (400); the pipeline sends each trace alone, and
    # only the one the target refuses again is dropped (and counted).
    fake_otlp.replies = [Reply(400), Reply(200), Reply(400), Reply(200)]
    exporter = OTLPExporter(OTLPTarget(fake_otlp.url))
    pipeline = Pipeline(
        exporter, max_queue_size=100, batch_size=3, flush_interval=30, max_block_seconds=1
    )
    for i in range(3):
        pipeline.submit(record(i))
    assert pipeline.flush(10)
    assert [len(r.spans) for r in fake_otlp.received] == [3, 1, 1, 1]
    assert pipeline.stats()["dropped_by_reason"] == {"export_error": 1}
    assert exporter.stats()["exported_traces"] == 2
    pipeline.close(5)


def test_partial_success_is_counted_not_retried(fake_otlp: FakeOTLP, store_path: Path) -> None:
    fake_otlp.replies = [Reply(200, body=partial(1, "span 2 has no name"))]
    use(store_path, OTLPTarget(fake_otlp.url))
    one_trace()
    assert sessiontrace.flush(10)
    assert len(fake_otlp.received) == 1
    (stats,) = otlp_stats()
    assert stats["rejected_spans"] == 1
    assert "span 2 has no name" in stats["last_error"]


def test_partial_success_in_json_is_read_too(fake_otlp: FakeOTLP, store_path: Path) -> None:
    # Langfuse answers JSON even to protobuf requests.
    fake_otlp.replies = [Reply(200, body=partial_json(2), content_type="application/json")]
    use(store_path, OTLPTarget(fake_otlp.url))
    one_trace()
    assert sessiontrace.flush(10)
    assert otlp_stats()[0]["rejected_spans"] == 2


def test_retry_after_is_capped(fake_otlp: FakeOTLP) -> None:
    fake_otlp.replies = [Reply(503, headers={"Retry-After": "3600"})]
    exporter = OTLPExporter(OTLPTarget(fake_otlp.url, max_retry_after=0.5))
    slept: list[float] = []
    exporter.sleep = slept.append
    with pytest.raises(RetryableExportError):
        exporter.export([record(1)])
    assert slept == [0.5]
    exporter.export([record(1)])
    assert len(fake_otlp.received) == 2
    exporter.close()


def test_target_down_then_up_delivers_everything(store_path: Path) -> None:
    # Nothing listens on the port at first: connection refused is retried.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    use(store_path, OTLPTarget(f"http://127.0.0.1:{port}/v1/traces"))
    for i in range(20):
        one_trace(i)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not otlp_stats()[0]["retryable_failures"]:
        time.sleep(0.02)
    assert otlp_stats()[0]["retryable_failures"] >= 1
    server = _fake_on(port)
    try:
        for i in range(20, 30):
            one_trace(i)
        assert sessiontrace.flush(30)
        roots = [s for s in server.spans if not s.parent_span_id]
        assert len({s.trace_id for s in roots}) == 30
        assert otlp_stats()[0]["dropped"] == 0
    finally:
        server.close()


def _fake_on(port: int) -> FakeOTLP:
    fake = FakeOTLP()
    fake.server.shutdown()
    fake.server.server_close()
    fake.thread.join(5)
    handler = fake.server.RequestHandlerClass
    fake.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    fake.server.daemon_threads = True
    fake.thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    fake.thread.start()
    return fake


def test_caller_never_waits_for_a_hanging_target(fake_otlp: FakeOTLP, store_path: Path) -> None:
    fake_otlp.gate = threading.Event()  # every request hangs until released
    use(store_path, OTLPTarget(fake_otlp.url, timeout=30))
    done = threading.Event()

    def app() -> None:
        for i in range(200):
            one_trace(i)
        done.set()

    worker = threading.Thread(target=app)
    worker.start()
    # The app finishes its 200 traces while the target still holds the first request:
    # had any call waited for the target, this could not happen before the gate opens.
    assert done.wait(60)
    assert not fake_otlp.gate.is_set()
    # The local store has them all already.
    assert _runtime._state.pipeline is not None
    assert _runtime._state.pipeline.flush(30)
    fake_otlp.gate.set()
    worker.join()
    assert sessiontrace.flush(30)
    roots = [s for s in fake_otlp.spans if not s.parent_span_id]
    assert len(roots) == 200


def test_one_dead_target_does_not_hold_up_another(make_fake: Any, store_path: Path) -> None:
    dead, alive = make_fake(), make_fake()
    dead.gate = threading.Event()
    use(store_path, OTLPTarget(dead.url, name="dead"), OTLPTarget(alive.url, name="alive"))
    for i in range(5):
        one_trace(i)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(alive.spans) < 10:
        time.sleep(0.02)
    assert len(alive.spans) == 10
    assert not dead.gate.is_set()
    dead.gate.set()
    assert sessiontrace.flush(20)
    names = [s["endpoint"] for s in otlp_stats()]
    assert names == [dead.url, alive.url]


def test_full_target_queue_drops_and_counts(fake_otlp: FakeOTLP, store_path: Path) -> None:
    fake_otlp.gate = threading.Event()
    use(store_path, OTLPTarget(fake_otlp.url), max_queue_size=10, max_block_seconds=0.01)
    for i in range(60):
        one_trace(i)
    assert _runtime._state.pipeline is not None and _runtime._state.pipeline.flush(20)
    fake_otlp.gate.set()
    assert sessiontrace.flush(20)
    (stats,) = otlp_stats()
    delivered = len([s for s in fake_otlp.spans if not s.parent_span_id])
    main_dropped = sessiontrace.get_stats()["dropped"]  # the app's own queue holds 10 too
    assert stats["dropped"] > 0
    # Every trace is delivered or counted: by the target's queue or by the app's.
    assert delivered + stats["dropped"] + main_dropped == 60


def test_long_session_ids_are_shortened_stably(fake_otlp: FakeOTLP, store_path: Path) -> None:
    use(store_path, OTLPTarget(fake_otlp.url))
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    one_trace(0, session=long_a)
    one_trace(1, session=long_b)
    assert sessiontrace.flush(10)
    roots = [attrs(s) for s in fake_otlp.spans if not s.parent_span_id]
    sessions = [r["session.id"] for r in roots]
    assert all(len(s) == 250 for s in sessions)
    assert sessions[0] != sessions[1]  # distinct ids stay distinct
    assert roots[0]["sessiontrace.metadata.mlflow.trace.session"] == long_a  # kept in full
    assert otlp_stats()[0]["ids_shortened"] == 2


def test_tag_edits_after_export_are_counted(fake_otlp: FakeOTLP, store_path: Path) -> None:
    use(store_path, OTLPTarget(fake_otlp.url), otlp_only=True)
    one_trace()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    sessiontrace.set_trace_tag(trace_id, "reviewed", "yes")
    assert sessiontrace.flush(10)
    assert otlp_stats()[0]["tag_changes_skipped"] == 1


# -- settings ------------------------------------------------------------------------------


def test_standard_otel_env_vars(monkeypatch: pytest.MonkeyPatch, fake_otlp: FakeOTLP) -> None:
    base = fake_otlp.url.rsplit("/v1/traces", 1)[0]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-a=1,x-b=two%20words")
    s = sessiontrace.Settings.resolve()
    assert s.otlp_endpoint == fake_otlp.url
    assert dict(s.otlp_headers) == {"x-a": "1", "x-b": "two words"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-c=3")
    s = sessiontrace.Settings.resolve()
    assert s.otlp_endpoint == "http://127.0.0.1:9/custom"  # used as is, no /v1/traces added
    assert dict(s.otlp_headers) == {"x-c": "3"}
    monkeypatch.setenv("SESSIONTRACE_OTLP_ENDPOINT", "http://127.0.0.1:8/v1/traces")
    monkeypatch.setenv("SESSIONTRACE_OTLP_HEADERS", "x-d=4")
    monkeypatch.setenv("SESSIONTRACE_OTLP_ONLY", "true")
    s = sessiontrace.Settings.resolve()
    assert (s.otlp_endpoint, dict(s.otlp_headers), s.otlp_only) == (
        "http://127.0.0.1:8/v1/traces",
        {"x-d": "4"},
        True,
    )
    s = sessiontrace.Settings.resolve({"otlp_endpoint": "http://h:1/v1/traces"})
    assert s.otlp_endpoint == "http://h:1/v1/traces"


def test_settings_errors_and_secrets() -> None:
    with pytest.raises(ValueError, match="http"):
        sessiontrace.configure(otlp_endpoint="ftp://x/v1/traces")
    with pytest.raises(ValueError, match="needs an OTLP endpoint"):
        sessiontrace.configure(otlp_only=True)
    with pytest.raises(TypeError):
        sessiontrace.configure(otlp_targets="http://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header"):
        sessiontrace.configure(otlp_endpoint="http://x/v1/traces", otlp_headers={"a\n": "b"})
    with pytest.raises(ValueError, match="key=value"):
        parse_headers("novalue")
    s = sessiontrace.configure(
        otlp_endpoint="http://127.0.0.1:1/v1/traces",
        otlp_headers={"authorization": "Bearer s3cret"},
    )
    assert "s3cret" not in repr(s)
    target = OTLPTarget.langfuse("http://lf:3000", public_key="pk-1", secret_key="sk-2")
    assert "sk-2" not in repr(target)
    assert target.endpoint == "http://lf:3000/api/public/otel/v1/traces"
    assert target.headers["authorization"].startswith("Basic ")
    assert OTLPTarget.mlflow("http://m:5000/", experiment_id="3").headers == {
        "x-mlflow-experiment-id": "3"
    }
    assert OTLPTarget.phoenix(project="p").endpoint == "http://127.0.0.1:6006/v1/traces"


def test_bad_env_is_logged_not_raised_when_lazy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
    s = sessiontrace.Settings.resolve(lenient=True)
    assert s.otlp_endpoint is None
    assert "ignores the OTLP settings" in caplog.text


def test_gzip_body_is_valid(fake_otlp: FakeOTLP) -> None:
    exporter = OTLPExporter(OTLPTarget(fake_otlp.url, compression="none"))
    body, stats = exporter.encode([])
    assert stats.spans == 0 and gzip.compress(body)  # an empty batch encodes
    exporter.close()


def test_otel_env_without_the_extra_keeps_local_tracing(
    monkeypatch: pytest.MonkeyPatch, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A variable meant for another tracer, and no opentelemetry-proto: traces still land
    # in the local store, and the log says why OTLP is off.
    import sessiontrace._otlp

    monkeypatch.setitem(sys.modules, "sessiontrace._otlp._encode", None)  # import fails
    monkeypatch.delattr(sessiontrace._otlp, "_encode", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("SESSIONTRACE_TRACKING_URI", f"sqlite:///{store_path}")
    _runtime.swap_settings(None)  # resolved lazily, from the environment
    one_trace()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None and sessiontrace.get_trace(trace_id) is not None
    assert "does not send OTLP" in caplog.text
    assert sessiontrace.get_stats()["otlp"] == []
