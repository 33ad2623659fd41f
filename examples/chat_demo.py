"""A scripted multi-user, multi-session chat, then who-did-what read back from the store.

    make demo                       # or: python examples/chat_demo.py [--db PATH]

Offline: the model is the fake OpenAI-compatible server in ``fake_llm.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_llm
import llm_client

import sessiontrace

# (user, session, message): three users, five conversations, interleaved.
SCRIPT = [
    ("user-alice", "session-a1", "What is a vector database?"),
    ("user-bob", "session-b1", "Summarise the meeting notes"),
    ("user-alice", "session-a1", "How does it differ from a search index?"),
    ("user-carol", "session-c1", "Translate 'good morning' to French"),
    ("user-bob", "session-b1", "Now make it shorter"),
    ("user-alice", "session-a2", "Write a haiku about SQLite"),
    ("user-bob", "session-b2", "What time zone is UTC+1?"),
    ("user-carol", "session-c1", "And to German?"),
    ("user-alice", "session-a1", "Thanks, one more example please"),
    ("user-bob", "session-b1", "Perfect"),
]


def run_script(model: llm_client.OpenAICompatibleChatModel) -> None:
    history: dict[str, list[dict[str, str]]] = {}

    @sessiontrace.trace(span_type="LLM")
    def call_model(messages: list[dict[str, str]]) -> str:
        return model.complete(messages)

    @sessiontrace.trace(span_type="CHAIN")
    def chat(message: str) -> str:
        _, session_id = sessiontrace.get_user_session_context()
        messages = history.setdefault(str(session_id), [])
        messages.append({"role": "user", "content": message})
        reply = call_model(messages)
        messages.append({"role": "assistant", "content": reply})
        return reply

    for user_id, session_id, message in SCRIPT:
        with sessiontrace.user_session(user_id=user_id, session_id=session_id):
            reply = chat(message)
        print(f"  {user_id:<11} {session_id:<11} > {message}")
        print(f"  {'':<23} < {reply}")


def print_summary() -> None:
    sessiontrace.flush()
    conn = sessiontrace._runtime.get_store().connection()
    print("\nPer user:")
    print(f"  {'user':<12} {'traces':>6} {'sessions':>8} {'avg ms':>8} {'errors':>6}")
    rows = conn.execute(
        "SELECT user_id, COUNT(*), COUNT(DISTINCT session_id), AVG(execution_time_ms),"
        " SUM(state = 'ERROR') FROM traces WHERE user_id IS NOT NULL"
        " GROUP BY user_id ORDER BY user_id"
    ).fetchall()
    for user, count, sessions, avg_ms, errors in rows:
        print(f"  {user:<12} {count:>6} {sessions:>8} {avg_ms:>8.1f} {errors:>6}")
    print("\nPer session:")
    print(f"  {'session':<12} {'user':<12} {'turns':>5} {'first question'}")
    rows = conn.execute(
        "SELECT session_id, user_id, COUNT(*), MIN(request_time) FROM traces"
        " WHERE session_id IS NOT NULL GROUP BY session_id, user_id ORDER BY session_id"
    ).fetchall()
    for session, user, turns, first_time in rows:
        first = conn.execute(
            "SELECT request_preview FROM traces WHERE session_id = ? AND request_time = ?",
            (session, first_time),
        ).fetchone()[0]
        print(f"  {session:<12} {user:<12} {turns:>5} {first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="SQLite file to write (default: a temporary one)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="sessiontrace-demo-")
    db = Path(args.db).resolve() if args.db else Path(tmp.name) / "traces.db"
    sessiontrace.configure(tracking_uri=f"sqlite:///{db}")
    print(f"Traces go to {db}\n")
    with fake_llm.FakeLLMServer() as llm:
        model = llm_client.OpenAICompatibleChatModel(llm.base_url, "fake-key", fake_llm.MODEL)
        run_script(model)
        print_summary()
    tmp.cleanup()


if __name__ == "__main__":
    main()
