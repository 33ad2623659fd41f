"""The JSON API behind every page, and the server's security rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sessiontrace
from sessiontrace.server import create_app

from .conftest import TOKEN, app_client

pytestmark = pytest.mark.backends


@sessiontrace.trace
def chat(message: str) -> str:
    sessiontrace.update_current_trace(tags={"query_category": "chat"})
    if message == "boom":
        raise RuntimeError("boom")
    return f"echo {message}"


def _seed() -> list[str]:
    ids = []
    for user, session, message, version in [
        ("alice", "s1", "hi", "1.0"),
        ("alice", "s1", "boom", "1.0"),
        ("bob", "s2", "<script>window.__pwned=1</script>", "2.0"),
    ]:
        with sessiontrace.user_session(user_id=user, session_id=session):
            try:
                with sessiontrace.start_span("wrap") as span:
                    span.set_inputs({"message": message})
                    sessiontrace.update_current_trace(metadata={"app_version": version})
                    span.set_outputs(chat(message))
            except RuntimeError:
                pass
        tid = sessiontrace.get_last_active_trace_id()
        assert tid is not None
        ids.append(tid)
    assert sessiontrace.flush(5)
    return ids


def test_traces_list_with_filter_and_pages(client: httpx.Client) -> None:
    ids = _seed()
    r = client.get("/api/traces")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert [t["trace_id"] for t in body["traces"]] == ids[::-1]
    first = body["traces"][-1]
    assert (first["user_id"], first["session_id"], first["state"]) == ("alice", "s1", "OK")
    assert first["tags"] == {"query_category": "chat"}
    assert first["metadata"]["app_version"] == "1.0"

    r = client.get("/api/traces", params={"filter": "user = 'alice'", "max_results": 1})
    page1 = r.json()
    assert len(page1["traces"]) == 1 and page1["next_page_token"]
    r = client.get(
        "/api/traces",
        params={
            "filter": "user = 'alice'",
            "max_results": 1,
            "page_token": page1["next_page_token"],
        },
    )
    page2 = r.json()
    assert {page1["traces"][0]["trace_id"], page2["traces"][0]["trace_id"]} == set(ids[:2])


@pytest.mark.parametrize(
    ("filter_string", "position"),
    [("user = 'alice' AND", 18), ("invalid = 'foo'", 0), ("tags.x <> 'y'", 7)],
)
def test_bad_filter_is_400_with_the_position(
    client: httpx.Client, filter_string: str, position: int
) -> None:
    for path in ("/api/traces", "/api/sessions", "/api/users", "/api/versions"):
        r = client.get(path, params={"filter": filter_string})
        assert r.status_code == 400, path
        assert r.json()["position"] == position, (path, r.json())
        assert r.json()["text"] == filter_string


def test_bad_parameters_are_400(client: httpx.Client) -> None:
    assert client.get("/api/traces", params={"max_results": "x"}).status_code == 400
    assert client.get("/api/traces", params={"max_results": "0"}).status_code == 400
    assert client.get("/api/traces", params={"page_token": "garbage"}).status_code == 400
    assert client.get("/api/sessions", params={"order_by": "nope DESC"}).status_code == 400
    assert client.get("/api/trace").status_code == 400
    assert client.get("/api/user", params={"id": "a", "days": "-1"}).status_code == 400


def test_sessions_session_users_user_versions(client: httpx.Client) -> None:
    ids = _seed()
    sessions = client.get("/api/sessions").json()["sessions"]
    assert [(s["session_id"], s["turns"], s["errors"]) for s in sessions] == [
        ("s2", 1, 0),
        ("s1", 2, 1),
    ]
    r = client.get("/api/session", params={"id": "s1"})
    assert r.status_code == 200
    body = r.json()
    assert body["summary"]["user_ids"] == ["alice"]
    assert [t["trace_id"] for t in body["turns"]] == ids[:2]
    assert [t["status"] for t in body["turns"]] == ["OK", "ERROR"]
    assert body["turns"][0]["request"] == {"message": "hi"}
    assert body["turns"][0]["tags"] == {"query_category": "chat"}
    assert client.get("/api/session", params={"id": "nope"}).status_code == 404

    users = client.get("/api/users", params={"order_by": "traces DESC"}).json()["users"]
    assert [(u["user_id"], u["traces"]) for u in users] == [("alice", 2), ("bob", 1)]
    report = client.get("/api/user", params={"id": "alice", "days": 30}).json()
    assert (report["traces"], report["sessions"], report["errors"]) == (2, 1, 1)
    assert sum(d["traces"] for d in report["daily_activity"]) == 2
    assert report["tags"] == {"query_category": {"chat": 2}}
    assert client.get("/api/user", params={"id": "nobody"}).status_code == 404

    versions = client.get("/api/versions").json()
    assert versions["key"] == "app_version"
    assert [(v["value"], v["traces"]) for v in versions["rows"]] == [("1.0", 2), ("2.0", 1)]
    env = client.get("/api/versions", params={"key": "mlflow.trace.user"}).json()
    assert {v["value"] for v in env["rows"]} == {"alice", "bob"}


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/sessions", {}),
        ("/api/session", {"id": "s1"}),
        ("/api/users", {"order_by": "traces DESC"}),
        ("/api/user", {"id": "alice"}),
        ("/api/versions", {}),
        ("/api/traces", {"filter": "trace.status = 'ERROR'"}),
    ],
)
def test_reads_over_their_budget_finish_in_the_thread_pool(
    store_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    params: dict[str, str],
) -> None:
    # Quick reads run inline on the event loop; one whose SQL outlives the budget is
    # interrupted and run again in the thread pool, with the same answer. PostgreSQL
    # has no progress handler to interrupt a read: its readers always run in the pool.
    hop_first = backend != "sqlite"
    from sessiontrace.server import _app

    _seed()
    hops: list[object] = []
    run_sync = _app.anyio.to_thread.run_sync

    async def counting(fn: Any, *args: Any) -> Any:
        hops.append(fn)
        return await run_sync(fn, *args)

    monkeypatch.setattr(_app.anyio.to_thread, "run_sync", counting)
    with app_client(create_app()) as c:
        inline = c.get(path, params=params)
    assert inline.status_code == 200 and len(hops) == hop_first
    monkeypatch.setattr(_app, "_INLINE_BUDGET_SECONDS", -1.0)  # over budget at once
    monkeypatch.setattr(_app, "_PROGRESS_STEPS", 1)  # and told so at the first step
    with app_client(create_app()) as c:
        pooled = c.get(path, params=params)
    assert pooled.status_code == 200 and len(hops) == 1 + hop_first
    clock = {"since_ms", "until_ms"}  # the user report's window ends "now"
    assert {k: v for k, v in pooled.json().items() if k not in clock} == {
        k: v for k, v in inline.json().items() if k not in clock
    }


def test_trace_detail(client: httpx.Client) -> None:
    ids = _seed()
    r = client.get("/api/trace", params={"id": ids[1]})
    assert r.status_code == 200
    trace = r.json()
    assert trace["info"]["state"] == "ERROR"
    assert [s["name"] for s in trace["data"]["spans"]] == ["wrap", "chat"]
    assert trace["data"]["spans"][1]["status_message"] == "RuntimeError: boom"
    assert client.get("/api/trace", params={"id": "tr-missing"}).status_code == 404


def test_untrusted_content_is_only_ever_json(client: httpx.Client) -> None:
    ids = _seed()
    r = client.get("/api/trace", params={"id": ids[2]})
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert json.loads(r.text)["data"]["spans"][0]["inputs"]["message"].startswith("<script>")


def test_every_page_is_the_shell_with_a_strict_csp(client: httpx.Client) -> None:
    for path in ("/", "/traces", "/trace", "/sessions", "/session", "/users", "/user", "/versions"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert (
            "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        )
        assert "frame-ancestors 'none'" in csp
        assert '<script type="module" src="/static/app.js"></script>' in r.text
        if path == "/":  # the first page sets the CSRF cookie; later ones keep it
            assert "sessiontrace_csrf=" in r.headers["set-cookie"]
        else:
            assert "set-cookie" not in r.headers
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200


def test_only_loopback_host_headers_by_default(client: httpx.Client) -> None:
    r = client.get("/api/traces", headers={"host": "evil.example"})
    assert r.status_code == 400
    assert client.get("/api/traces", headers={"host": "127.0.0.1:5000"}).status_code == 200
    assert client.get("/api/traces", headers={"host": "[::1]:5000"}).status_code == 200


def test_tag_edits_need_the_csrf_token(client: httpx.Client) -> None:
    ids = _seed()
    body = {"trace_id": ids[0], "key": "fb", "value": "up"}
    assert client.put("/api/trace/tags", json=body).status_code == 403  # no token at all
    client.get("/sessions")
    token = client.cookies["sessiontrace_csrf"]
    wrong = {"X-CSRF-Token": token + "x"}
    assert client.put("/api/trace/tags", json=body, headers=wrong).status_code == 403
    good = {"X-CSRF-Token": token}
    cross = {**good, "Origin": "http://evil.example"}
    assert client.put("/api/trace/tags", json=body, headers=cross).status_code == 403
    site = {**good, "Sec-Fetch-Site": "same-site"}  # another port on localhost
    assert client.put("/api/trace/tags", json=body, headers=site).status_code == 403
    trace = sessiontrace.get_trace(ids[0])
    assert trace is not None and "fb" not in trace.info.tags

    same = {**good, "Origin": "http://localhost"}
    r = client.put("/api/trace/tags", json=body, headers=same)
    assert r.status_code == 200, r.text
    trace = sessiontrace.get_trace(ids[0])
    assert trace is not None and trace.info.tags["fb"] == "up"
    r = client.request(
        "DELETE", "/api/trace/tags", json={"trace_id": ids[0], "key": "fb"}, headers=good
    )
    assert r.status_code == 200
    trace = sessiontrace.get_trace(ids[0])
    assert trace is not None and "fb" not in trace.info.tags

    missing = {"trace_id": "tr-missing", "key": "k", "value": "v"}
    assert client.put("/api/trace/tags", json=missing, headers=good).status_code == 404
    bad = {"trace_id": ids[0], "key": "", "value": "v"}
    assert client.put("/api/trace/tags", json=bad, headers=good).status_code == 400
    assert client.put("/api/trace/tags", content=b"{", headers=good).status_code == 400


def test_token_login_link_is_one_time_and_sets_an_httponly_cookie(store_path: Path) -> None:
    app = create_app(token=TOKEN)
    with app_client(app) as c:
        assert c.get("/api/traces").status_code == 401
        assert c.get("/sessions").status_code == 401
        assert c.get("/static/app.js").status_code == 200  # assets are not secret
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/api/traces", headers=bearer).status_code == 200
        assert c.post("/api/login-links").status_code in (401, 403)

        url = c.post("/api/login-links", headers=bearer).json()["url"]
        r = c.get(url)
        assert r.status_code == 303 and r.headers["location"] == "/sessions"
        cookie = r.headers["set-cookie"]
        assert "sessiontrace_session=" in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert c.get("/sessions").status_code == 200
        assert c.get("/api/sessions").status_code == 200

    with app_client(app) as other:  # a second browser cannot reuse the link
        assert other.get(url).status_code == 403
        assert other.get("/api/sessions").status_code == 401
        assert other.get("/login?code=guess").status_code == 403


def test_short_tokens_are_refused(store_path: Path) -> None:
    with pytest.raises(ValueError, match="16"):
        create_app(token="short")


def test_public_bind_needs_a_token(store_path: Path) -> None:
    from sessiontrace.server import serve

    with pytest.raises(ValueError, match="token"):
        serve(db=store_path, host="0.0.0.0", port=1)


def test_cli_refuses_public_bind_without_token(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sessiontrace.__main__ import main

    assert main(["ui", "--db", str(store_path), "--host", "0.0.0.0", "--token", ""]) == 2
    assert "without a token" in capsys.readouterr().err
    assert main(["--db", str(store_path), "ui", "--host", "::", "--token", "short"]) == 2
    assert "16 characters" in capsys.readouterr().err


def test_reader_paths_behave_as_routes_head_other_methods_and_a_mount(
    client: httpx.Client,
) -> None:
    # GETs of the readers skip Starlette's router; everything else must still get
    # what the routes give: HEAD answered, other methods 405, the security headers.
    _seed()
    got = client.get("/api/sessions")
    assert got.status_code == 200 and got.json()["sessions"]
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["cache-control"] == "no-store"
    assert int(got.headers["content-length"]) == len(got.content)
    head = client.head("/api/sessions")
    assert head.status_code == 200 and head.content == b""
    assert client.post("/api/sessions").status_code in (403, 405)  # CSRF first, or 405
    assert client.request("PATCH", "/api/sessions").status_code in (403, 405)
    assert client.get("/api/session").status_code == 400  # the reader's own error

    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = create_app()
    # Starlette runs no lifespan of a mounted app: the outer app's runs the inner's.
    outer = Starlette(
        routes=[Mount("/traces-ui", app=inner)],
        lifespan=lambda _: inner.router.lifespan_context(inner),
    )
    with app_client(outer) as mounted:
        r = mounted.get("/traces-ui/api/sessions")
        assert r.status_code == 200
        assert r.json()["sessions"] == got.json()["sessions"]
        assert mounted.get("/traces-ui/api/nothing-here").status_code == 404


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="ab=&%+ ;é2F", max_size=6),
            st.text(alphabet="ab=&%+ ;é2F", max_size=6),
        ),
        max_size=4,
    ),
    st.text(alphabet="ab=&%+;é2F", max_size=12),
)
def test_query_parameters_read_as_starlette_reads_them(
    pairs: list[tuple[str, str]], raw: str
) -> None:
    # The readers' own parser must agree with Starlette's QueryParams on every query
    # string: encoded ones (its fast path skips those) and raw, odd ones alike.
    from starlette.datastructures import QueryParams

    from sessiontrace.server._app import _Params

    for query in (urlencode(pairs), raw):
        encoded = query.encode("utf-8")
        theirs = QueryParams(encoded.decode("latin-1"))
        ours = _Params(encoded)
        for name in {*theirs.keys(), "a", "b", ""}:
            assert ours.get(name) == theirs.get(name), (query, name)
            assert ours.getlist(name) == theirs.getlist(name), (query, name)


def test_shutdown_closes_the_app_stores(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The readers' and the writer's connections (every thread's) end with the app,
    # not when the stores are collected.
    from sessiontrace.server import _app

    opened: list[Any] = []
    closed: list[Any] = []
    open_location = _app.open_location

    def spying(location: Any) -> Any:
        store = open_location(location)
        close = store.close
        monkeypatch.setattr(store, "close", lambda: (closed.append(store), close())[1])
        opened.append(store)
        return store

    monkeypatch.setattr(_app, "open_location", spying)
    _seed()
    with app_client(create_app()) as c:
        assert c.get("/api/sessions").status_code == 200
        assert c.put("/api/trace/tags", json={}).status_code == 403
        assert len(opened) == 2 and closed == []
    assert closed == opened
