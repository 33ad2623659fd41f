"""OTLP export: caller-side cost and throughput, beside the OpenTelemetry SDK's own exporter.

    .venv/bin/python bench/otlp_export.py            # full run (about 2 minutes)
    .venv/bin/python bench/otlp_export.py --quick    # short run

The workload is a two-span chat turn (a root with the user, the session, inputs and
outputs; an LLM child with model and token usage). All exporters post OTLP/HTTP
protobuf + gzip to the same local sink: a separate process on 127.0.0.1 that parses
every request (upb) and counts the spans. Contenders:

- ``untraced``: the same two functions, no tracing.
- ``sessiontrace``: ``start_span`` x2, SQLite store, OTLP off.
- ``sessiontrace+otlp``: the same, plus ``configure(otlp_endpoint=...)`` (store AND OTLP).
- ``sessiontrace otlp-only``: ``otlp_only=True``, no local store.
- ``opentelemetry-sdk``: ``TracerProvider`` + ``BatchSpanProcessor(OTLPSpanExporter(...,
  compression=gzip))``, ``with tracer.start_as_current_span(...)`` x2, the same
  attributes set on the spans.

Caller cost. Each contender runs in its own worker process. The parent runs rounds; in
each round every contender, in a fresh random order, times one block of back-to-back
traces in the calling thread (its exporter threads running and competing for the GIL),
then drains to the sink untimed. Reported: medians over rounds of µs per trace (wall
and calling-thread CPU) and ratios of overhead (traced minus untraced), per round.

Encoding. In the parent, 1000 such traces already recorded, encoded to request bytes by
our encoder (``encode_bytes``) and by the SDK's (``encode_spans(...).SerializeToString()``
on its ``ReadableSpan``s), alternately, median µs per trace (what the exporter thread
pays before gzip and the POST).

Throughput. In fresh processes, N traces produced back to back then flushed; the
traces/s from the first trace until the sink has counted every span, and whether it did.

This script prints results; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
CONTENDERS = (
    "untraced",
    "sessiontrace",
    "sessiontrace+otlp",
    "sessiontrace otlp-only",
    "opentelemetry-sdk",
)


# -- the sink (its own process) -------------------------------------------------------------


def run_sink(port_file: str) -> None:
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    counts = {"spans": 0, "requests": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                counts["spans"] += n
                counts["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_port))
    server.serve_forever()


def sink_count(url: str) -> int:
    with urllib.request.urlopen(url.rsplit("/v1/traces", 1)[0] + "/count", timeout=30) as r:
        return int(json.load(r)["spans"])


# -- the contenders (run inside a worker process) ---------------------------------------------


def make_contender(name: str, sink_url: str, workdir: Path) -> tuple[Any, Any]:
    """``(turn(i), drain())`` for one contender."""
    if name == "untraced":

        def llm(i: int) -> str:
            return f"answer {i}"

        def turn(i: int) -> str:
            return llm(i)

        return turn, lambda: None

    if name.startswith("sessiontrace"):
        sys.path.insert(0, str(SRC))
        import sessiontrace

        options: dict[str, Any] = {}
        if name != "sessiontrace":
            options["otlp_endpoint"] = sink_url
        if name.endswith("otlp-only"):
            options["otlp_only"] = True
        sessiontrace.configure(tracking_uri=f"sqlite:///{workdir / 'traces.db'}", **options)
        usage = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}

        def turn(i: int) -> str:
            with (
                sessiontrace.user_session(f"user-{i % 8}", f"session-{i % 32}"),
                sessiontrace.start_span("chat_turn", span_type="CHAIN") as root,
            ):
                root.set_inputs({"message": "What is ML vs. AI?"})
                with sessiontrace.start_span("llm_call", span_type="CHAT_MODEL") as span:
                    span.set_inputs({"messages": [{"role": "user", "content": "What is ML?"}]})
                    span.set_attributes(
                        {"mlflow.llm.model": "gpt-4o-mini", "mlflow.chat.tokenUsage": usage}
                    )
                    answer = f"answer {i}"
                    span.set_outputs(answer)
                root.set_outputs(answer)
            return answer

        def drain() -> None:
            sessiontrace.flush()

        return turn, drain

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=sink_url, compression=Compression.Gzip))
    )
    tracer = provider.get_tracer("bench")

    def turn(i: int) -> str:
        with tracer.start_as_current_span("chat_turn") as root:
            session, user = f"session-{i % 32}", f"user-{i % 8}"
            root.set_attributes(
                {
                    "session.id": session,
                    "user.id": user,
                    "input.value": json.dumps({"message": "What is ML vs. AI?"}),
                    "input.mime_type": "application/json",
                    "openinference.span.kind": "CHAIN",
                }
            )
            with tracer.start_as_current_span("llm_call") as span:
                span.set_attributes(
                    {
                        "session.id": session,
                        "user.id": user,
                        "input.value": json.dumps(
                            {"messages": [{"role": "user", "content": "What is ML?"}]}
                        ),
                        "openinference.span.kind": "LLM",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": 30,
                        "gen_ai.usage.output_tokens": 12,
                    }
                )
                answer = f"answer {i}"
                span.set_attribute("output.value", answer)
            root.set_attribute("output.value", answer)
        return answer

    def drain() -> None:
        provider.force_flush(60_000)

    return turn, drain


def worker(name: str, sink_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="otlp-bench-") as tmp:
        turn, drain = make_contender(name, sink_url, Path(tmp))
        for _ in range(200):  # warm up
            turn(0)
        drain()
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "run":
                n = int(arg)
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                for i in range(n):
                    turn(i)
                wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
                drain()
                result = {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}
                print(json.dumps(result), flush=True)
            elif command == "throughput":
                n = int(arg)
                start = time.perf_counter()
                for i in range(n):
                    turn(i)
                drain()
                print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
            else:
                return


# -- the parent -------------------------------------------------------------------------------


def encode_costs(rounds: int) -> None:
    sys.path.insert(0, str(SRC))
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sessiontrace._otlp._encode import encode_bytes
    from sessiontrace._records import SpanRecord, TraceRecord

    n = 1000
    records = []
    usage = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    for i in range(n):
        tid = f"tr-{i + 1:032x}"
        root = SpanRecord(
            tid, f"{i + 1:016x}", None, "chat_turn", "CHAIN", 1, 5, "OK", "",
            '{"message":"What is ML vs. AI?"}', '"answer"', None, None,
        )  # fmt: skip
        llm = SpanRecord(
            tid, f"{i + 10**6:016x}", root.span_id, "llm_call", "CHAT_MODEL", 2, 4, "OK", "",
            '{"messages":[{"role":"user","content":"What is ML?"}]}', '"answer"',
            {"mlflow.llm.model": "gpt-4o-mini", "mlflow.chat.tokenUsage": usage}, None,
        )  # fmt: skip
        metadata = {"mlflow.trace.user": f"user-{i % 8}", "mlflow.trace.session": f"s-{i % 32}"}
        records.append(
            TraceRecord(tid, 1, 5, "OK", root, (root, llm), metadata, {}, None, None, None)
        )
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(n):
        with tracer.start_as_current_span("chat_turn") as root_span:
            attributes = {"session.id": f"s-{i % 32}", "user.id": f"user-{i % 8}"}
            root_span.set_attributes(
                {**attributes, "input.value": '{"message":"What is ML vs. AI?"}',
                 "input.mime_type": "application/json", "openinference.span.kind": "CHAIN",
                 "output.value": "answer"}
            )  # fmt: skip
            with tracer.start_as_current_span("llm_call") as span:
                span.set_attributes(
                    {**attributes, "openinference.span.kind": "LLM",
                     "input.value": '{"messages":[{"role":"user","content":"What is ML?"}]}',
                     "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 30,
                     "gen_ai.usage.output_tokens": 12, "output.value": "answer"}
                )  # fmt: skip
    spans = memory.get_finished_spans()
    ours, theirs = [], []
    for _ in range(rounds):
        start = time.process_time()
        encode_bytes(records)
        ours.append((time.process_time() - start) / n * 1e6)
        start = time.process_time()
        encode_spans(spans).SerializeToString()
        theirs.append((time.process_time() - start) / n * 1e6)
    a, b = statistics.median(ours), statistics.median(theirs)
    print("\nencoding 1000 two-span traces to request bytes (CPU µs per trace, medians)")
    print(f"  sessiontrace encode_bytes  {a:8.1f}   (more attributes: the full mapping table)")
    print(f"  opentelemetry-sdk encoder  {b:8.1f}")
    print(f"  ratio                      {a / b:8.3f}x")


def spawn(name: str, sink_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", name, "--sink", sink_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def ask(proc: subprocess.Popen[str], line: str) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return dict(json.loads(proc.stdout.readline()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--sink")
    parser.add_argument("--sink-process")
    args = parser.parse_args()
    if args.sink_process:
        run_sink(args.sink_process)
        return
    if args.worker:
        worker(args.worker, args.sink)
        return

    rounds, block, total = (5, 1000, 5000) if args.quick else (15, 2000, 20000)
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        sink = subprocess.Popen([sys.executable, __file__, "--sink-process", str(port_file)])
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}/v1/traces"
            measure(url, rounds, block, total)
            encode_costs(rounds)
        finally:
            sink.terminate()
            sink.wait(10)


def measure(url: str, rounds: int, block: int, total: int) -> None:
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {rounds} rounds of {block} traces"
    )
    workers = {name: spawn(name, url) for name in CONTENDERS}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    try:
        for _ in range(rounds):
            order = list(CONTENDERS)
            random.shuffle(order)
            for name in order:
                results[name].append(ask(workers[name], f"run {block}"))
    finally:
        for proc in workers.values():
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(60)

    base = [r["wall_us"] for r in results["untraced"]]
    print("\ncaller cost per 2-span trace (medians over rounds)")
    print(f"{'contender':26} {'wall µs':>9} {'cpu µs':>9} {'overhead µs':>12}")
    overhead: dict[str, list[float]] = {}
    for name in CONTENDERS:
        wall = [r["wall_us"] for r in results[name]]
        cpu = [r["cpu_us"] for r in results[name]]
        overhead[name] = [w - b for w, b in zip(wall, base, strict=True)]
        print(
            f"{name:26} {statistics.median(wall):9.1f} {statistics.median(cpu):9.1f} "
            f"{statistics.median(overhead[name]):12.1f}"
        )

    cpu_base = [r["cpu_us"] for r in results["untraced"]]
    cpu_over = {
        name: [r["cpu_us"] - b for r, b in zip(results[name], cpu_base, strict=True)]
        for name in CONTENDERS
    }

    def ratio(table: dict[str, list[float]], a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(table[a], table[b], strict=True) if y > 0]
        return f"{statistics.median(per_round):.3f}x" if per_round else "n/a"

    print("\nratios of overhead, per-round medians (wall | calling-thread CPU)")
    pairs = [
        ("sessiontrace+otlp", "sessiontrace"),
        ("sessiontrace otlp-only", "sessiontrace"),
        ("sessiontrace+otlp", "opentelemetry-sdk"),
        ("sessiontrace otlp-only", "opentelemetry-sdk"),
    ]
    for a, b in pairs:
        print(f"  {a:22} / {b:17} = {ratio(overhead, a, b)} | {ratio(cpu_over, a, b)}")

    print(f"\nthroughput: {total} traces produced back to back, then flushed, into the sink")
    for name in ("sessiontrace+otlp", "sessiontrace otlp-only", "opentelemetry-sdk"):
        before = sink_count(url)
        proc = spawn(name, url)
        try:
            took = ask(proc, f"throughput {total}")["seconds"]
        finally:
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(60)
        arrived = (sink_count(url) - before) // 2 - 200  # 2 spans a trace; minus warm-up
        print(
            f"  {name:24} {total / took:10,.0f} traces/s  ({took:.2f} s; "
            f"{arrived:,} of {total:,} traces counted by the sink)"
        )


if __name__ == "__main__":
    main()
