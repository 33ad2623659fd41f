"""A store that stays locked answers 503 with Retry-After (the OTLP exporter's cue to
retry), and the request's spans land once it is free again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

import sessiontrace
from sessiontrace.server import _otlp as server_otlp

from .receive_support import receiver, request, span, trace_id


def test_locked_store_answers_503_then_accepts(store_path: Path) -> None:
    body = request(span(1, 1, name="later"))
    headers = {"content-type": "application/x-protobuf"}
    with receiver(str(store_path)) as url:
        # First request creates the schema; then another process holds the write lock
        # for longer than the store's busy timeout (5 s).
        assert httpx.post(url + "/v1/traces", content=request(), headers=headers).status_code == 200
        lock = sqlite3.connect(store_path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            r = httpx.post(url + "/v1/traces", content=body, headers=headers, timeout=30)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/x-protobuf"
        r = httpx.post(url + "/v1/traces", content=body, headers=headers, timeout=30)
        assert r.status_code == 200
    assert sessiontrace.get_trace(trace_id(1)).info.name == "later"


def test_too_many_waiting_requests_answer_429(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no room in the queue for the store, a request with spans is turned away
    # (retryable, Retry-After); an empty one still succeeds.
    monkeypatch.setattr(server_otlp, "_MAX_WAITING", 0)
    headers = {"content-type": "application/json"}
    with receiver(str(store_path)) as url:
        body = json.dumps(
            {
                "resourceSpans": [
                    {
                        "scopeSpans": [
                            {"spans": [{"traceId": "1" * 32, "spanId": "2" * 16, "name": "x"}]}
                        ]
                    }
                ]
            }
        )
        r = httpx.post(url + "/v1/traces", content=body, headers=headers)
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
        assert r.json()["message"] == "too many requests waiting"
        assert httpx.post(url + "/v1/traces", content=b"{}", headers=headers).status_code == 200
