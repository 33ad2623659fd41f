"""The server's cost over the queries beneath it, and HTTP ingest throughput.

    python bench/ui.py                    # 1,000,000-trace DB from bench/search.py (cached)
    python bench/ui.py --db other.db      # any store
    python bench/ui.py --ingest 20000     # traces sent for the ingest comparison
    python bench/ui.py --skip-ingest      # pages only (about 30 s)

Part 1: for the sessions list, one session, one user and the versions page, in
interleaved rounds (a random order each round), medians of: (a) the analytics calls
beneath the endpoint, in-process; (b) the app called straight through ASGI in this
process (prebuilt scope, no socket: the server's own time); (c) the endpoint over
HTTP on 127.0.0.1 (a real ``sessiontrace ui`` server in another process, one keep-alive
connection, the request bytes prebuilt and the response read by Content-Length:
``http.client`` would add about 0.1 ms of its own header parsing to every figure).
Beside them, the same client against uvicorn serving a constant JSON answer, with
the same loop and HTTP parser: uvicorn's own cost per request, which no app under
it can go below. Target: response / query <= 1.3.

Part 2: N traces produced by the SDK, end to end until ``flush()`` returns, once
into the embedded SQLite store in-process and once over HTTP into a server on
127.0.0.1. Target: HTTP >= 0.5 x in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402

import sessiontrace  # noqa: E402
from search import median_ms  # noqa: E402
from sessiontrace import SQLiteStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, db: Path | None) -> None:
        """``sessiontrace ui`` on ``db``; with ``None``, uvicorn serving a constant."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONTRACE_")}
        if db is None:
            command = [sys.executable, __file__, "--constant-server", str(self.port)]
        else:
            command = [sys.executable, "-m", "sessiontrace.server", "--db", str(db)]
            command += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            command,
            env={**env, "PYTHONPATH": str(HERE.parent / "src")},
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/api/info", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def constant_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: a JSON answer with no work behind it, straight through ASGI."""
    if scope["type"] != "http":
        return
    body = b'{"version":"constant","ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RawClient:
    """One keep-alive connection; a GET is prebuilt bytes out, Content-Length bytes in."""

    _length = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.last_used = 0.0

    def get(self, target: str) -> bytes:
        if self.sock is None or time.monotonic() - self.last_used > 3:  # uvicorn: 5 s idle
            self.close()
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        self.sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, body = buf.partition(b"\r\n\r\n")
        found = self._length.search(head)
        if found is None or head[9:12] != b"200":
            raise RuntimeError(f"{target}: {head[:200]!r}")
        while len(body) < int(found.group(1)):
            body += self._recv()
        self.last_used = time.monotonic()
        return body

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def pick(store: SQLiteStore) -> tuple[str, str]:
    conn = store.connection()
    session = conn.execute(
        "SELECT session_id FROM traces WHERE session_id IS NOT NULL "
        "ORDER BY request_time DESC LIMIT 1 OFFSET 1000"
    ).fetchone()[0]
    user = conn.execute(
        "SELECT user_id FROM traces WHERE user_id IS NOT NULL "
        "ORDER BY request_time DESC LIMIT 1 OFFSET 1000"
    ).fetchone()[0]
    return session, user


class InProcess:
    """The app called straight through ASGI: a prebuilt scope, no socket, no client.

    What it times is the server's own work for a response: routing, the security
    middleware, the hop to the reader, the query, building and encoding the JSON.
    """

    def __init__(self, db: Path) -> None:
        from sessiontrace.server import create_app

        self.app = create_app(db=db)

    def scope(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urlencode(params).encode(),
            "headers": [(b"host", b"127.0.0.1:5000"), (b"accept", b"*/*")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 5000),
        }

    async def get_ms(self, scope: dict[str, Any]) -> float:
        """One request; milliseconds from the call into the app to its last body byte."""
        body: list[bytes] = []
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            else:
                body.append(message.get("body", b""))

        t0 = time.perf_counter()
        await self.app(dict(scope), receive, send)
        ms = (time.perf_counter() - t0) * 1000
        if status != [200] or not body:
            raise RuntimeError(f"{scope['path']}: status {status}")
        return ms


def timed_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def bench_pages(db: Path, runs: int, slow_runs: int) -> list[dict[str, Any]]:
    """Per endpoint, in interleaved rounds (the three ways in a fresh random order each
    round): (a) the query functions in-process, (b) the app through ASGI in-process,
    (c) the endpoint over HTTP on 127.0.0.1 (uvicorn in another process, keep-alive
    ``http.client`` connection, body read in full). Medians over the rounds."""
    store = SQLiteStore(db)
    session, user = pick(store)

    def q_session() -> Any:
        sessiontrace.get_session_summary(session, store=store)
        sessiontrace.session_flow(session, store=store)  # the turns carry their tags

    cases: list[tuple[str, Callable[[], Any], str, dict[str, Any], int]] = [
        (
            "sessions list",
            lambda: sessiontrace.list_sessions(store=store),
            "/api/sessions",
            {},
            runs,
        ),
        ("one session", q_session, "/api/session", {"id": session}, runs),
        (
            # The generated data ends on a fixed date: a window reaching back over all of it.
            "one user (all days)",
            lambda: sessiontrace.user_report(user, days=3660, store=store),
            "/api/user",
            {"id": user, "days": 3660},
            runs,
        ),
        (
            "versions",
            lambda: sessiontrace.metadata_breakdown(store=store),
            "/api/versions",
            {},
            slow_runs,
        ),
    ]
    inproc = InProcess(db)
    server = Server(db)
    floor_server = Server(None)
    client, floor_client = RawClient(server.port), RawClient(floor_server.port)
    print(
        f"  {'page':<20} {'query':>9} {'ASGI':>9} {'HTTP':>9}   {'ASGI/query':>11} "
        f"{'HTTP/query':>11}   (ms; medians, per-round ratio medians in brackets)"
    )
    try:
        # One event loop for the whole run, as under uvicorn: a loop stopped and
        # restarted between requests makes anyio's worker threads much slower to answer.
        results = asyncio.run(_rounds(cases, inproc, client))
        floor = median_ms(lambda: floor_client.get("/constant"), runs * 20)
        print(
            f"  (uvicorn answering a constant, same client: {floor:.3f} ms a request; "
            "HTTP minus this is the app's part)"
        )
        for row in results:
            row["uvicorn_floor_ms"] = floor
        return results
    finally:
        client.close()
        floor_client.close()
        server.close()
        floor_server.close()


