"""A tiny, deterministic, OpenAI-compatible chat model for the examples and tests.

Serves ``POST /v1/chat/completions`` (streaming and non-streaming) on 127.0.0.1
with the standard library only, so the examples run offline and the tests never
talk to a real provider. The answer depends only on the last user message.

    python examples/fake_llm.py --port 8001
    OPENAI_BASE_URL=http://127.0.0.1:8001/v1 OPENAI_API_KEY=fake uvicorn app:app

In process, :func:`answer` and :func:`stream_answer` give the same text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-llm-1"

_OPENERS = (
    "Good question.",
    "Here is a short answer.",
    "Let me think about that.",
    "Sure.",
)


def _last_user_message(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content", "")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def answer(messages: list[dict[str, Any]]) -> str:
    """The deterministic reply to a conversation."""
    question = _last_user_message(messages)
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    opener = _OPENERS[digest[0] % len(_OPENERS)]
    words = len(question.split())
    return f"{opener} You asked: {question!r} ({words} word{'' if words == 1 else 's'})."


def stream_answer(messages: list[dict[str, Any]]) -> Iterator[str]:
    """The same reply, in word-sized chunks."""
    words = answer(messages).split(" ")
    for i, word in enumerate(words):
        yield word if i == 0 else " " + word


def _completion(messages: list[dict[str, Any]], created: int) -> dict[str, Any]:
    text = answer(messages)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _chunk(created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, {"error": {"message": "not found"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            messages = request["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"error": {"message": f"bad request: {exc}"}})
            return
        created = int(time.time())
        if not request.get("stream"):
            self._send_json(200, _completion(messages, created))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(_chunk(created, {"role": "assistant", "content": ""}, None))
        for piece in stream_answer(messages):
            self.wfile.write(_chunk(created, {"content": piece}, None))
        self.wfile.write(_chunk(created, {}, "stop"))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class FakeLLMServer:
    """The fake model on ``127.0.0.1`` in a background thread; a context manager.

    >>> with FakeLLMServer() as llm:
    ...     os.environ["OPENAI_BASE_URL"] = llm.base_url
    """

    def __init__(self, port: int = 0) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-llm", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"fake LLM on http://127.0.0.1:{args.port}/v1 (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
