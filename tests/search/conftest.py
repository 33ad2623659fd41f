"""A reproducible set of traces written through the SDK with a fake clock.

Every trace's user, session, start, duration, state, tags and metadata are kept in
a plain ``Record`` too, so tests compute the expected answers in Python,
independently of the SQL under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

import sessiontrace
from sessiontrace import _tracing

BASE_MS = 1_765_000_000_000  # 2025-12-06
DAY_MS = 86_400_000
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


@dataclasses.dataclass(frozen=True)
class Record:
    trace_id: str
    user: str | None
    session: str | None
    start_ms: int
    duration_ms: int
    state: str
    tags: dict[str, str]
    app_version: str
    environment: str
    message: str
    response: str | None
    span_type: str


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _plan(rng: random.Random) -> list[dict[str, object]]:
    users = [f"user-{i}" for i in range(12)]
    plans: list[dict[str, object]] = []
    for s in range(40):
        owner = users[s % len(users)]
        start = BASE_MS + rng.randrange(10 * DAY_MS)
        for turn in range(rng.randint(1, 9)):
            user: str | None = owner
            if s in (3, 7) and turn % 2:  # two sessions shared by two users
                user = users[(s + 1) % len(users)]
            if rng.random() < 0.03:
                user = None
            start += rng.randint(2_000, 600_000)
            plans.append({"user": user, "session": f"session-{s}", "start": start})
    for _ in range(15):  # traces outside any session
        plans.append(
            {
                "user": rng.choice(users),
                "session": None,
                "start": BASE_MS + rng.randrange(10 * DAY_MS),
            }
        )
    plans.sort(key=lambda p: p["start"])  # type: ignore[arg-type,return-value]
    return plans


def generate(monkeypatch: pytest.MonkeyPatch, seed: int = 7) -> list[Record]:
    rng = random.Random(seed)
    clock = FakeClock()
    counter = itertools.count(1)
    monkeypatch.setitem(_tracing.clock, "ns", clock)
    monkeypatch.setitem(
        _tracing.ids, "trace", lambda: f"tr-{clock.ns // 1_000_000:012x}{next(counter):020x}"
    )
    records: list[Record] = []
    now: dict[str, Any] = {}  # the trace being written

    def child(message: str) -> str:
        clock.ns += now["duration"] * 1_000_000
        return f"answer {now['n']}"

    @sessiontrace.trace(name="chat")
    def app(message: str) -> str:
        metadata = {"app_version": now["version"], "environment": now["environment"]}
        if now["user"] is not None:
            metadata["mlflow.trace.user"] = now["user"]
        if now["session"] is not None:
            metadata["mlflow.trace.session"] = now["session"]
        sessiontrace.update_current_trace(metadata=metadata, tags=now["tags"] or None)
        llm = now["span_type"] == "LLM"
        with sessiontrace.start_span(
            "llm" if llm else "retrieve", span_type=now["span_type"], attributes={"model": "m-1"}
        ):
            out = child(message)
        if now["failed"]:
            raise RuntimeError("model timed out")
        return out

    for n, plan in enumerate(_plan(rng)):
        user, session, start = plan["user"], plan["session"], plan["start"]
        assert isinstance(start, int)
        duration = rng.randint(1, 3000)
        failed = rng.random() < 0.15
        tags = {} if rng.random() < 0.2 else {"query_category": rng.choice(["chat", "search"])}
        version = rng.choice(VERSIONS)
        environment = rng.choice(["staging", "production"])
        span_type = rng.choice(["LLM", "RETRIEVER"])
        message = f"question {n} from {user}"
        response = None if failed else f"answer {n}"
        now.update(
            n=n,
            user=user,
            session=session,
            duration=duration,
            failed=failed,
            tags=tags,
            version=version,
            environment=environment,
            span_type=span_type,
        )
        clock.ns = start * 1_000_000
        with contextlib.suppress(RuntimeError):
            app(message)
        trace_id = sessiontrace.get_last_active_trace_id()
        assert trace_id is not None
        records.append(
            Record(
                trace_id=trace_id,
                user=user if isinstance(user, str) else None,
                session=session if isinstance(session, str) else None,
                start_ms=start,
                duration_ms=duration,
                state="ERROR" if failed else "OK",
                tags=tags,
                app_version=version,
                environment=environment,
                message=message,
                response=response,
                span_type=span_type,
            )
        )
    assert sessiontrace.flush(30)
    return records


@pytest.fixture
def dataset(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Record]]:
    yield generate(monkeypatch)
