"""Caller-side cost of a traced two-span call, and what actually reaches the store.

    .venv/bin/python bench/trace_overhead.py            # full run (a few minutes)
    .venv/bin/python bench/trace_overhead.py --quick    # short run

The workload is the one an LLM chat app repeats: an outer traced function sets the
user, the session and two more metadata entries on its trace and calls a traced
inner function (two spans). Contenders:

- ``untraced``: the same two functions, no tracing.
- ``sessiontrace``: ``@sessiontrace.trace`` + ``update_current_trace(metadata=...)``,
  SQLite store in a temporary directory, background writer running.
- ``opentelemetry-sdk``: ``TracerProvider`` + ``BatchSpanProcessor`` with an exporter
  that only counts spans; user, session and metadata as attributes of the root span.
- ``mlflow-tracing``: ``@mlflow.trace`` + ``mlflow.update_current_trace(metadata=...)``
  with a local file store in a temporary directory (the SQLite store of MLflow needs
  the full ``mlflow`` package); telemetry off, so nothing leaves the machine.

Method. Each contender runs in its own worker process (its own heap, GC and
background threads; its own temporary directory). The parent runs rounds; in each
round every contender, in a fresh random order, times one block of back-to-back
traces (about ``--block-seconds`` long, with its exporter/writer running and
competing for the GIL, garbage collector on), then drains its queue untimed. Only
one worker is busy at a time. Reported: the median over rounds of wall-clock µs per
trace in the calling thread, the interquartile range, the calling thread's CPU time,
all threads' CPU time including the drain, and ratios of overhead (traced minus
untraced), also computed per round, so slow phases of a noisy machine hit both sides
of a ratio alike. ``--baseline-src`` adds another checkout's sessiontrace (A/B runs).

Then, in fresh processes and fresh stores: N traces (100,000) produced back to back,
then ``flush()``; end-to-end traces/s and how many traces are in the store afterwards
(read back from the file), for sessiontrace, the OpenTelemetry exporter and
mlflow-tracing.

This script prints results; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

USER = "mlflow.trace.user"
SESSION = "mlflow.trace.session"
USERS = [f"user-{i}" for i in range(8)]
SESSIONS = [f"session-{i}" for i in range(32)]
MESSAGE = "What is ML vs. AI?"

CONTENDERS = ("untraced", "sessiontrace", "opentelemetry-sdk", "mlflow-tracing")
BASELINE = "sessiontrace-baseline"  # --baseline-src: another checkout's src, for A/B runs


# -- the contenders (run inside a worker process) -----------------------------------------


class Contender:
    """One way of tracing the workload. ``outer(user, session, message)`` is the app."""

    outer: Callable[[str, str, str], str]

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.produced = 0

    def drain(self) -> None:
        """Wait until everything produced so far has been exported (untimed)."""

    def verify(self) -> dict[str, Any]:
        """Evidence that the last trace was recorded with its user, session and spans."""
        return {}

    def arrived(self) -> dict[str, Any]:
        """Traces (and spans) that reached the store, counted from the store itself."""
        return {}

    def stats(self) -> dict[str, Any]:
        return {}


def mlflow_style_app(lib: Any) -> Callable[[str, str, str], str]:
    """The workload written against MLflow's tracing API: ``lib`` is ``mlflow`` or
    ``sessiontrace``, the same code either way (porting is changing the import)."""
    trace: Callable[[Callable[..., str]], Callable[..., str]] = lib.trace

    @trace
    def inner(message: str) -> str:
        return "echo: " + message

    @trace
    def outer(user_id: str, session_id: str, message: str) -> str:
        lib.update_current_trace(
            metadata={
                USER: user_id,
                SESSION: session_id,
                "app_version": "1.0.0",
                "deployment": "bench",
            }
        )
        return inner(message)

    return outer


class Untraced(Contender):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)

        def inner(message: str) -> str:
            return "echo: " + message

        def outer(user_id: str, session_id: str, message: str) -> str:
            return inner(message)

        self.outer = outer


class SessionTrace(Contender):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        import sessiontrace

        self.st = sessiontrace
        self.db = workdir / "sessiontrace.db"
        sessiontrace.configure(tracking_uri=f"sqlite:///{self.db}")

        self.outer = mlflow_style_app(sessiontrace)

    def drain(self) -> None:
        self.st.flush()

    def verify(self) -> dict[str, Any]:
        trace = self.st.get_trace(self.st.get_last_active_trace_id() or "")
        if trace is None:
            return {"ok": False}
        md = trace.info.trace_metadata
        return {
            "ok": bool(md.get(USER) and md.get(SESSION) and md.get("app_version"))
            and len(trace.data.spans) == 2,
            "user": md.get(USER),
            "session": md.get(SESSION),
            "spans": len(trace.data.spans),
        }

    def arrived(self) -> dict[str, Any]:
        with sqlite3.connect(self.db) as conn:
            traces, with_ids = conn.execute(
                "SELECT count(*), count(user_id) FROM traces WHERE session_id IS NOT NULL"
            ).fetchone()
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            meta = conn.execute(
                "SELECT count(*) FROM trace_metadata WHERE key = 'deployment'"
            ).fetchone()[0]
        return {"traces": traces, "spans": spans, "with_user_session": with_ids, "metadata": meta}

    def stats(self) -> dict[str, Any]:
        return dict(self.st.get_stats())


class OpenTelemetry(Contender):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class CountingExporter(SpanExporter):
            """No-op exporter; keeps the last root span so the benchmark can check it."""

            def __init__(self) -> None:
                self.spans = 0
                self.last_root: Any = None

            def export(self, spans: Any) -> SpanExportResult:
                self.spans += len(spans)
                for span in spans:
                    if span.parent is None:
                        self.last_root = span
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                pass

        self.exporter = CountingExporter()
        # A provider of our own, not the global one (MLflow has its own too).
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        tracer = self.provider.get_tracer("bench")
        get_current_span = otel_trace.get_current_span

        @tracer.start_as_current_span("inner")
        def inner(message: str) -> str:
            return "echo: " + message

        @tracer.start_as_current_span("outer")
        def outer(user_id: str, session_id: str, message: str) -> str:
            get_current_span().set_attributes(
                {
                    "user.id": user_id,
                    "session.id": session_id,
                    "app_version": "1.0.0",
                    "deployment": "bench",
                }
            )
            return inner(message)

        self.outer = outer

    def drain(self) -> None:
        self.provider.force_flush()

    def verify(self) -> dict[str, Any]:
        root = self.exporter.last_root
        attrs = dict(root.attributes) if root is not None else {}
        return {
            "ok": bool(attrs.get("user.id") and attrs.get("session.id")),
            "user": attrs.get("user.id"),
            "session": attrs.get("session.id"),
        }

    def arrived(self) -> dict[str, Any]:
        return {"traces": self.exporter.spans // 2, "spans": self.exporter.spans}


class MLflow(Contender):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        import logging

        import mlflow

        self.mlflow = mlflow
        # MLflow logs one warning per 30 s when it discards traces, its span processor
        # "Queue full, dropping Span." (both counted below from the store instead) and an
        # INFO line when it creates the experiment.
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        self.root = workdir / "mlruns"
        mlflow.set_tracking_uri(self.root.as_uri())
        self.experiment_id = mlflow.set_experiment("bench").experiment_id

        self.outer = mlflow_style_app(mlflow)

    def drain(self) -> None:
        self.mlflow.flush_trace_async_logging()

    def verify(self) -> dict[str, Any]:
        trace = self.mlflow.get_trace(self.mlflow.get_last_active_trace_id() or "")
        if trace is None:
            return {"ok": False}
        md = trace.info.trace_metadata
        return {
            "ok": bool(md.get(USER) and md.get(SESSION)) and len(trace.data.spans) == 2,
            "user": md.get(USER),
            "session": md.get(SESSION),
            "spans": len(trace.data.spans),
        }

    def arrived(self) -> dict[str, Any]:
        # The file store keeps one folder per trace: info, metadata files, spans.
        folder = self.root / self.experiment_id / "traces"
        traces = with_spans = with_user = 0
        for entry in os.scandir(folder) if folder.is_dir() else ():
            traces += 1
            path = Path(entry.path)
            with_spans += (path / "artifacts" / "traces.json").is_file()
            with_user += (path / "request_metadata" / USER).is_file()
        return {"traces": traces, "with_spans": with_spans, "with_user_session": with_user}


FACTORIES: dict[str, Callable[[Path], Contender]] = {
    "untraced": Untraced,
    "sessiontrace": SessionTrace,
    "opentelemetry-sdk": OpenTelemetry,
    "mlflow-tracing": MLflow,
}


def _produce(contender: Contender, n: int) -> tuple[int, int]:
    """Run ``n`` traces back to back; return elapsed and this thread's CPU nanoseconds."""
    outer = contender.outer
    users, sessions, message = USERS, SESSIONS, MESSAGE
    cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    for i in range(n):
        outer(users[i & 7], sessions[i & 31], message)
    elapsed = time.perf_counter_ns() - start
    cpu = time.thread_time_ns() - cpu
    contender.produced += n
    return elapsed, cpu