async def _rounds(
    cases: list[tuple[str, Callable[[], Any], str, dict[str, Any], int]],
    inproc: InProcess,
    client: RawClient,
) -> list[dict[str, Any]]:
    rng = random.Random(1)
    results = []
    for name, query, path, params, n in cases:
        scope = inproc.scope(path, params)
        target = f"{path}?{urlencode(params)}" if params else path

        async def run_query(query: Callable[[], Any] = query) -> float:
            return timed_ms(query)

        async def over_asgi(scope: dict[str, Any] = scope) -> float:
            return await inproc.get_ms(scope)

        async def over_http(target: str = target) -> float:
            # Blocking on purpose: nothing else runs on this loop meanwhile.
            return timed_ms(lambda: client.get(target))

        ways: dict[str, Callable[[], Awaitable[float]]] = {
            "query": run_query,
            "asgi": over_asgi,
            "http": over_http,
        }
        for fn in ways.values():  # warm-up: connections, page cache, imports
            await fn()
            await fn()
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(n):
            order = list(ways)
            rng.shuffle(order)
            for key in order:
                times[key].append(await ways[key]())
        q, a, h = (statistics.median(times[k]) for k in ("query", "asgi", "http"))
        ra = statistics.median(x / y for x, y in zip(times["asgi"], times["query"], strict=True))
        rh = statistics.median(x / y for x, y in zip(times["http"], times["query"], strict=True))
        results.append(
            {
                "page": name,
                "query_ms": q,
                "asgi_ms": a,
                "http_ms": h,
                "asgi_ratio": a / q,
                "http_ratio": h / q,
            }
        )
        print(
            f"  {name:<20} {q:9.2f} {a:9.2f} {h:9.2f}   {a / q:5.2f} ({ra:4.2f}) "
            f"{h / q:5.2f} ({rh:4.2f})"
        )
    return results


@sessiontrace.trace
def chat(message: str) -> str:
    sessiontrace.update_current_trace(tags={"query_category": "chat"})
    return message[::-1]


def produce(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with sessiontrace.user_session(user_id=f"user-{i % 100}", session_id=f"s-{i % 1000}"):
            chat(f"message number {i}")
    assert sessiontrace.flush(120)
    return n / (time.perf_counter() - t0)


def bench_ingest(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "local.db"
        sessiontrace.configure(tracking_uri=f"sqlite:///{local}")
        produce(min(n, 2000))  # warm-up
        in_process = produce(n)
        remote_db = Path(tmp) / "remote.db"
        server = Server(remote_db)
        try:
            sessiontrace.configure(tracking_uri=server.url)
            produce(min(n, 2000))
            over_http = produce(n)
            stats = sessiontrace.get_stats()
        finally:
            sessiontrace.configure(tracking_uri=f"sqlite:///{local}")
            server.close()
        stored = SQLiteStore(remote_db).count_traces()
    expected = n + min(n, 2000)
    print(f"  in-process SQLite   {in_process:10,.0f} traces/s")
    print(
        f"  HTTP to the server  {over_http:10,.0f} traces/s   ratio {over_http / in_process:4.2f}"
        f"   stored {stored:,}/{expected:,}, dropped {stats['dropped']}"
    )
    return {"in_process": in_process, "http": over_http, "ratio": over_http / in_process}


def main() -> None:
    if sys.argv[1:2] == ["--constant-server"]:
        import uvicorn

        uvicorn.run(  # the options `sessiontrace ui` runs uvicorn with
            constant_app,
            host="127.0.0.1",
            port=int(sys.argv[2]),
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=51, help="rounds for the fast pages")
    parser.add_argument("--slow-runs", type=int, default=5, help="rounds for versions")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--ingest", type=int, default=20_000)
    args = parser.parse_args()
    db = args.db
    if db is None:
        import search

        db = search.ensure_db("search-1m.db", search.N_TRACES, search.N_SESSIONS, search.N_USERS)
    print(
        f"Pages on {db} ({args.runs} interleaved rounds, versions {args.slow_runs}; "
        "target: response / query <= 1.3)"
    )
    bench_pages(db, args.runs, args.slow_runs)
    if args.skip_ingest:
        return
    print(f"\nIngest of {args.ingest:,} traces, end to end (target HTTP >= 0.5 x in-process)")
    bench_ingest(args.ingest)


if __name__ == "__main__":
    main()
