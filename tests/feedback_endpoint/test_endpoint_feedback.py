"""The feedback endpoint behind the middleware, on real servers and both stores.

A front end reads ``X-Trace-ID`` from a chat response and posts its user's verdict;
these tests play that front end (httpx) against uvicorn, hypercorn, werkzeug and
waitress, and read back what the store holds.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import sessiontrace
from sessiontrace import _runtime

from .apps import asgi_app, traces_by_label, wsgi_app
from .servers import ASGI_SERVERS, WSGI_SERVERS, serve

pytestmark = pytest.mark.backends

ALICE = {"X-User-ID": "alice", "X-Session-ID": "s-alice"}
BOB = {"X-User-ID": "bob", "X-Session-ID": "s-bob"}


def _app(server: str, *, feedback: dict[str, Any] | None = None, **middleware: Any) -> Any:
    if server in ASGI_SERVERS or server == "hypercorn-trio":
        return asgi_app(middleware=middleware, feedback=feedback)
    return wsgi_app(middleware=middleware, feedback=feedback)


def post(client: httpx.Client, payload: Any, **kwargs: Any) -> httpx.Response:
    return client.post("/feedback/", json=payload, **kwargs)


def as_(base: str, headers: dict[str, str], method: str, **kwargs: Any) -> httpx.Response:
    """One request to /feedback from another front end (its own client, closed after)."""
    with httpx.Client(base_url=base, headers=headers) as client:
        return client.request(method, "/feedback/", **kwargs)


def as_post(base: str, headers: dict[str, str], payload: Any) -> httpx.Response:
    return as_(base, headers, "POST", json=payload)


def ask(client: httpx.Client, label: str) -> str:
    response = client.get("/chat", params={"label": label})
    assert response.status_code == 200
    return response.headers["X-Trace-ID"]


def stored_feedback(trace_id: str) -> list[Any]:
    sessiontrace.flush(10)
    return _runtime.get_store().assessments_for([trace_id]).get(trace_id, [])


# -- the front end's way --------------------------------------------------------------------


@pytest.mark.parametrize("server", [*ASGI_SERVERS, "hypercorn-trio", *WSGI_SERVERS])
def test_thumbs_down_on_the_turn_just_shown_is_found_by_search(server: str) -> None:
    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as front:
        with front.stream("GET", "/stream", params={"label": "streamed"}) as streamed:
            streamed_id = streamed.headers["X-Trace-ID"]
            streamed.read()
        normal_id = ask(front, "normal")
        down = post(
            front,
            {"trace_id": streamed_id, "name": "thumbs_up", "value": False, "comment": "wrong"},
        )
        up = post(front, {"trace_id": normal_id, "name": "thumbs_up", "value": True})
        rating = post(front, {"trace_id": normal_id, "name": "rating", "value": 4})
        mine = front.get("/feedback/", params={"trace_id": normal_id})
    assert (down.status_code, up.status_code, rating.status_code) == (200, 200, 200)
    assert down.headers["content-type"] == "application/json"
    assert down.headers["cache-control"] == "no-store"
    body = down.json()
    assert body["trace_id"] == streamed_id and body["name"] == "thumbs_up"
    assert body["value"] is False and body["comment"] == "wrong"
    assert body["assessment_id"].startswith("a-")
    assert mine.status_code == 200
    assert sorted((f["name"], f["value"]) for f in mine.json()["feedback"]) == [
        ("rating", 4),
        ("thumbs_up", True),
    ]
    traces = traces_by_label()
    assert traces["streamed"]["trace_id"] == streamed_id
    sessiontrace.flush(10)
    found = sessiontrace.search_traces(
        filter_string="feedback.thumbs_up = false AND user = 'alice'", return_type="list"
    )
    assert [t.info.trace_id for t in found] == [streamed_id]
    rated = sessiontrace.search_traces(filter_string="feedback.rating >= 4", return_type="list")
    assert [t.info.trace_id for t in rated] == [normal_id]
    (stored,) = stored_feedback(streamed_id)
    assert stored.source.source_type == "HUMAN" and stored.source.source_id == "alice"
    assert stored.rationale == "wrong" and stored.value is False


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_second_post_updates_and_delete_retracts(server: str) -> None:
    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as front:
        tid = ask(front, "turn")
        first = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        second = post(
            front, {"trace_id": tid, "name": "thumbs_up", "value": False, "comment": "changed"}
        )
        (row,) = stored_feedback(tid)
        gone = front.delete("/feedback/", params={"trace_id": tid, "name": "thumbs_up"})
        again = front.delete("/feedback/", params={"trace_id": tid, "name": "thumbs_up"})
        after = front.get("/feedback/", params={"trace_id": tid})
        third = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
    assert first.json()["assessment_id"] == second.json()["assessment_id"]
    assert second.json()["create_time_ms"] == first.json()["create_time_ms"]
    assert (row.value, row.rationale) == (False, "changed")
    assert gone.json() == {"trace_id": tid, "name": "thumbs_up", "deleted": 1}
    assert again.json()["deleted"] == 0
    assert after.json()["feedback"] == []
    assert third.status_code == 200
    assert third.json()["assessment_id"] != first.json()["assessment_id"]
    assert [a.value for a in stored_feedback(tid)] == [True]


# -- who may ----------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["uvicorn", "waitress"])
def test_who_may_post_on_which_trace(server: str) -> None:
    @sessiontrace.trace
    def answer(label: str) -> str:
        return label

    # Traces made outside the app: one with nobody, one with a session only.
    answer("nobody")
    nobody = sessiontrace.get_last_active_trace_id()
    with sessiontrace.user_session(session_id="s-shared"):
        answer("session-only")
    session_only = sessiontrace.get_last_active_trace_id()
    assert nobody and session_only
    sessiontrace.flush(10)

    def vote(client: httpx.Client, tid: str) -> httpx.Response:
        return post(client, {"trace_id": tid, "name": "thumbs_up", "value": True})

    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as alice:

        def vote_as(headers: dict[str, str], tid: str) -> httpx.Response:
            return as_(
                base, headers, "POST", json={"trace_id": tid, "name": "thumbs_up", "value": True}
            )

        tid = ask(alice, "alice's")
        cases = {
            "own": vote(alice, tid),
            "another user": vote_as(BOB, tid),
            "same user, another session": vote_as({**ALICE, "X-Session-ID": "s-2"}, tid),
            "same user, no session": vote_as({"X-User-ID": "alice"}, tid),
            "anonymous": vote_as({}, tid),
            "session only, user required": vote_as({"X-Session-ID": "s-alice"}, tid),
            "a trace of nobody": vote(alice, nobody),
            "session-only trace, its session": vote_as(
                {**BOB, "X-Session-ID": "s-shared"}, session_only
            ),
            "session-only trace, another session": vote(alice, session_only),
            "unknown trace": vote(alice, "tr-" + "0" * 32),
            "get another's": as_(base, BOB, "GET", params={"trace_id": tid}),
            "delete another's": as_(
                base, BOB, "DELETE", params={"trace_id": tid, "name": "thumbs_up"}
            ),
        }
    got = {
        case: (r.status_code, r.json()["error"] if r.status_code != 200 else "")
        for case, r in cases.items()
    }
    assert got == {
        "own": (200, ""),
        "another user": (403, "forbidden"),
        "same user, another session": (403, "forbidden"),
        "same user, no session": (403, "forbidden"),
        "anonymous": (401, "unauthenticated"),
        "session only, user required": (401, "unauthenticated"),
        "a trace of nobody": (403, "forbidden"),
        "session-only trace, its session": (200, ""),
        "session-only trace, another session": (403, "forbidden"),
        "unknown trace": (404, "trace_not_found"),
        "get another's": (403, "forbidden"),
        "delete another's": (403, "forbidden"),
    }
    assert [a.source.source_id for a in stored_feedback(tid)] == ["alice"]


def test_the_options_that_loosen_the_rule() -> None:
    @sessiontrace.trace
    def answer(label: str) -> str:
        return label

    answer("nobody")
    nobody = sessiontrace.get_last_active_trace_id()
    assert nobody
    sessiontrace.flush(10)
    options = {"require_user": False, "check_session": False, "allow_unowned_traces": True}
    with (
        serve(_app("uvicorn", feedback=options), "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as alice,
    ):
        tid = ask(alice, "alice's")
        other_session = as_post(
            base,
            {**ALICE, "X-Session-ID": "s-2"},
            {"trace_id": tid, "name": "rating", "value": 5},
        )
        unowned = post(alice, {"trace_id": nobody, "name": "rating", "value": 1})
        guest = {"X-Session-ID": "s-guest"}
        first = as_post(base, guest, {"trace_id": nobody, "name": "rating", "value": 2})
        second = as_post(base, guest, {"trace_id": nobody, "name": "rating", "value": 3})
        nobody_at_all = as_post(base, {}, {"trace_id": nobody, "name": "rating", "value": 3})
    assert other_session.status_code == 200 and unowned.status_code == 200
    assert (
        first.status_code == 200 and first.json()["assessment_id"] == second.json()["assessment_id"]
    )
    assert nobody_at_all.status_code == 401
    rows = sorted((a.source.source_id or "", a.value) for a in stored_feedback(nobody))
    assert rows == [("", 3), ("alice", 1)]


def test_a_just_finished_trace_still_in_the_queue_is_waited_for(tracking_uri: str) -> None:
    # A slow writer: the trace is still queued when the front end posts.
    sessiontrace.configure(tracking_uri=tracking_uri, flush_interval=30)
    with (
        serve(_app("uvicorn"), "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
    ):
        tid = ask(front, "queued")
        assert _runtime.get_store().trace_owner(tid) is None  # not written yet
        waited = post(front, {"trace_id": tid, "name": "thumbs_up", "value": False})
    assert waited.status_code == 200
    sessiontrace.configure(tracking_uri=tracking_uri, flush_interval=30)
    with (
        serve(_app("uvicorn", feedback={"flush_timeout": 0}), "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
    ):
        tid = ask(front, "not waited for")
        started = time.monotonic()
        refused = post(front, {"trace_id": tid, "name": "thumbs_up", "value": False})
    assert refused.status_code == 404 and time.monotonic() - started < 5


def test_feedback_on_a_turn_still_streaming_is_taken() -> None:
    release = threading.Event()

    @sessiontrace.trace
    def slow_answer() -> str:
        return "done"

    from fastapi.responses import StreamingResponse

    app = asgi_app()
    inner = app

    @inner.get("/slow")
    async def slow() -> StreamingResponse:
        async def body() -> Any:
            with sessiontrace.start_span("turn"):
                yield b"first\n"
                while not release.is_set():
                    import asyncio

                    await asyncio.sleep(0.01)
                yield b"last\n"

        return StreamingResponse(body(), media_type="text/plain")

    # Routes added after the mount: move the mount (a catch-all prefix) last.
    app.router.routes.sort(key=lambda r: getattr(r, "path", "") == "/feedback")
    with (
        serve(app, "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
        front.stream("GET", "/slow") as streamed,
    ):
        tid = streamed.headers["X-Trace-ID"]
        chunks = streamed.iter_bytes()
        assert next(chunks).startswith(b"first")
        live = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        other = as_post(
            base,
            BOB,
            {"trace_id": tid, "name": "thumbs_up", "value": False},
        )
        release.set()
        b"".join(chunks)
    assert live.status_code == 200 and other.status_code == 403
    assert [a.value for a in stored_feedback(tid)] == [True]
    assert sessiontrace.get_trace(tid) is not None


# -- bad input ------------------------------------------------------------------------------

BIG = 16 * 1024


def _cases(tid: str) -> list[tuple[str, str, dict[str, str], bytes, int, str]]:
    """(what, method, headers, body, status, error) for POST /feedback unless said."""
    json_type = {"Content-Type": "application/json"}

    def body(**fields: Any) -> bytes:
        return json.dumps({"trace_id": tid, "name": "thumbs_up", "value": True, **fields}).encode()

    def raw(text: str) -> bytes:
        return text.encode()

    return [
        ("no content type", "POST", {}, body(), 415, "unsupported_media_type"),
        (
            "form",
            "POST",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"a=1",
            415,
            "unsupported_media_type",
        ),
        (
            "latin-1 json",
            "POST",
            {"Content-Type": "application/json; charset=latin-1"},
            body(),
            415,
            "unsupported_media_type",
        ),
        ("too large", "POST", json_type, body(comment="x" * BIG), 413, "payload_too_large"),
        ("not json", "POST", json_type, b"{trace_id:", 400, "invalid_json"),
        ("not utf-8", "POST", json_type, b'{"trace_id": "\xff\xfe"}', 400, "invalid_json"),
        ("deep", "POST", json_type, b"[" * 6000 + b"]" * 6000, 400, "invalid_json"),
        (
            "deep object",
            "POST",
            json_type,
            b'{"a":' * 2500 + b"1" + b"}" * 2500,
            400,
            "invalid_json",
        ),
        (
            "NaN",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "name": "rating", "value": NaN}}'),
            400,
            "invalid_json",
        ),
        (
            "Infinity",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "name": "rating", "value": -Infinity}}'),
            400,
            "invalid_json",
        ),
        (
            "1e400",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "name": "rating", "value": 1e400}}'),
            422,
            "invalid_feedback",
        ),
        (
            "huge int",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "name": "rating", "value": {"9" * 5000}}}'),
            400,
            "invalid_json",
        ),
        (
            "duplicate key",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "trace_id": "x", "name": "thumbs_up", "value": true}}'),
            400,
            "invalid_json",
        ),
        ("array", "POST", json_type, b"[1, 2]", 422, "invalid_feedback"),
        ("string", "POST", json_type, b'"hello"', 422, "invalid_feedback"),
        ("unknown field", "POST", json_type, body(user_id="mallory"), 422, "invalid_feedback"),
        (
            "no trace id",
            "POST",
            json_type,
            b'{"name": "thumbs_up", "value": true}',
            422,
            "invalid_feedback",
        ),
        (
            "numeric trace id",
            "POST",
            json_type,
            raw('{"trace_id": 7, "name": "thumbs_up", "value": true}'),
            422,
            "invalid_feedback",
        ),
        (
            "trace id with a quote",
            "POST",
            json_type,
            body(trace_id="tr-1' OR 1=1"),
            422,
            "invalid_feedback",
        ),
        ("long trace id", "POST", json_type, body(trace_id="t" * 500), 422, "invalid_feedback"),
        ("unknown name", "POST", json_type, body(name="stars"), 422, "invalid_feedback"),
        ("name as list", "POST", json_type, body(name=["thumbs_up"]), 422, "invalid_feedback"),
        (
            "no value",
            "POST",
            json_type,
            raw(f'{{"trace_id": "{tid}", "name": "thumbs_up"}}'),
            422,
            "invalid_feedback",
        ),
        ("bool as string", "POST", json_type, body(value="false"), 422, "invalid_feedback"),
        ("bool as 0", "POST", json_type, body(value=0), 422, "invalid_feedback"),
        ("null value", "POST", json_type, body(value=None), 422, "invalid_feedback"),
        ("rating 6", "POST", json_type, body(name="rating", value=6), 422, "invalid_feedback"),
        ("rating 3.5", "POST", json_type, body(name="rating", value=3.5), 422, "invalid_feedback"),
        (
            "rating true",
            "POST",
            json_type,
            body(name="rating", value=True),
            422,
            "invalid_feedback",
        ),
        (
            "rating dict",
            "POST",
            json_type,
            body(name="rating", value={"a": 1}),
            422,
            "invalid_feedback",
        ),
        ("long comment", "POST", json_type, body(comment="x" * 2001), 422, "invalid_feedback"),
        ("comment number", "POST", json_type, body(comment=5), 422, "invalid_feedback"),
        ("comment NUL", "POST", json_type, body(comment="a\x00b"), 422, "invalid_feedback"),
        (
            "comment lone surrogate",
            "POST",
            json_type,
            raw(
                f'{{"trace_id": "{tid}", "name": "thumbs_up", "value": true, "comment": "\\ud800"}}'
            ),
            422,
            "invalid_feedback",
        ),
        ("bad span id", "POST", json_type, body(span_id="<span>"), 422, "invalid_feedback"),
        ("GET without trace id", "GET", {}, b"", 422, "invalid_feedback"),
        ("PUT", "PUT", json_type, body(), 405, "method_not_allowed"),
        ("PATCH", "PATCH", json_type, body(), 405, "method_not_allowed"),
    ]


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_bad_requests_get_clear_errors_and_store_nothing(server: str) -> None:
    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as front:
        tid = ask(front, "target")
        got = {}
        for what, method, headers, content, _, _ in _cases(tid):
            r = front.request(method, "/feedback/", headers=headers, content=content)
            got[what] = (r.status_code, r.json()["error"])
        extra = {
            "sub-path": front.post("/feedback/x", json={}),
            "query twice": front.get(f"/feedback/?trace_id={tid}&trace_id={tid}"),
            "query unknown": front.get("/feedback/", params={"trace_id": tid, "user": "bob"}),
            "delete without name": front.delete("/feedback/", params={"trace_id": tid}),
            "chunked too large": front.post(
                "/feedback/",
                headers={"Content-Type": "application/json"},
                content=iter([b"[" + b" " * 4096] * 8 + [b"]"]),
            ),
        }
        still_fine = ask(front, "after")
    want = {what: (status, code) for what, _, _, _, status, code in _cases(tid)}
    assert got == want
    assert {k: r.status_code for k, r in extra.items()} == {
        "sub-path": 404,
        "query twice": 400,
        "query unknown": 400,
        "delete without name": 422,
        "chunked too large": 413,
    }
    assert extra["chunked too large"].json()["error"] == "payload_too_large"
    assert still_fine
    assert stored_feedback(tid) == []
    assert _runtime.get_stats()["internal_errors"] == {}


def test_wsgi_body_without_length_is_411() -> None:
    with serve(_app("werkzeug"), "werkzeug") as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /feedback HTTP/1.0\r\nHost: t\r\nX-User-ID: alice\r\n"
                b"Content-Type: application/json\r\n\r\n{}"
            )
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.0 411") or answer.startswith(b"HTTP/1.1 411")


def test_names_option_and_its_checks() -> None:
    names = {
        "helpful": bool,
        "score": (0.0, 1.0),
        "reason": {"wrong", "slow"},
        "note": str,
        "count": int,
        "amount": float,
    }
    with (
        serve(_app("uvicorn", feedback={"names": names}), "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
    ):
        tid = ask(front, "t")
        ok = [
            post(front, {"trace_id": tid, "name": "helpful", "value": True}),
            post(front, {"trace_id": tid, "name": "score", "value": 0.25}),
            post(front, {"trace_id": tid, "name": "reason", "value": "slow"}),
            post(front, {"trace_id": tid, "name": "note", "value": "<script>x</script>"}),
            post(front, {"trace_id": tid, "name": "count", "value": 2**53}),
            post(front, {"trace_id": tid, "name": "amount", "value": -1.5e300}),
        ]
        bad = [
            post(front, {"trace_id": tid, "name": "thumbs_up", "value": True}),
            post(front, {"trace_id": tid, "name": "score", "value": 1.5}),
            post(front, {"trace_id": tid, "name": "reason", "value": "other"}),
            post(front, {"trace_id": tid, "name": "note", "value": "x" * 201}),
            post(front, {"trace_id": tid, "name": "note", "value": ""}),
            post(front, {"trace_id": tid, "name": "count", "value": 10**400}),
            post(front, {"trace_id": tid, "name": "count", "value": 2**53 + 1}),
            post(front, {"trace_id": tid, "name": "count", "value": 1.5}),
            post(front, {"trace_id": tid, "name": "amount", "value": 10**400}),
            post(front, {"trace_id": tid, "name": "score", "value": 10**400}),
        ]
    assert [r.status_code for r in ok] == [200] * 6
    assert [r.status_code for r in bad] == [422] * 10
    assert "amount, count, helpful, note, reason, score" in bad[0].json()["message"]
    assert sorted((a.name, a.value) for a in stored_feedback(tid)) == [
        ("amount", -1.5e300),
        ("count", 2**53),
        ("helpful", True),
        ("note", "<script>x</script>"),
        ("reason", "slow"),
        ("score", 0.25),
    ]
    for wrong, error in [
        ({"names": {}}, TypeError),
        ({"names": {"bad name": bool}}, ValueError),
        ({"names": {"x": list}}, TypeError),
        ({"names": {"x": range(5, 1)}}, ValueError),
        ({"names": {"x": (3, 1)}}, ValueError),
        ({"max_body_bytes": 0}, ValueError),
        ({"require_user": "yes"}, TypeError),
        ({"flush_timeout": 60}, ValueError),
        ({"unknown": 1}, TypeError),
    ]:
        with pytest.raises(error):
            sessiontrace.feedback_app(**wrong)
        with pytest.raises(error):
            sessiontrace.feedback_wsgi_app(**wrong)


# -- many at once -------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["hypercorn", "waitress"])
def test_concurrent_posts_one_row_per_user(server: str) -> None:
    with sessiontrace.user_session(session_id="s-shared"):
        sessiontrace.trace(lambda: None)()
    shared = sessiontrace.get_last_active_trace_id()
    assert shared
    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as front:
        tid = ask(front, "contended")

        def alice_votes(i: int) -> int:
            with httpx.Client(base_url=base, headers=ALICE) as client:
                payload = {"trace_id": tid, "name": "rating", "value": 1 + i % 5}
                return post(client, payload).status_code

        def user_votes(i: int) -> int:
            headers = {"X-User-ID": f"user-{i % 6}", "X-Session-ID": "s-shared"}
            with httpx.Client(base_url=base, headers=headers) as client:
                payload = {"trace_id": shared, "name": "thumbs_up", "value": i % 2 == 0}
                return post(client, payload).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(alice_votes, range(24))) + list(
                pool.map(user_votes, range(24))
            )
    assert statuses == [200] * 48
    (row,) = stored_feedback(tid)
    assert row.source.source_id == "alice" and row.value in range(1, 6)
    rows = stored_feedback(shared)
    assert sorted(a.source.source_id for a in rows) == [f"user-{i}" for i in range(6)]


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["uvicorn", "waitress"])
def test_store_failures_answer_503_are_counted_and_leave_the_app_serving(
    server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = _runtime.get_store()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Key (dedupe_key)=(tr-x alice) already exists")  # a driver's detail

    with serve(_app(server), server) as base, httpx.Client(base_url=base, headers=ALICE) as front:
        tid = ask(front, "t")
        sessiontrace.flush(10)
        monkeypatch.setattr(store, "put_assessment", broken)
        failed = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        monkeypatch.setattr(store, "trace_owner", broken)
        owner_failed = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        listing = front.get("/feedback/", params={"trace_id": tid})
        app_still_fine = front.get("/chat", params={"label": "after"})
    assert [failed.status_code, owner_failed.status_code, listing.status_code] == [503] * 3
    assert failed.headers["Retry-After"] == "1"
    assert failed.json()["error"] == "unavailable"
    assert app_still_fine.status_code == 200
    errors = _runtime.get_stats()["internal_errors"]
    assert errors.get("feedback_put_assessment") == 1
    assert errors.get("feedback_trace_owner") == 2
    assert "alice" not in caplog.text and "dedupe_key" not in caplog.text


def test_no_raw_ids_or_comments_in_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_user = "user-SECRET-7f3a"
    secret_comment = "COMMENT-SECRET-91b"
    headers = {"X-User-ID": secret_user, "X-Session-ID": "session-SECRET-22"}
    with (
        serve(_app("uvicorn"), "uvicorn") as base,
        httpx.Client(base_url=base, headers=headers) as front,
    ):
        tid = ask(front, "t")
        for payload in [
            {"trace_id": tid, "name": "thumbs_up", "value": False, "comment": secret_comment},
            {"trace_id": tid, "name": "thumbs_up", "value": secret_comment},
            {
                "trace_id": "tr-" + "f" * 32,
                "name": "thumbs_up",
                "value": True,
                "comment": secret_comment,
            },
            {"trace_id": tid, "name": secret_comment, "value": True},
        ]:
            post(front, payload)
        bad_header = {"X-User-ID": secret_user + " " + "x" * 300}
        as_post(
            base,
            bad_header,
            {"trace_id": tid, "name": "thumbs_up", "value": True},
        )
    # Behind no middleware at all: 401, and one warning that says why.
    with serve(sessiontrace.feedback_app(), "uvicorn") as base:
        alone = httpx.post(
            f"{base}/", json={"trace_id": tid, "name": "thumbs_up", "value": True}, headers=headers
        )
    assert alone.status_code == 401
    assert "not behind ASGIMiddleware" in caplog.text
    for secret in (secret_user, secret_comment, "session-SECRET-22"):
        assert secret not in caplog.text


def test_without_a_local_store_the_answer_is_503(tracking_uri: str) -> None:
    # Traces sent to a server over HTTP: the owner of a trace cannot be read here.
    sessiontrace.configure(tracking_uri="http://127.0.0.1:9")
    try:
        with serve(_app("uvicorn"), "uvicorn") as base:
            answer = as_post(
                base, ALICE, {"trace_id": "tr-" + "1" * 32, "name": "thumbs_up", "value": True}
            )
    finally:
        sessiontrace.configure(tracking_uri=tracking_uri)
    assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
    assert _runtime.get_stats()["internal_errors"] == {"feedback_store": 1}


def test_delete_racing_another_delete_and_a_failing_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _runtime.get_store()
    real_delete = store.delete_assessment

    def taken_first(trace_id: str, assessment_id: str) -> None:
        real_delete(trace_id, assessment_id)  # the other DELETE
        real_delete(trace_id, assessment_id)  # ours: AssessmentNotFoundError

    def broken(trace_id: str, assessment_id: str) -> None:
        raise OSError("disk full")

    with (
        serve(_app("uvicorn"), "uvicorn") as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
    ):
        tid = ask(front, "t")
        post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        post(front, {"trace_id": tid, "name": "rating", "value": 2})
        monkeypatch.setattr(store, "delete_assessment", taken_first)
        raced = front.delete("/feedback/", params={"trace_id": tid, "name": "thumbs_up"})
        monkeypatch.setattr(store, "delete_assessment", broken)
        failed = front.delete("/feedback/", params={"trace_id": tid, "name": "rating"})
    assert (raced.status_code, raced.json()["deleted"]) == (200, 0)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert [a.name for a in stored_feedback(tid)] == ["rating"]
    assert _runtime.get_stats()["internal_errors"] == {"feedback_delete_assessment": 1}


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_bug_in_the_endpoint_is_a_500_and_the_app_goes_on(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiontrace.feedback import _asgi, _wsgi

    def crash(*args: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(_asgi, "parse_post", crash)
    monkeypatch.setattr(_wsgi, "parse_post", crash)
    with (
        serve(_app(server), server) as base,
        httpx.Client(base_url=base, headers=ALICE) as front,
    ):
        tid = ask(front, "t")
        broken = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        after = ask(front, "after")
    assert broken.status_code == 500 and broken.json()["error"] == "internal_error"
    assert after
    assert _runtime.get_stats()["internal_errors"] == {"feedback_endpoint": 1}


def test_with_a_resolver_and_pseudonymised_ids_a_spoofed_header_gets_403() -> None:
    # The set-up the README recommends: the signed-in user comes from the app (here a
    # bearer token standing for a session cookie), not from X-User-ID.
    def signed_in(scope: dict[str, Any]) -> tuple[str | None, str | None] | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value.startswith(b"Bearer "):
                return value[7:].decode(), None
        return None

    key = "k" * 32
    # user_header=None: without a signed-in user, a client's X-User-ID is never the fallback.
    app = _app("uvicorn", resolver=signed_in, user_header=None, user_id_hmac_key=key)
    alice = {"Authorization": "Bearer alice", "X-Session-ID": "s-1"}
    mallory = {"Authorization": "Bearer mallory", "X-User-ID": "alice", "X-Session-ID": "s-1"}
    with serve(app, "uvicorn") as base, httpx.Client(base_url=base, headers=alice) as front:
        tid = ask(front, "t")
        own = post(front, {"trace_id": tid, "name": "thumbs_up", "value": True})
        spoofed = as_post(base, mallory, {"trace_id": tid, "name": "thumbs_up", "value": False})
        header_only = as_post(
            base,
            {"X-User-ID": "alice", "X-Session-ID": "s-1"},
            {"trace_id": tid, "name": "rating", "value": 1},
        )
    assert own.status_code == 200
    assert spoofed.status_code == 403
    assert header_only.status_code == 401
    (row,) = stored_feedback(tid)
    assert row.source.source_id is not None and row.source.source_id.startswith("u-")
    assert (
        row.source.source_id == sessiontrace.get_trace(tid).info.trace_metadata["mlflow.trace.user"]
    )
