"""Several users chat with the FastAPI example under uvicorn; then who-did-what from the store.

    make demo                       # or: python examples/chat_demo.py [--db PATH]
    make demo-postgres              # or: python examples/chat_demo.py --db postgresql://...

What happens: the fake OpenAI-compatible model (``fake_llm.py``) starts on
127.0.0.1, the FastAPI example (``fastapi_app/app.py``, one middleware line) is
served by uvicorn on another local port and calls it with the real ``openai``
client (autologged: every call is a span with its model and tokens), and scripted
clients send their messages with ``X-User-ID`` / ``X-Session-ID`` headers, some
as streamed replies.
The app never mentions users or sessions; the summary printed at the end is read
back from the store the app wrote: a SQLite file, or PostgreSQL when ``--db`` is a
``postgresql://`` URI (``make demo-postgres`` starts a throwaway server for it).
Everything stays offline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_llm

import sessiontrace

EXAMPLES = Path(__file__).resolve().parent

# (user, session, message, streamed): three users, five conversations, interleaved.
SCRIPT = [
    ("user-alice", "session-a1", "What is a vector database?", False),
    ("user-bob", "session-b1", "Summarise the meeting notes", False),
    ("user-alice", "session-a1", "How does it differ from a search index?", True),
    ("user-carol", "session-c1", "Translate 'good morning' to French", False),
    ("user-bob", "session-b1", "Now make it shorter", True),
    ("user-alice", "session-a2", "Write a haiku about SQLite", False),
    ("user-bob", "session-b2", "What time zone is UTC+1?", False),
    ("user-carol", "session-c1", "And to German?", True),
    ("user-alice", "session-a1", "Thanks, one more example please", False),
    ("user-bob", "session-b1", "Perfect", False),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(base: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if not path.endswith("/stream"):
            return str(json.load(response)["response"])
        pieces = []
        for raw in response:  # server-sent events, one token each
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[len("data: ") :]))
        return "".join(pieces)


def _wait_until_up(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise SystemExit("the FastAPI example did not start (is uvicorn installed?)")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise SystemExit("the FastAPI example did not answer in 30 s") from None
            time.sleep(0.1)


def run_traffic(tracking_uri: str) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with fake_llm.FakeLLMServer() as llm:
        env = {
            **os.environ,
            "SESSIONTRACE_TRACKING_URI": tracking_uri,
            "OPENAI_API_KEY": "fake-demo-key",  # the fake model, over HTTP
            "OPENAI_BASE_URL": llm.base_url,
        }
        cmd = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "fastapi_app"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(cmd, cwd=EXAMPLES, env=env)
        try:
            _wait_until_up(base, server)
            print(f"FastAPI example on {base}, model on {llm.base_url}\n")
            for user, session, message, streamed in SCRIPT:
                headers = {"X-User-ID": user, "X-Session-ID": session}
                path = "/chat/stream" if streamed else "/chat"
                reply = _post(base, path, {"message": message}, headers)
                print(f"  {user:<11} {session:<11} > {message}")
                print(f"  {'(streamed)' if streamed else '':<23} < {reply}")
        finally:
            server.terminate()  # uvicorn shuts down gracefully; the app flushes its traces
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def print_summary(tracking_uri: str, shown: str) -> None:
    # The same URI the app wrote to: the calls below read the configured store.
    sessiontrace.configure(tracking_uri=tracking_uri)
    total = len(sessiontrace.search_traces(return_type="list", include_spans=False))
    print(f"\n{total} traces in {shown}")

    print("\nPer user (sessiontrace.list_users):")
    print(f"  {'user':<12} {'traces':>6} {'sessions':>8} {'mean ms':>8} {'errors':>6}")
    for user in sessiontrace.list_users(order_by="user_id"):
        latency = user.mean_latency_ms or 0.0
        print(
            f"  {user.user_id:<12} {user.traces:>6} {user.sessions:>8} {latency:>8.1f} "
            f"{user.errors:>6}"
        )

    print("\nPer session (sessiontrace.list_sessions):")
    print(f"  {'session':<12} {'user':<12} {'turns':>5}  first message")
    for session in sessiontrace.list_sessions(order_by="session_id"):
        preview = session.first_request_preview
        first = json.loads(preview).get("message", preview) if preview else ""
        print(
            f"  {session.session_id:<12} {session.user_id or '-':<12} {session.turns:>5}  {first}"
        )

    # Every model call is a CHAT_MODEL span (sessiontrace.openai.autolog() in the app's
    # model client) with MLflow's mlflow.chat.tokenUsage; the store prices it (genai-prices,
    # the `cost` extra) and sums tokens and cost into every aggregate.
    print("\nTokens and cost per user (sessiontrace.list_users, most expensive first):")
    print(f"  {'user':<12} {'calls':>5} {'input':>6} {'output':>6} {'cost':>12}")
    for user in sessiontrace.list_users(order_by="cost DESC"):
        cost = "unpriced" if user.cost is None else f"${user.cost:.6f}"
        print(
            f"  {user.user_id:<12} {user.llm_calls:>5} {user.input_tokens:>6} "
            f"{user.output_tokens:>6} {cost:>12}"
        )
    for model in sessiontrace.model_breakdown():
        cost = "unpriced" if model.cost is None else f"${model.cost:.6f}"
        print(
            f"  model {model.model} ({model.provider}): {model.llm_calls} calls, "
            f"{model.total_tokens} tokens, {cost}"
        )

    # The analysis from MLflow's "Track Users & Sessions" page, unchanged but the import.
    user_id = "user-alice"
    df = sessiontrace.search_traces(filter_string=f"metadata.`mlflow.trace.user` = '{user_id}'")
    total_interactions = len(df)
    unique_sessions = df["metadata.mlflow.trace.session"].nunique()
    avg_response_time = df["info.execution_time_ms"].mean()
    success_rate = df["info.state"].value_counts().get("OK", 0) / total_interactions
    print(f"\n{user_id}: {total_interactions} interactions across {unique_sessions} sessions")
    print(f"  average response time {avg_response_time:.1f} ms, success rate {success_rate:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        metavar="PATH|URI",
        help="SQLite file or postgresql:// URI to write (default: a temporary SQLite file)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sessiontrace-demo-") as tmp:
        if args.db and "://" in args.db:  # sqlite:///... or postgresql://...
            tracking_uri = args.db  # not printed: it may hold a password
            shown = "the database of --db" if args.db.startswith("postgres") else args.db
        else:
            db = Path(args.db).resolve() if args.db else Path(tmp) / "traces.db"
            tracking_uri, shown = f"sqlite:///{db}", str(db)
        run_traffic(tracking_uri)
        print_summary(tracking_uri, shown)


if __name__ == "__main__":
    main()
