"""What the request middleware costs, next to its peers, in one run.

    .venv/bin/python bench/middleware_overhead.py            # about 1-2 minutes
    .venv/bin/python bench/middleware_overhead.py --quick    # a smoke run

1. A hello-world Starlette app called directly through ASGI (a tight loop with a
   prebuilt scope and no-op receive/send), then through an HTTP client (httpx's
   in-process ASGI transport), and a hello-world Flask app called directly through
   WSGI: bare; sessiontrace context only; sessiontrace ``trace_requests=True``
   (writing real traces to a temporary SQLite file); asgi-correlation-id; and
   OpenTelemetry's ASGI/WSGI middleware with an SDK TracerProvider and a
   BatchSpanProcessor whose exporter does nothing.
2. Requests/s under uvicorn on 127.0.0.1, bare and context only: one server process
   serves both apps (and a second copy of bare, to show the noise floor) under their
   own paths, and bounded bursts of keep-alive requests from a small asyncio client
   take turns between them, so process placement and machine load hit all alike.

Every request carries X-User-ID, X-Session-ID and X-Request-ID. Variants run
interleaved, repeated; the figures are medians, the ratios are against bare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
    (b"x-user-id", b"user-12345"),
    (b"x-session-id", b"session-abcdef-0001"),
    (b"x-request-id", b"9f1c2d4e-8b7a-4c3d-9e2f-1a2b3c4d5e6f"),
]

ASGI_VARIANTS = [
    "bare",
    "minimal-contextvar",
    "sessiontrace",
    "sessiontrace+trace",
    "asgi-correlation-id",
    "otel",
]
WSGI_VARIANTS = ["bare", "sessiontrace", "sessiontrace+trace", "otel"]


# -- apps ---------------------------------------------------------------------------------

_minimal_var: Any = None


class MinimalContextVarMiddleware:
    """The floor: the smallest pure-ASGI middleware that sets two ids from headers."""

    def __init__(self, app: Any) -> None:
        global _minimal_var
        import contextvars

        if _minimal_var is None:
            _minimal_var = contextvars.ContextVar("bench_ids", default=None)
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = session = None
        for name, value in scope["headers"]:
            if name == b"x-user-id":
                user = value.decode("latin-1")
            elif name == b"x-session-id":
                session = value.decode("latin-1")
        token = _minimal_var.set((user, session))
        try:
            await self.app(scope, receive, send)
        finally:
            _minimal_var.reset(token)


def _otel_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class NoOpExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoOpExporter()))
    return provider


def make_asgi_app(variant: str) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    import sessiontrace

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    middleware: list[Middleware] = []
    if variant == "minimal-contextvar":
        middleware = [Middleware(MinimalContextVarMiddleware)]
    elif variant == "sessiontrace":
        middleware = [Middleware(sessiontrace.ASGIMiddleware)]
    elif variant == "sessiontrace+trace":
        middleware = [Middleware(sessiontrace.ASGIMiddleware, trace_requests=True)]
    elif variant == "asgi-correlation-id":
        from asgi_correlation_id import CorrelationIdMiddleware

        middleware = [Middleware(CorrelationIdMiddleware)]
    elif variant == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        middleware = [Middleware(OpenTelemetryMiddleware, tracer_provider=_otel_provider())]
    elif variant != "bare":
        raise ValueError(variant)
    return Starlette(routes=[Route("/", hello)], middleware=middleware)


def make_wsgi_app(variant: str) -> Any:
    from flask import Flask

    import sessiontrace

    app = Flask("bench")

    @app.get("/")
    def hello() -> str:
        return "Hello, world!"

    if variant == "sessiontrace":
        app.wsgi_app = sessiontrace.WSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    elif variant == "sessiontrace+trace":
        app.wsgi_app = sessiontrace.WSGIMiddleware(app.wsgi_app, trace_requests=True)  # type: ignore[method-assign]
    elif variant == "otel":
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, tracer_provider=_otel_provider()
        )
    elif variant != "bare":
        raise ValueError(variant)
    return app


def uvicorn_app() -> Any:
    """``uvicorn --factory``: one app per variant in BENCH_VARIANTS, served as ``/0``,
    ``/1``...: the same process, connections and core serve every variant."""
    # "name#2" is another copy of "name" (to see the noise floor).
    apps = [make_asgi_app(v.split("#")[0]) for v in os.environ["BENCH_VARIANTS"].split(",")]

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        app = apps[int(scope["path"][1:])]
        scope["path"] = "/"
        scope["raw_path"] = b"/"
        await app(scope, receive, send)

    return dispatch


# -- drivers ------------------------------------------------------------------------------

# CPU time of this process (all its threads, so the trace writer's and OpenTelemetry's
# export work count): on a shared machine, time spent waiting for a core is not ours.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def asgi_direct(app: Any, n: int) -> float:
    """Seconds per call of the app with a fresh copy of one scope."""
    scope_template = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        pass

    async def loop() -> float:
        for _ in range(50):  # warm up
            await app(dict(scope_template), receive, send)
        start = clock()
        for _ in range(n):
            await app(dict(scope_template), receive, send)
        return (clock() - start) / n

    return asyncio.run(loop())


def asgi_client(app: Any, n: int) -> float:
    import httpx

    headers = [(k.decode(), v.decode()) for k, v in HEADERS if k != b"host"]

    async def loop() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(30):
                await client.get("/", headers=headers)
            start = clock()
            for _ in range(n):
                await client.get("/", headers=headers)
            return (clock() - start) / n

    return asyncio.run(loop())


def wsgi_direct(app: Any, n: int) -> float:
    environ_template = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in HEADERS:
        key = name.decode().upper().replace("-", "_")
        environ_template[key if key == "HOST" else f"HTTP_{key}"] = value.decode()
    environ_template["HTTP_HOST"] = environ_template.pop("HOST")

    import io

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def one() -> None:
        environ = dict(environ_template)
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["wsgi.errors"] = sys.stderr
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    for _ in range(50):
        one()
    start = clock()
    for _ in range(n):
        one()
    return (clock() - start) / n


class Result:
    """Medians of per-run figures; ``ratio`` pairs each run with bare's run of the same
    round (with several copies of bare, their mean in that round)."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        copies = [s for v, s in samples.items() if v.split("#")[0] == "bare"]
        bare = [statistics.fmean(round_) for round_ in zip(*copies, strict=True)]
        self.median = {v: statistics.median(s) for v, s in samples.items()}
        self.ratio = {
            v: statistics.median(x / b for x, b in zip(s, bare, strict=True))
            for v, s in samples.items()
        }
        self.added = {
            v: statistics.median(x - b for x, b in zip(s, bare, strict=True))
            for v, s in samples.items()
        }


