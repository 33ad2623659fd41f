"""A tiny, deterministic model server that the real ``openai`` and ``anthropic`` SDKs
can talk to, for the examples, the tests and the benchmark. Standard library only,
127.0.0.1, offline.

Endpoints (streaming and not): OpenAI ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` (base64 when asked), ``/v1/responses``; Anthropic ``/v1/messages``.
The answer depends only on the last user message; token counts are deterministic
(``tokens()``), so a test can compute the usage it expects.

    python examples/fake_llm.py --port 8001
    OPENAI_BASE_URL=http://127.0.0.1:8001/v1 OPENAI_API_KEY=fake uvicorn app:app

Request headers steer it:

- ``x-fake-cached-tokens: N`` / ``x-fake-cache-write-tokens: N``: cache reads (OpenAI
  and Anthropic) and writes (Anthropic);
- ``x-fake-reasoning-tokens: N``: reasoning tokens (inside the output tokens);
- ``x-fake-response-model: NAME``: the model the response names (Azure deployments);
- ``x-fake-chunks: N``: stream the answer in exactly N content chunks;
- ``x-fake-mode``: ``error-429``, ``error-500``, ``error-529`` (an error status),
  ``midstream-error`` (an error event after two chunks), ``no-usage`` (never any
  usage), ``slow`` (20 ms between chunks), ``azure`` (Azure's extra leading and
  trailing stream chunks), ``choice-usage`` (a stream's usage inside its last
  ``choices[0]``, as some compatible servers send it), ``tool-call`` (the model calls
  ``get_weather``).

Every request is recorded (``server.requests``: path, lower-cased headers, body).
OpenAI's stream rule is kept exactly: with ``stream_options.include_usage`` every
chunk carries ``"usage": null`` and one last chunk has ``choices: []`` and the usage.

In process, :func:`answer` and :func:`stream_answer` give the same text.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import socket
import struct
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
_TOKEN = re.compile(r"\w+|[^\w\s]")
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris"}'
_TOOL_PIECES = ('{"city', '": "Pa', 'ris"}')


def tokens(text: str) -> int:
    """The fake tokenizer: runs of word characters, and each other non-space character."""
    return len(_TOKEN.findall(text))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


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


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Chat prompt tokens: the messages' tokens, 3 per message, 3 for the reply."""
    return sum(tokens(_text_of(m.get("content"))) + 3 for m in messages) + 3


def _pieces(text: str, chunks: int | None) -> list[str]:
    words = text.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    if chunks is None or chunks <= 0:
        return pieces
    while len(pieces) < chunks:  # pad with more words: exactly N content chunks
        pieces.append(f" w{len(pieces)}")
    head, tail = pieces[: chunks - 1], pieces[chunks - 1 :]
    return [*head, "".join(tail)]