def worker(name: str, workdir: Path) -> None:
    """Serve the parent's commands, one JSON object per line, until EOF."""
    contender = FACTORIES[name.replace("-baseline", "")](workdir)
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        reply: dict[str, Any]
        if op == "block":
            process_cpu = time.process_time_ns()
            ns, cpu = _produce(contender, cmd["n"])
            drain_start = time.perf_counter_ns()
            contender.drain()
            reply = {
                "ns": ns,
                "cpu_ns": cpu,
                "drain_ns": time.perf_counter_ns() - drain_start,
                "process_cpu_ns": time.process_time_ns() - process_cpu,
            }
        elif op == "load":
            start = time.perf_counter_ns()
            ns, _ = _produce(contender, cmd["n"])
            contender.drain()
            total = time.perf_counter_ns() - start
            reply = {
                "produce_ns": ns,
                "total_ns": total,
                "arrived": contender.arrived(),
                "stats": contender.stats(),
            }
        elif op == "verify":
            reply = {"verify": contender.verify(), "arrived": contender.arrived()}
            reply["produced"] = contender.produced
        else:
            raise SystemExit(f"unknown op {op!r}")
        out.write(json.dumps(reply) + "\n")
        out.flush()


# -- the parent ---------------------------------------------------------------------------


class Worker:
    def __init__(self, name: str, workdir: Path, src: Path | None = None) -> None:
        self.name = name
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        env.update(
            {
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "MLFLOW_ALLOW_FILE_STORE": "true",  # the local store mlflow-tracing can use
                "OTEL_SDK_DISABLED": "false",
                "PYTHONHASHSEED": "0",
            }
        )
        for var in list(env):
            if var.startswith("SESSIONTRACE_"):
                del env[var]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--workdir", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,
            env=env,
        )

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit code {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("sessiontrace", "opentelemetry-sdk", "mlflow-tracing", "orjson"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt_ratio(values: list[float]) -> str:
    p25, med, p75 = _quantiles(values)
    if med < 0.01:
        return f"{med:.4f}x ({p25:.4f}-{p75:.4f})"
    return f"{med:.3f}x ({p25:.3f}-{p75:.3f})"


def run_overhead(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    names = CONTENDERS + ((BASELINE,) if args.baseline_src else ())
    workers = {}
    for name in names:
        workdir = root / name
        workdir.mkdir()
        workers[name] = Worker(name, workdir, args.baseline_src if name == BASELINE else None)

    # Calibrate: one warm-up block each, then a block size of about --block-seconds.
    sizes: dict[str, int] = {}
    for name, w in workers.items():
        n = 20 if name == "mlflow-tracing" else 2000
        w.ask(op="block", n=n)  # imports, first store writes, JIT-free warm-up
        reply = w.ask(op="block", n=n)
        per = reply["ns"] / n
        sizes[name] = max(20, int(args.block_seconds * 1e9 / per))
    print("block sizes (traces):", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))

    per_trace: dict[str, list[float]] = {name: [] for name in names}
    caller_cpu: dict[str, list[float]] = {name: [] for name in names}
    all_cpu: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(args.seed)
    order = list(names)
    started = time.monotonic()
    for r in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            reply = workers[name].ask(op="block", n=sizes[name])
            per_trace[name].append(reply["ns"] / sizes[name] / 1000)
            caller_cpu[name].append(reply["cpu_ns"] / sizes[name] / 1000)
            all_cpu[name].append(reply["process_cpu_ns"] / sizes[name] / 1000)
        if not args.quiet:
            print(
                f"  round {r + 1:>2}/{args.rounds}: "
                + ", ".join(f"{n} {per_trace[n][-1]:.2f}" for n in names)
                + " µs/trace",
                flush=True,
            )
    elapsed = time.monotonic() - started

    checks = {name: w.ask(op="verify") for name, w in workers.items() if name != "untraced"}
    for w in workers.values():
        w.close()

    base = per_trace["untraced"]
    overhead = {name: [t - b for t, b in zip(per_trace[name], base, strict=True)] for name in names}
    st = overhead["sessiontrace"]
    ratio_otel = [a / b for a, b in zip(st, overhead["opentelemetry-sdk"], strict=True)]
    ratio_mlflow = [a / b for a, b in zip(st, overhead["mlflow-tracing"], strict=True)]
    return {
        "per_trace": per_trace,
        "caller_cpu": caller_cpu,
        "all_cpu": all_cpu,
        "overhead": overhead,
        "ratio_otel": ratio_otel,
        "ratio_mlflow": ratio_mlflow,
        "checks": checks,
        "sizes": sizes,
        "seconds": elapsed,
    }


def run_load(name: str, n: int, root: Path, tag: str) -> dict[str, Any]:
    workdir = root / f"load-{name}-{tag}"
    workdir.mkdir()
    w = Worker(name, workdir)
    try:
        reply = w.ask(op="load", n=n)
    finally:
        w.close()
    reply["n"] = n
    return reply


def print_overhead(res: dict[str, Any]) -> None:
    per, over = res["per_trace"], res["overhead"]
    caller_cpu, all_cpu = res["caller_cpu"], res["all_cpu"]
    rounds = len(per["untraced"])
    print()
    print(f"Caller-side cost of one two-span trace, median of {rounds} interleaved rounds")
    print("(wall-clock µs per trace in the calling thread, IQR in brackets; overhead =")
    print(" traced minus untraced, per round; ratios are of overheads; CPU columns: the")
    print(" calling thread's CPU time, and all threads' CPU including export/drain)")
    print()
    width = max(len(name) for name in per)
    header = f"| {'contender':<{width}} | {'µs/trace':>8} | {'IQR':>15} | {'overhead µs':>11} |"
    header += f" {'vs OTel SDK':>11} | {'vs MLflow':>10} | {'caller CPU':>10} |"
    header += f" {'all CPU':>8} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    otel_med = statistics.median(over["opentelemetry-sdk"])
    mlflow_med = statistics.median(over["mlflow-tracing"])
    for name in per:
        p25, med, p75 = _quantiles(per[name])
        ov = statistics.median(over[name])
        if name == "untraced":
            ov_s, r_otel, r_mlflow = "-", "-", "-"
        else:
            ov_s = f"{ov:.2f}"
            r_otel = f"{ov / otel_med:.3f}x"
            r_mlflow = f"{ov / mlflow_med:.4f}x"
        print(
            f"| {name:<{width}} | {med:>8.2f} | {f'{p25:.2f}-{p75:.2f}':>15} | {ov_s:>11} |"
            f" {r_otel:>11} | {r_mlflow:>10} | {statistics.median(caller_cpu[name]):>10.2f} |"
            f" {statistics.median(all_cpu[name]):>8.2f} |"
        )
    print()
    print("sessiontrace overhead / OpenTelemetry SDK overhead, per round:", end=" ")
    print(_fmt_ratio(res["ratio_otel"]), "  target <= 0.25x")
    print("sessiontrace overhead / mlflow-tracing overhead, per round:   ", end=" ")
    print(_fmt_ratio(res["ratio_mlflow"]), "  target <= 0.01x")
    cpu_over = {
        name: [c - b for c, b in zip(caller_cpu[name], caller_cpu["untraced"], strict=True)]
        for name in caller_cpu
    }
    cpu_ratio = [
        a / b for a, b in zip(cpu_over["sessiontrace"], cpu_over["opentelemetry-sdk"], strict=True)
    ]
    print("same, caller-thread CPU time instead of wall clock, per round: ", end=" ")
    print(_fmt_ratio(cpu_ratio))
    if BASELINE in over:
        ab = [a / b for a, b in zip(over["sessiontrace"], over[BASELINE], strict=True)]
        print(f"sessiontrace overhead / {BASELINE} overhead, per round:", _fmt_ratio(ab))
    print()
    for name, check in res["checks"].items():
        v = check["verify"]
        print(
            f"recorded? {name:<18} {'yes' if v.get('ok') else 'NO'}: last trace user="
            f"{v.get('user')!r} session={v.get('session')!r}"
            + (f" spans={v['spans']}" if "spans" in v else "")
            + f"; {check['produced']:,} produced, arrived {check['arrived']}"
        )


def print_load(
    st: list[dict[str, Any]], otel: dict[str, Any] | None, ml: dict[str, Any] | None
) -> None:
    print()
    print("Sustained end to end: N traces produced back to back, then flush(); fresh store")
    for i, r in enumerate(st, 1):
        n = r["n"]
        a = r["arrived"]
        s = r["stats"]
        print(
            f"  sessiontrace run {i}: {n:,} traces, produced in {r['produce_ns'] / 1e9:.2f} s,"
            f" in SQLite after {r['total_ns'] / 1e9:.2f} s = {n / (r['total_ns'] / 1e9):,.0f}"
            f" traces/s; arrived {a['traces']:,}/{n:,} traces ({a['traces'] / n:.2%}),"
            f" {a['spans']:,}/{2 * n:,} spans, {a['with_user_session']:,} with user+session,"
            f" {a['metadata']:,} with metadata; get_stats(): written {s['written']:,},"
            f" dropped {s['dropped']} {s['dropped_by_reason'] or ''}"
        )
    rates = [r["n"] / (r["total_ns"] / 1e9) for r in st]
    print(
        f"  sessiontrace end to end: median {statistics.median(rates):,.0f} traces/s"
        f" (min {min(rates):,.0f}, max {max(rates):,.0f})   target >= 10,000;"
        f" arrived {min(r['arrived']['traces'] for r in st):,} of {st[0]['n']:,} in the worst run"
        "   target 100%"
    )
    if otel is not None:
        n = otel["n"]
        print(
            f"  opentelemetry-sdk (no-op exporter): {n:,} traces, exported"
            f" {otel['arrived']['traces']:,}/{n:,} ({otel['arrived']['traces'] / n:.2%}),"
            f" {n / (otel['total_ns'] / 1e9):,.0f} traces/s end to end"
        )
    if ml is not None:
        n = ml["n"]
        a = ml["arrived"]
        print(
            f"  mlflow-tracing (file store): {n:,} traces produced in"
            f" {ml['produce_ns'] / 1e9:.1f} s, stored after {ml['total_ns'] / 1e9:.1f} s"
            f" = {n / (ml['total_ns'] / 1e9):,.0f} traces/s; arrived {a['traces']:,}/{n:,}"
            f" ({a['traces'] / n:.2%}), {a['with_spans']:,} with spans"
            + (
                f"; {n - a['traces']:,} missing (MLflow discards a trace when its export"
                " queue is full, with one warning per 30 s)"
                if a["traces"] < n
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 21, quick 5)")
    parser.add_argument("--block-seconds", type=float, help="length of one timed block")
    parser.add_argument("--load", type=int, help="traces for the end-to-end run (100,000)")
    parser.add_argument("--load-runs", type=int, help="end-to-end runs (default 3, quick 1)")
    parser.add_argument(
        "--mlflow-load", type=int, help="traces for MLflow's arrival count (default: --load)"
    )
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also time the sessiontrace package found in this src folder (A/B runs)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-round lines")
    parser.add_argument("--no-load", action="store_true", help="caller-side table only")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workdir)
        return
    quick = args.quick
    args.rounds = args.rounds or (5 if quick else 21)
    args.block_seconds = args.block_seconds or (0.1 if quick else 0.2)
    args.load = args.load or (20_000 if quick else 100_000)
    args.load_runs = args.load_runs or (1 if quick else 3)
    args.mlflow_load = args.mlflow_load or (2_000 if quick else args.load)

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}; load average {_load_avg()}"
    )
    print(f"versions: {_versions()}")
    root = Path(tempfile.mkdtemp(prefix="sessiontrace-bench-"))
    started = time.monotonic()
    try:
        res = run_overhead(args, root)
        print_overhead(res)
        st: list[dict[str, Any]] = []
        otel = ml = None
        if not args.no_load:
            st = [run_load("sessiontrace", args.load, root, str(i)) for i in range(args.load_runs)]
            otel = run_load("opentelemetry-sdk", args.load, root, "0")
            if args.mlflow_load > 0:
                ml = run_load("mlflow-tracing", args.mlflow_load, root, "0")
            print_load(st, otel, ml)
        if args.json:
            args.json.write_text(
                json.dumps({"overhead": res, "load": st, "otel": otel, "mlflow": ml})
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"total {time.monotonic() - started:.0f} s; load average now {_load_avg()}")


if __name__ == "__main__":
    main()