def measure(
    variants: list[str],
    make: Callable[[str], Any],
    driver: Callable[[Any, int], float],
    n: int,
    repeats: int,
) -> Result:
    import sessiontrace

    apps = {v: make(v) for v in variants}
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(repeats):
        # Interleaved, alternating order, so drift on a shared machine hits all alike.
        for v in variants if i % 2 == 0 else variants[::-1]:
            gc.collect()
            samples[v].append(driver(apps[v], n))
            sessiontrace.flush()  # the writer's backlog does not spill into the next run
    return Result(samples)


# -- uvicorn ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(
    port: int, path: str, total: int, connections: int, time_cap: float
) -> tuple[int, float]:
    """Keep-alive GETs from ``connections`` sockets: (requests done, seconds)."""
    header_lines = b"".join(k + b": " + v + b"\r\n" for k, v in HEADERS if k != b"connection")
    request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + header_lines + b"\r\n"
    done = 0
    deadline = time.perf_counter() + time_cap

    async def worker(count: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                if time.perf_counter() > deadline:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    start = time.perf_counter()
    per = total // connections
    await asyncio.gather(*(worker(per) for _ in range(connections)))
    return done, time.perf_counter() - start


def _pin(server_pid: int) -> None:
    """The server on one core, the load generator on another (Linux, 2+ cores), so
    they do not take turns on the same core."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(server_pid, {cpus[-1]})
    os.sched_setaffinity(0, {cpus[0]})


def uvicorn_rps(
    variants: list[str], burst: int, connections: int, rounds: int, time_cap: float
) -> Result:
    """One uvicorn process serves every variant; bounded bursts take turns between them."""
    here = Path(__file__).resolve().parent
    rps: dict[str, list[float]] = {v: [] for v in variants}
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        env = {
            **os.environ,
            "BENCH_VARIANTS": ",".join(variants),
            "SESSIONTRACE_TRACKING_URI": f"sqlite:///{tmp}/uvicorn.db",
        }
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "middleware_overhead:uvicorn_app"]
        cmd += ["--app-dir", str(here), "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log", "--lifespan", "off"]
        server = subprocess.Popen(cmd, env=env)
        try:
            _pin(server.pid)
            _wait_for(port, server)
            for index in range(len(variants)):
                asyncio.run(_load(port, f"/{index}", 500, connections, 10))  # warm up
            for i in range(rounds):
                order = list(enumerate(variants))
                for index, variant in order if i % 2 == 0 else order[::-1]:
                    done, seconds = asyncio.run(
                        _load(port, f"/{index}", burst, connections, time_cap)
                    )
                    rps[variant].append(done / seconds)
        finally:
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, affinity)
            server.terminate()
            server.wait(30)
    return Result(rps)


def _wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise RuntimeError("uvicorn exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- report -------------------------------------------------------------------------------


def _table(title: str, result: Result) -> None:
    print(f"\n{title}")
    print(f"  {'variant':<22} {'per request':>12} {'x bare':>7} {'added':>9}")
    for variant, value in result.median.items():
        print(
            f"  {variant:<22} {value * 1e6:>9.1f} us {result.ratio[variant]:>7.2f} "
            f"{result.added[variant] * 1e6:>+6.1f} us"
        )


def _verdict(name: str, ok: bool, detail: str) -> bool:
    print(f"  [{'ok' if ok else 'MISSED'}] {name}: {detail}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="CPU time (default) or wall time"
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    quick = args.quick
    # Many short interleaved runs: a burst of load from elsewhere spoils few samples.
    repeats = args.repeats or (3 if quick else 61)
    n_direct = 200 if quick else 300
    n_client = 50 if quick else 150

    import sessiontrace

    tmp = tempfile.TemporaryDirectory(prefix="sessiontrace-bench-")
    sessiontrace.configure(tracking_uri=f"sqlite:///{tmp.name}/bench.db")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.clock} time; "
        f"{repeats} rounds, variants interleaved; per request and added: medians; "
        "x bare: median of each round's ratio to bare"
    )

    direct = measure(ASGI_VARIANTS, make_asgi_app, asgi_direct, n_direct, repeats)
    _table(f"Starlette hello world, direct ASGI calls ({n_direct} per run)", direct)
    client = measure(ASGI_VARIANTS, make_asgi_app, asgi_client, n_client, repeats)
    _table(f"Starlette hello world, through httpx's ASGI transport ({n_client} per run)", client)
    wsgi = measure(WSGI_VARIANTS, make_wsgi_app, wsgi_direct, n_direct, repeats)
    _table(f"Flask hello world, direct WSGI calls ({n_direct} per run)", wsgi)
    burst = 300 if quick else 500
    rounds = 2 if quick else 40
    # bare#2 is a second copy of the bare app: how far apart two identical apps land.
    rps = uvicorn_rps(["bare", "sessiontrace", "bare#2"], burst, 8, rounds, 20.0)
    print(
        f"\nuvicorn on 127.0.0.1: one server process (pinned to one core, the load generator "
        f"to another) serving each app under its own path; {rounds} rounds of alternating "
        f"bursts of {burst} keep-alive GETs over 8 connections"
    )
    print(f"  {'variant':<22} {'req/s':>8} {'x bare':>7}")
    for variant in rps.median:
        print(f"  {variant:<22} {rps.median[variant]:>8.0f} {rps.ratio[variant]:>7.3f}")
    sessiontrace.flush()
    tmp.cleanup()

    print("\nTargets")
    ok = True
    ctx = direct.ratio["sessiontrace"]
    cid = direct.ratio["asgi-correlation-id"]
    ok &= _verdict("context only <= 1.25x bare (direct ASGI)", ctx <= 1.25, f"{ctx:.2f}x")
    ok &= _verdict("cheaper than asgi-correlation-id", ctx < cid, f"{ctx:.2f}x vs {cid:.2f}x")
    ours = direct.added["sessiontrace+trace"]
    otel = direct.added["otel"]
    ok &= _verdict(
        "trace_requests overhead <= 1/5 of OpenTelemetry ASGI's",
        ours <= otel / 5,
        f"{ours * 1e6:.1f} us vs {otel * 1e6:.1f} us ({ours / otel:.2f})",
    )
    r = rps.ratio["sessiontrace"]
    ok &= _verdict("uvicorn req/s context only >= 0.95x bare", r >= 0.95, f"{r:.3f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