class _Steer:
    """What the request headers ask for."""

    def __init__(self, headers: dict[str, str], model: Any) -> None:
        def number(name: str) -> int:
            try:
                return max(0, int(headers.get(name, "0")))
            except ValueError:
                return 0

        self.cached = number("x-fake-cached-tokens")
        self.cache_write = number("x-fake-cache-write-tokens")
        self.reasoning = number("x-fake-reasoning-tokens")
        self.chunks = number("x-fake-chunks") or None
        self.mode = headers.get("x-fake-mode", "")
        self.model = headers.get("x-fake-response-model") or (
            model if isinstance(model, str) and model else MODEL
        )
        self.usage = self.mode != "no-usage"
        self.tool = self.mode == "tool-call"
        self.delay = 0.02 if self.mode == "slow" else 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm
        # and the client's delayed ACK add 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # a client that hung up
            self.close_connection = True

    # -- plumbing ---------------------------------------------------------------------

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")  # keep-alive works
        self.end_headers()

    def _frame(self, data: Any, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
        raw = frame.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        if self._steer.delay:
            self.wfile.flush()
            time.sleep(self._steer.delay)

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/v1/"):
            path = path[3:]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(request, dict):
                raise TypeError("the body must be an object")
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": {"message": f"bad request: {exc}"}})
            return
        self.server.record({"path": self.path, "headers": headers, "body": request})
        self._steer = steer = _Steer(headers, request.get("model"))
        # By suffix: Azure's clients post to /openai/deployments/<name>/chat/completions.
        routes = (
            ("/chat/completions", self._chat),
            ("/completions", self._completions),
            ("/embeddings", self._embeddings),
            ("/responses", self._responses),
            ("/messages", self._messages),
        )
        route = next((handler for suffix, handler in routes if path.endswith(suffix)), None)
        if route is None:
            self._send_json(404, {"error": {"message": "not found"}})
            return
        if steer.mode.startswith("error-"):
            self._error_status(path.endswith("/messages"), steer.mode)
            return
        try:
            route(request)
        except (KeyError, TypeError, ValueError) as exc:
            self._send_json(400, {"error": {"message": f"bad request: {exc}"}})

    def _error_status(self, anthropic: bool, mode: str) -> None:
        status = int(mode[len("error-") :]) if mode[len("error-") :].isdigit() else 500
        if anthropic:
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}
        else:
            body = {"error": {"message": f"fake {status}", "type": "fake", "code": str(status)}}
        self._send_json(status, body)

    # -- OpenAI chat --------------------------------------------------------------------

    def _chat_usage(self, messages: list[dict[str, Any]], text: str) -> dict[str, Any]:
        steer = self._steer
        prompt = prompt_tokens(messages)
        completion = tokens(text) + steer.reasoning
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(steer.cached, prompt)},
            "completion_tokens_details": {"reasoning_tokens": steer.reasoning},
        }

    def _chat(self, request: dict[str, Any]) -> None:
        messages = request["messages"]
        if not isinstance(messages, list):
            raise TypeError("messages must be a list")
        steer = self._steer
        created = int(time.time())
        text = TOOL_ARGUMENTS if steer.tool else answer(messages)
        usage = self._chat_usage(messages, text)
        if not request.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if steer.tool:
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
                        }
                    ],
                }
            body: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": steer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if steer.tool else "stop",
                        "logprobs": None,
                    }
                ],
            }
            if steer.usage:
                body["usage"] = usage
            self._send_json(200, body)
            return
        include = bool((request.get("stream_options") or {}).get("include_usage"))
        include = include and steer.usage

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": steer.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if include:
                body["usage"] = None
            return body

        self._start_stream()
        if steer.mode == "azure":
            self._frame(
                {
                    "id": "",
                    "object": "",
                    "created": 0,
                    "model": "",
                    "choices": [],
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                }
            )
        if steer.tool:
            self._frame(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": TOOL_NAME, "arguments": ""},
                            }
                        ],
                    },
                    None,
                )
            )
            for piece in _TOOL_PIECES:
                self._frame(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
                )
            self._frame(chunk({}, "tool_calls"))
        else:
            self._frame(chunk({"role": "assistant", "content": ""}, None))
            for i, piece in enumerate(_pieces(text, steer.chunks)):
                if steer.mode == "midstream-error" and i == 2:
                    self._frame({"error": {"message": "fake mid-stream failure", "type": "fake"}})
                    self._end_stream()
                    return
                self._frame(chunk({"content": piece}, None))
            last = chunk({}, "stop")
            if steer.mode == "choice-usage":  # some compatible servers report it here
                last["choices"][0]["usage"] = usage
            self._frame(last)
        if include and steer.mode != "choice-usage":
            self._frame(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": steer.model,
                    "choices": [],
                    "usage": usage,
                }
            )
        if steer.mode == "azure":
            self._frame(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": steer.model,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {},
                            "finish_reason": None,
                            "content_filter_results": {},
                        }
                    ],
                }
            )
        self._frame("[DONE]")
        self._end_stream()

    # -- OpenAI legacy completions --------------------------------------------------------

    def _completions(self, request: dict[str, Any]) -> None:
        prompt = request["prompt"]
        prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        steer = self._steer
        text = answer([{"role": "user", "content": prompt_text}])
        usage = {
            "prompt_tokens": tokens(prompt_text),
            "completion_tokens": tokens(text),
            "total_tokens": tokens(prompt_text) + tokens(text),
        }
        created = int(time.time())
        if not request.get("stream"):
            body: dict[str, Any] = {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": steer.model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            }
            if steer.usage:
                body["usage"] = usage
            self._send_json(200, body)
            return
        include = bool((request.get("stream_options") or {}).get("include_usage")) and steer.usage
        self._start_stream()
        pieces = _pieces(text, steer.chunks)
        for i, piece in enumerate(pieces):
            body = {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": steer.model,
                "choices": [
                    {
                        "index": 0,
                        "text": piece,
                        "finish_reason": "stop" if i == len(pieces) - 1 else None,
                        "logprobs": None,
                    }
                ],
            }
            if include:
                body["usage"] = None
            self._frame(body)
        if include:
            self._frame(
                {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "created": created,
                    "model": steer.model,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._frame("[DONE]")
        self._end_stream()

    # -- OpenAI embeddings ------------------------------------------------------------------

    def _embeddings(self, request: dict[str, Any]) -> None:
        inputs = request["input"]
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        data = []
        total = 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else json.dumps(item)
            total += tokens(text)
            digest = hashlib.sha256(text.encode()).digest()
            vector = [b / 255.0 for b in digest[:8]]
            embedding: Any = vector
            if request.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack("<8f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        body: dict[str, Any] = {"object": "list", "data": data, "model": self._steer.model}
        if self._steer.usage:
            body["usage"] = {"prompt_tokens": total, "total_tokens": total}
        self._send_json(200, body)

    # -- OpenAI responses ---------------------------------------------------------------------

    def _responses(self, request: dict[str, Any]) -> None:
        steer = self._steer
        raw_input = request.get("input", "")
        if isinstance(raw_input, str):
            messages = [{"role": "user", "content": raw_input}]
        else:
            messages = [m for m in raw_input if isinstance(m, dict)]
        text = answer(messages)
        input_tokens = prompt_tokens(messages)
        output_tokens = tokens(text) + steer.reasoning
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": min(steer.cached, input_tokens)},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": steer.reasoning},
            "total_tokens": input_tokens + output_tokens,
        }
        if steer.tool:
            item: dict[str, Any] = {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": TOOL_NAME,
                "arguments": TOOL_ARGUMENTS,
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            body = {
                "id": "resp_fake",
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": steer.model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": request.get("tools", []),
                "text": {"format": {"type": "text"}},
                "error": None,
                "incomplete_details": None,
                "instructions": request.get("instructions"),
                "metadata": {},
                "temperature": 1.0,
                "top_p": 1.0,
            }
            if with_usage and steer.usage:
                body["usage"] = usage
            return body

        if not request.get("stream"):
            self._send_json(200, response("completed", [item], True))
            return
        self._start_stream()
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> None:
            self._frame({"type": kind, "sequence_number": next(seq), **fields}, kind)

        event("response.created", response=response("in_progress", [], False))
        event("response.in_progress", response=response("in_progress", [], False))
        if steer.tool:
            event(
                "response.output_item.added",
                output_index=0,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in _TOOL_PIECES:
                event(
                    "response.function_call_arguments.delta",
                    item_id="fc_1",
                    output_index=0,
                    delta=piece,
                )
            event(
                "response.function_call_arguments.done",
                item_id="fc_1",
                output_index=0,
                arguments=TOOL_ARGUMENTS,
            )
        else:
            event(
                "response.output_item.added",
                output_index=0,
                item={**item, "content": [], "status": "in_progress"},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            event(
                "response.content_part.added",
                item_id="msg_1",
                output_index=0,
                content_index=0,
                part=part,
            )
            for i, piece in enumerate(_pieces(text, steer.chunks)):
                if steer.mode == "midstream-error" and i == 2:
                    event("error", code="server_error", message="fake failure", param=None)
                    self._end_stream()
                    return
                event(
                    "response.output_text.delta",
                    item_id="msg_1",
                    output_index=0,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            event(
                "response.output_text.done",
                item_id="msg_1",
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            )
            event(
                "response.content_part.done",
                item_id="msg_1",
                output_index=0,
                content_index=0,
                part={**part, "text": text},
            )
        event("response.output_item.done", output_index=0, item=item)
        event("response.completed", response=response("completed", [item], True))
        self._end_stream()

    # -- Anthropic messages ----------------------------------------------------------------------

    def _messages(self, request: dict[str, Any]) -> None:
        steer = self._steer
        messages = request["messages"]
        if not isinstance(messages, list):
            raise TypeError("messages must be a list")
        system = request.get("system")
        text = answer(messages)
        # input_tokens EXCLUDES the cache, as Anthropic's API reports it.
        input_tokens = prompt_tokens(messages) + (tokens(_text_of(system)) if system else 0)
        output_tokens = tokens(TOOL_ARGUMENTS if steer.tool else text)
        usage: dict[str, Any] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": steer.cache_write,
            "cache_read_input_tokens": steer.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": steer.cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
        }
        if steer.tool:
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {"city": "Paris"}}
            ]
        else:
            content = [{"type": "text", "text": text}]
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": steer.model,
            "content": content,
            "stop_reason": "tool_use" if steer.tool else "end_turn",
            "stop_sequence": None,
            "usage": usage if steer.usage else {"input_tokens": 0, "output_tokens": 0},
        }
        if not steer.usage:
            message.pop("usage")
        if not request.get("stream"):
            self._send_json(200, message)
            return
        self._start_stream()

        def event(kind: str, **fields: Any) -> None:
            self._frame({"type": kind, **fields}, kind)

        start_usage = {**usage, "output_tokens": 1}
        start = {**message, "content": [], "stop_reason": None}
        if steer.usage:
            start["usage"] = start_usage
        event("message_start", message=start)
        event("ping")
        if steer.tool:
            event(
                "content_block_start",
                index=0,
                content_block={"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {}},
            )
            for piece in _TOOL_PIECES:
                event(
                    "content_block_delta",
                    index=0,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
        else:
            event("content_block_start", index=0, content_block={"type": "text", "text": ""})
            for i, piece in enumerate(_pieces(text, steer.chunks)):
                if steer.mode == "midstream-error" and i == 2:
                    event("error", error={"type": "overloaded_error", "message": "fake failure"})
                    self._end_stream()
                    return
                event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
        event("content_block_stop", index=0)
        delta: dict[str, Any] = {
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}
        }
        if steer.usage:
            delta["usage"] = {"output_tokens": output_tokens}
        event("message_delta", **delta)
        event("message_stop")
        self._end_stream()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that drop their socket are not server errors


class FakeLLMServer:
    """The fake model on ``127.0.0.1`` in a background thread; a context manager.

    ``base_url`` is OpenAI's (``.../v1``), ``root_url`` Anthropic's.

    >>> with FakeLLMServer() as llm:
    ...     client = openai.OpenAI(base_url=llm.base_url, api_key="fake", max_retries=0)
    """

    def __init__(self, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-llm", daemon=True
        )

    @property
    def root_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """What the clients sent, in order: ``{"path", "headers", "body"}``."""
        return self._server.requests

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
    server = _Server(("127.0.0.1", args.port))
    print(f"fake LLM on http://127.0.0.1:{args.port}/v1 (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
