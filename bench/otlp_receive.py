"""The OTLP receiver (POST /v1/traces): decoding cost a span, and spans/s end to end.

    .venv/bin/python bench/otlp_receive.py            # ~1 min; --quick for a smoke run

One payload shape for everything: traces of two spans (a CHAIN root and an LLM
child) with the attributes an OpenInference or GenAI app sends (session, user,
input/output with mime types, span kind, model, token counts), 1000 spans a request
(the OTel SDK batch processor's default export size is 512; a Collector sends more).

- decode, µs a span, medians of interleaved runs: protobuf ``ParseFromString`` alone
  (the floor: what any protobuf receiver pays before reading a field), our
  ``decode_protobuf`` (parse + every span to a record, attributes mapped), our
  ``decode_json`` on the same request as OTLP/JSON, and ``json_format.Parse`` (how
  MLflow reads OTLP/JSON) for scale;
- end to end, spans/s: ``create_app`` on a fresh SQLite file under uvicorn on
  127.0.0.1, one client posting gzip'd protobuf requests back to back over one
  keep-alive connection; a span counts when the server has committed it (the
  receiver answers after the write). Every request holds new traces; one more run
  sends each trace in two requests, the child first, which the receiver merges.

MLflow's and Phoenix's OTLP ingest take the same requests (new trace ids each run)
from servers of scripts/otlp_servers.py in their own virtualenvs (``make
otlp-servers``; ``SESSIONTRACE_OTLP_VENVS`` says where): MLflow answers once it has
written, Phoenix queues, so a run ends when the peer's own SQLite file holds every
span (counted in its ``spans`` table). ``--peers ''`` leaves them out.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import (  # noqa: E402
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
)

from sessiontrace._otlp._decode import decode_json, decode_protobuf  # noqa: E402

T0 = 1_765_000_000_000_000_000


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_spans(traces: int, first: int = 0) -> list[Span]:
    spans = []
    for n in range(first, first + traces):
        tid = (n + 1).to_bytes(16, "big")
        root, child = (2 * n + 1).to_bytes(8, "big"), (2 * n + 2).to_bytes(8, "big")
        start = T0 + n * 1_000_000
        common = [_kv("session.id", f"session-{n // 4}"), _kv("user.id", f"user-{n // 16}")]
        spans.append(
            Span(
                trace_id=tid,
                span_id=root,
                flags=0x100,
                name="chat_turn",
                kind=2,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 900_000,
                status=Status(code=1),
                attributes=[
                    *common,
                    _kv("openinference.span.kind", "CHAIN"),
                    _kv("input.value", json.dumps({"message": f"question {n}"})),
                    _kv("input.mime_type", "application/json"),
                    _kv("output.value", f"answer {n}"),
                    _kv("output.mime_type", "text/plain"),
                ],
            )
        )
        spans.append(
            Span(
                trace_id=tid,
                span_id=child,
                parent_span_id=root,
                flags=0x100,
                name="llm_call",
                kind=3,
                start_time_unix_nano=start + 100_000,
                end_time_unix_nano=start + 800_000,
                attributes=[
                    *common,
                    _kv("openinference.span.kind", "LLM"),
                    _kv("llm.model_name", "gpt-4o-mini"),
                    _kv("llm.token_count.prompt", 12),
                    _kv("llm.token_count.completion", 30),
                    _kv("input.value", f"question {n}"),
                    _kv("output.value", f"answer {n}"),
                ],
            )
        )
    return spans


def request(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [_kv("service.name", "bench")]},
                scope_spans=[ScopeSpans(scope={"name": "bench"}, spans=spans)],
            )
        ]
    )


def to_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec writes it (hex ids; json_format would write base64)."""
    from google.protobuf.json_format import MessageToDict

    body = MessageToDict(req)
    for rs in body["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                span["kind"] = Span.SpanKind.Value(span["kind"])  # integer enums
                if "code" in span.get("status", {}):
                    span["status"]["code"] = Status.StatusCode.Value(span["status"]["code"])
    return json.dumps(body).encode()


def _time(fn: Any, arg: Any, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(arg)
    return (time.perf_counter() - start) / repeat


def machine_speed() -> float:
    """CPU ms of a 1,000,000-step Python loop (the best of 3): how slow this machine
    is right now, to read the other figures by (about 35 ms on an idle modern core)."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        x = 0
        for i in range(1_000_000):
            x += i
        best = min(best, time.thread_time() - start)
    return best * 1e3


def bench_decode(rounds: int, spans_per_request: int) -> dict[str, float]:
    from google.protobuf.json_format import Parse

    req = request(make_spans(spans_per_request // 2))
    proto = req.SerializeToString()
    js = to_json(req)
    mlflow_js = json.dumps(
        __import__("google.protobuf.json_format", fromlist=["x"]).MessageToDict(req)
    )

    def parse_only(body: bytes) -> None:
        ExportTraceServiceRequest().ParseFromString(body)

    def json_format_parse(body: str) -> None:
        Parse(body, ExportTraceServiceRequest())

    cases = {
        "protobuf ParseFromString (floor)": (parse_only, proto, 20),
        "sessiontrace decode_protobuf": (decode_protobuf, proto, 5),
        "sessiontrace decode_json": (decode_json, js, 5),
        "json_format.Parse (MLflow's JSON path), parse only": (json_format_parse, mlflow_js, 1),
    }
    assert len(decode_protobuf(proto).spans) == spans_per_request
    assert len(decode_json(js).spans) == spans_per_request
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        order = list(cases.items())
        if r % 2:
            order.reverse()
        for name, (fn, arg, repeat) in order:
            times[name].append(_time(fn, arg, repeat) / spans_per_request * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_stages(rounds: int, requests: int, size: int) -> dict[str, float]:
    """CPU time (this thread's) a span of each step the endpoint runs, in process on a
    fresh SQLite file: less swayed by other work on the machine than wall time."""
    from sessiontrace._store import SQLiteStore
    from sessiontrace.llm._pricing import price_items
    from sessiontrace.server._otlp import _inflate, assemble

    steps = ("gunzip", "decode", "read stored", "assemble", "price", "store")
    times: dict[str, list[float]] = {step: [] for step in steps}
    first = 10**8
    for _ in range(rounds):
        bodies = make_bodies(requests, size, first, split=False)
        first += requests * size
        spent = dict.fromkeys(steps, 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "traces.db")
            for body in bodies:
                t0 = time.thread_time()
                raw = _inflate(body, "gzip", 64 << 20)
                t1 = time.thread_time()
                spans = decode_protobuf(raw).spans
                t2 = time.thread_time()
                ids = list(dict.fromkeys(s.record.trace_id for s in spans))
                stored = {t.info.trace_id: t for t in store.load_traces(ids)}
                t3 = time.thread_time()
                items = assemble(spans, stored)
                t4 = time.thread_time()
                items = price_items(items)
                t5 = time.thread_time()
                store.export(items)
                t6 = time.thread_time()
                for step, (a, b) in zip(
                    steps, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)), strict=True
                ):
                    spent[step] += b - a
            store.close()
        for step in steps:
            times[step].append(spent[step] / (requests * size) * 1e6)
    return {step: statistics.median(values) for step, values in times.items()}


def make_bodies(requests: int, spans_per_request: int, first: int, split: bool) -> list[bytes]:
    """gzip'd protobuf requests of new traces (ids from ``first``); ``split``: each
    trace in two requests, the children first."""
    bodies = []
    traces = spans_per_request // 2
    for i in range(requests):
        spans = make_spans(traces, first=first + i * traces)
        if split:
            bodies.append(gzip.compress(request(spans[1::2]).SerializeToString()))
            bodies.append(gzip.compress(request(spans[0::2]).SerializeToString()))
        else:
            bodies.append(gzip.compress(request(spans).SerializeToString()))
    return bodies


HEADERS = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}


def post_all(url: str, headers: dict[str, str], bodies: list[bytes]) -> float:
    """Seconds to post every body back to back over one keep-alive connection."""
    import httpx

    with httpx.Client(timeout=300) as client:
        start = time.perf_counter()
        for body in bodies:
            r = client.post(url, content=body, headers={**HEADERS, **headers})
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
        return time.perf_counter() - start


def count_rows(db: Path, sql: str) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


class Ours:
    name = "sessiontrace"

    def __enter__(self) -> Ours:
        import contextlib

        from otlp.receive_support import receiver

        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(tempfile.TemporaryDirectory())
        self.db = Path(tmp) / "traces.db"
        self.url = self._stack.enter_context(receiver(str(self.db))) + "/v1/traces"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, bodies: list[bytes], spans: int) -> float:
        before = count_rows(self.db, "SELECT count(*) FROM spans") if self.db.exists() else 0
        elapsed = post_all(self.url, {}, bodies)  # answered once committed
        after = count_rows(self.db, "SELECT count(*) FROM spans")
        assert after - before == spans, (before, after, spans)
        assert count_rows(self.db, "SELECT count(*) FROM traces WHERE state = 'IN_PROGRESS'") == 0
        return spans / elapsed


class Peer:
    """MLflow or Phoenix from scripts/otlp_servers.py (their own venvs)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Peer:
        import contextlib
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "otlp_servers", ROOT / "scripts" / "otlp_servers.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["otlp_servers"] = module
        spec.loader.exec_module(module)
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(module.start(self.name))
        self.db = (
            self.server.workdir / "mlflow.db"
            if self.name == "mlflow"
            else self.server.workdir / "phoenix" / "phoenix.db"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, bodies: list[bytes], spans: int) -> float:
        before = count_rows(self.db, "SELECT count(*) FROM spans") if self.db.exists() else 0
        start = time.perf_counter()
        post_all(self.server.traces_url, self.server.headers, bodies)
        # MLflow writes before it answers; Phoenix queues: count until all are stored.
        deadline = time.monotonic() + 300
        while count_rows(self.db, "SELECT count(*) FROM spans") - before < spans:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not store {spans} spans")
            time.sleep(0.25)  # seldom: a reader must not slow the peer's own writer
        return spans / (time.perf_counter() - start)


def bench_end_to_end(
    rounds: int, requests: int, size: int, peers: list[str], peer_requests: int
) -> dict[str, list[float]]:
    import contextlib

    contenders: list[Any] = [Ours()]
    contenders += [Peer(name) for name in peers]
    results: dict[str, list[float]] = {c.name: [] for c in contenders}
    results["sessiontrace, child first"] = []
    first = 1
    with contextlib.ExitStack() as stack:
        for contender in contenders:
            stack.enter_context(contender)
        for r in range(rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for contender in order:
                n = requests if contender.name == "sessiontrace" else peer_requests
                bodies = make_bodies(n, size, first, split=False)
                first += n * size
                results[contender.name].append(contender.run(bodies, n * size))
            bodies = make_bodies(requests, size, first, split=True)
            first += requests * size
            results["sessiontrace, child first"].append(contenders[0].run(bodies, requests * size))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--peers",
        default="mlflow,phoenix",
        help="peers from scripts/otlp_servers.py (their venvs: make otlp-servers); '' for none",
    )
    parser.add_argument(
        "--peer-requests",
        type=int,
        default=2,
        help="requests a run for the peers (MLflow takes seconds for each)",
    )
    args = parser.parse_args()
    rounds, requests = (3, 5) if args.quick else (15, 10)
    size = 1000
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus; {size} spans a request")
    print(f"machine now: a 1M-step Python loop takes {machine_speed():.0f} ms of CPU")
    decode = bench_decode(rounds, size)
    print(f"\ndecode, us a span (median of {rounds} interleaved rounds)")
    floor = decode["protobuf ParseFromString (floor)"]
    for name, us in decode.items():
        print(f"  {name:52s} {us:8.2f} us   x floor {us / floor:6.1f}")
    stages = bench_stages(5 if not args.quick else 2, requests, size)
    print("\nCPU a span of each step of the endpoint, in process (median of runs)")
    for step, us in stages.items():
        print(f"  {step:14s} {us:8.2f} us")
    total = sum(stages.values())
    print(f"  {'all':14s} {total:8.2f} us   = {1e6 / total:,.0f} spans/s of one core")
    peers = [p for p in args.peers.split(",") if p]
    if peers and not (ROOT / "scripts" / "otlp_servers.py").exists():
        print("\n  MLflow / Phoenix: scripts/otlp_servers.py is not here; left out")
        peers = []
    e2e_rounds = 3
    print(
        f"\nend to end, spans/s stored (gzip'd protobuf, {requests} requests of {size} "
        f"spans a run; median of {e2e_rounds} interleaved rounds; runs in brackets)"
    )
    if peers:
        print(f"  (the peers: {args.peer_requests} requests a run)")
    results = bench_end_to_end(e2e_rounds, requests, size, peers, args.peer_requests)
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        runs = " ".join(f"{v:,.0f}" for v in values)
        print(f"  {name:28s} {medians[name]:10,.0f} spans/s   [{runs}]")
    ours = medians["sessiontrace"]
    for peer in peers:
        ratios = [a / b for a, b in zip(results["sessiontrace"], results[peer], strict=True)]
        print(
            f"  sessiontrace / {peer}: x{statistics.median(ratios):.1f}"
            " (median of per-round ratios)"
        )
    targets = [
        ("decode_protobuf <= 10 us a span", decode["sessiontrace decode_protobuf"] <= 10),
        ("end to end >= 20,000 spans/s", ours >= 20_000),
    ]
    if "mlflow" in medians:
        ratios = [a / b for a, b in zip(results["sessiontrace"], results["mlflow"], strict=True)]
        targets.append((">= 5x MLflow", statistics.median(ratios) >= 5))
    print()
    for name, ok in targets:
        print(f"  target {name}: {'yes' if ok else 'NO'}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
