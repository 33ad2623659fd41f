"""Several users chat with the FastAPI example under uvicorn; then who-did-what from the store.

    make demo                       # or: python examples/chat_demo.py [--db PATH]
    make demo-postgres              # or: python examples/chat_demo.py --db postgresql://...

What happens: the fake OpenAI-compatible model (``fake_llm.py``) starts on
127.0.0.1, the FastAPI example (``fastapi_app/app.py``, one middleware line) is
served by uvicorn on two local ports, as two deployments of the app: version 1.0.0
and a canary of 1.1.0 that some sessions are routed to. It calls the model with the
real ``openai`` client (autologged: every call is a span with its model and tokens),
and scripted clients send their messages with ``X-User-ID`` / ``X-Session-ID``
headers, some as streamed replies. Like a chat front end, the client reads the
``X-Trace-ID`` of each reply and posts the user's verdict on that turn (thumbs up or
down, sometimes a comment) to the app's mounted ``/feedback`` endpoint; the users
like the canary less.
The app never mentions users or sessions; the summary printed at the end is read
back from the store the app wrote: a SQLite file, or PostgreSQL when ``--db`` is a
``postgresql://`` URI (``make demo-postgres`` starts a throwaway server for it).
Everything stays offline.
"""

from __future__ import annotations

import argparse
import contextlib
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

# Two deployments of the same app; the canary serves these sessions.
VERSIONS = ("1.0.0", "1.1.0")
CANARY_SESSIONS = {"session-b1", "session-a2", "session-c1"}

# What each user posts to /feedback after a turn (by the turn's index in SCRIPT): one
# or more (name, value, comment) posts; a second post of the same name replaces the
# first (carol changes her mind). Turns not listed get no feedback, as in real life.
FEEDBACK: dict[int, list[tuple[str, bool | int, str | None]]] = {
    0: [("thumbs_up", True, "clear explanation")],
    1: [("thumbs_up", False, "it missed the action items")],
    2: [("thumbs_up", True, None)],
    3: [("thumbs_up", False, None), ("thumbs_up", True, "fine after all")],
    4: [("thumbs_up", False, "still too long")],
    5: [("thumbs_up", False, "not a haiku: wrong syllable count")],
    6: [("thumbs_up", True, None)],
    8: [("thumbs_up", True, "great, thanks"), ("rating", 5, None)],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(base: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    return urllib.request.urlopen(request, timeout=30)


def _chat(
    base: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[str, str | None]:
    """The reply, and the trace id the app echoed (X-Trace-ID) for the feedback."""
    with _request(base, path, body, headers) as response:
        trace_id = response.headers.get("X-Trace-ID")
        if not path.endswith("/stream"):
            return str(json.load(response)["response"]), trace_id
        pieces = []
        for raw in response:  # server-sent events, one token each
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[len("data: ") :]))
        return "".join(pieces), trace_id


def _send_feedback(
    base: str,
    trace_id: str,
    name: str,
    value: bool | int,
    comment: str | None,
    headers: dict[str, str],
) -> None:
    """What a chat front end does when the user clicks a thumb under the reply."""
    body: dict[str, Any] = {"trace_id": trace_id, "name": name, "value": value}
    if comment:
        body["comment"] = comment
    try:  # the mount's root: /feedback would be redirected to it
        with _request(base, "/feedback/", body, headers) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"/feedback refused the post: {exc.code} {exc.read().decode()}") from None


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


@contextlib.contextmanager
def _serve(version: str, env: dict[str, str]) -> Any:
    """One deployment of the example app under uvicorn; yields its base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "fastapi_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(cmd, cwd=EXAMPLES, env={**env, "SESSIONTRACE_APP_VERSION": version})
    try:
        yield base, server
    finally:
        server.terminate()  # uvicorn shuts down gracefully; the app flushes its traces
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_traffic(tracking_uri: str) -> None:
    with fake_llm.FakeLLMServer() as llm, contextlib.ExitStack() as stack:
        env = {
            **os.environ,
            "SESSIONTRACE_TRACKING_URI": tracking_uri,
            "OPENAI_API_KEY": "fake-demo-key",  # the fake model, over HTTP
            "OPENAI_BASE_URL": llm.base_url,
        }
        # Both deployments start at once, then each is waited for.
        servers = {v: stack.enter_context(_serve(v, env)) for v in VERSIONS}
        for base, server in servers.values():
            _wait_until_up(base, server)
        stable, canary = (servers[v][0] for v in VERSIONS)
        print(f"FastAPI example {VERSIONS[0]} on {stable}, {VERSIONS[1]} on {canary}")
        print(f"model on {llm.base_url}\n")
        for turn, (user, session, message, streamed) in enumerate(SCRIPT):
            base = canary if session in CANARY_SESSIONS else stable
            headers = {"X-User-ID": user, "X-Session-ID": session}
            path = "/chat/stream" if streamed else "/chat"
            reply, trace_id = _chat(base, path, {"message": message}, headers)
            print(f"  {user:<11} {session:<11} > {message}")
            print(f"  {'(streamed)' if streamed else '':<23} < {reply}")
            for name, value, comment in FEEDBACK.get(turn, []):
                if trace_id is None:
                    raise SystemExit("the app sent no X-Trace-ID (echo_trace_id=True?)")
                _send_feedback(base, trace_id, name, value, comment, headers)
                shown = f"{name} {value}"
                if isinstance(value, bool):
                    shown = "thumbs up" if value else "thumbs down"
                print(f"  {'':<23}   [{shown}{f': {comment}' if comment else ''}]")


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

    # The users' feedback, posted to the app's /feedback endpoint: rolled up per app
    # version and per user, as the UI's versions and users pages show it.
    print("\nFeedback per app version (sessiontrace.metadata_breakdown('app_version')):")
    print(f"  {'version':<8} {'traces':>6} {'feedback':>8} {'negative':>8} {'satisfaction':>12}")
    versions = sessiontrace.metadata_breakdown("app_version")
    for version in sorted(versions, key=lambda v: v.value):
        print(
            f"  {version.value:<8} {version.traces:>6} {version.feedback_count:>8} "
            f"{version.negative_feedback:>8} {_rate(version.satisfaction):>12}"
        )
    print("\nUsers by satisfaction, lowest first (list_users(order_by='satisfaction ASC')):")
    for user in sessiontrace.list_users(order_by="satisfaction ASC"):
        print(
            f"  {user.user_id:<12} {_rate(user.satisfaction):>6} of {user.feedback_count} "
            f"feedback, {user.negative_feedback} negative"
        )

    print("\nIn the UI: /versions compares the two versions' satisfaction,")
    print("/sessions?order_by=negative_feedback+DESC lists the most thumbs down first,")
    print("and each session shows the verdicts under their turns.")

    # The analysis from MLflow's "Track Users & Sessions" page, unchanged but the import.
    user_id = "user-alice"
    df = sessiontrace.search_traces(filter_string=f"metadata.`mlflow.trace.user` = '{user_id}'")
    total_interactions = len(df)
    unique_sessions = df["metadata.mlflow.trace.session"].nunique()
    avg_response_time = df["info.execution_time_ms"].mean()
    success_rate = df["info.state"].value_counts().get("OK", 0) / total_interactions
    print(f"\n{user_id}: {total_interactions} interactions across {unique_sessions} sessions")
    print(f"  average response time {avg_response_time:.1f} ms, success rate {success_rate:.0%}")


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


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
