"""Search and analytics give the same answers on SQLite and PostgreSQL.

The traces are written once, through the SDK, into a SQLite store; PostgreSQL gets
the same rows, so any difference is the SQL's (the dialect's), not the writers'.
Each test asks both stores the same question and compares the whole answers.
The divergences the dialect documents are asserted as such, at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiontrace
from sessiontrace import FilterSyntaxError, _runtime, _tracing
from sessiontrace._analytics import (
    daily_activity,
    feedback_over_time,
    get_session_summary,
    list_sessions,
    list_users,
    metadata_breakdown,
    model_breakdown,
    session_flow,
    user_report,
)
from sessiontrace._search import parse_filter, search_traces
from sessiontrace._store import SQLiteStore

psycopg = pytest.importorskip("psycopg")

from sessiontrace._store._postgres import PostgresStore  # noqa: E402

from ._copy import copy_rows  # noqa: E402

BASE_MS = 1_765_584_000_000  # 2025-12-13 00:00 UTC: days straddle UTC midnight
DAY_MS = 86_400_000
NOW_MS = BASE_MS + 6 * DAY_MS
USAGE = "mlflow.chat.tokenUsage"
NAMES = ["chat", "Chat", "CHAT-2", "a\\b", "x*y", "100%", "under_score", "Émile", "émile", "wordy"]
MODELS = [("gpt-4o-mini", "openai", 0.0002), ("claude-x", "anthropic", None), (None, None, None)]


def _write_traces(clock: dict[str, int]) -> None:
    """About 150 traces: 18 sessions of 10 users (two sessions shared), traces without
    a user or session, errors, tags set later, LLM calls priced and not, span
    attributes of every JSON type, names full of LIKE and GLOB metacharacters, and
    feedback: booleans, numbers, strings, overridden values and expectations."""
    rng = random.Random(12)
    users = [f"user-{i}" for i in range(8)] + ["User-0", "_u"]
    later_tags: list[str] = []
    all_ids: list[str] = []

    def app(n: int, user: str | None, session: str | None) -> None:
        metadata = {"app_version": rng.choice(["1.0", "1.1", "2.0"]), "environment": "prod"}
        if user is not None:
            metadata["mlflow.trace.user"] = user
        if session is not None:
            metadata["mlflow.trace.session"] = session
        tags = {"query_category": rng.choice(["chat", "search"])} if n % 5 else None
        sessiontrace.update_current_trace(metadata=metadata, tags=tags)
        attributes: dict[str, Any] = {
            "model": rng.choice(["m-1", "m-2"]),
            "n": n % 7,
            "ratio": rng.choice([0.5, 1.25, 100.0]),
            "flag": n % 2 == 0,
            "label": rng.choice(["x\\y", "a_b", "50%"]),
        }
        if n % 13 == 4:  # an escaped NUL, which PostgreSQL's text cannot hold
            attributes["raw"] = "nul\x00byte"
        model, provider, cost = MODELS[n % len(MODELS)]
        if n % 3 != 2:  # an LLM call, two in three traces
            attributes[USAGE] = {"input_tokens": n, "output_tokens": 2 * n, "total_tokens": 3 * n}
            if model is not None:
                attributes["mlflow.llm.model"] = model
                attributes["mlflow.llm.provider"] = provider
            if cost is not None:
                attributes["mlflow.llm.cost"] = {"total_cost": cost * n}
        with sessiontrace.start_span("step", span_type="LLM", attributes=attributes):
            clock["ns"] += rng.randint(1, 2_000) * 1_000_000
        if rng.random() < 0.2:
            raise RuntimeError("model timed out")

    plans: list[tuple[str | None, str | None, int]] = []
    for s in range(18):
        owner = users[s % len(users)]
        start = BASE_MS + rng.randrange(6 * DAY_MS)
        for turn in range(rng.randint(1, 9)):
            user: str | None = owner
            if s in (2, 5) and turn % 2:  # sessions shared by two users
                user = users[(s + 1) % len(users)]
            if s == 7 and turn == 1:
                user = None
            start += rng.randint(2_000, 3_600_000)
            plans.append((user, f"session-{s:02d}", start))
    for i in range(20):
        plans.append((rng.choice(users) if i % 4 else None, None, BASE_MS + rng.randrange(DAY_MS)))
    plans.sort(key=lambda p: p[2])
    for n, (user, session, start) in enumerate(plans):
        clock["ns"] = start * 1_000_000
        traced = sessiontrace.trace(name=NAMES[n % len(NAMES)])(app)
        with contextlib.suppress(RuntimeError):
            traced(n, user, session)
        if n % 11 == 0:
            later_tags.append(sessiontrace.get_last_active_trace_id() or "")
        all_ids.append(sessiontrace.get_last_active_trace_id() or "")
    assert sessiontrace.flush(30)
    for k, trace_id in enumerate(later_tags):  # tags changed after writing: rows, not JSON
        sessiontrace.set_trace_tag(trace_id, "reviewed", "yes" if k % 2 else "no")
    _log_assessments(all_ids, rng)
    assert sessiontrace.flush(30)


def _log_assessments(trace_ids: list[str], rng: random.Random) -> None:
    """Feedback of every value type on some traces, some overridden, and expectations."""
    for k, trace_id in enumerate(trace_ids):
        if k % 3 == 0:
            fb = sessiontrace.log_feedback(trace_id=trace_id, name="thumbs_up", value=k % 2 == 0)
            if k % 9 == 0:
                sessiontrace.override_feedback(
                    trace_id=trace_id, assessment_id=fb.assessment_id, value=k % 2 == 1
                )
        if k % 5 == 1:
            sessiontrace.log_feedback(
                trace_id=trace_id, name="score", value=rng.choice([0.2, 3, 4.5])
            )
        if k % 7 == 2:
            sessiontrace.log_feedback(
                trace_id=trace_id,
                name="comment",
                value=rng.choice(["great", "bad 50%", "a_b", "Ünï"]),
            )
        if k % 4 == 3:
            sessiontrace.log_expectation(trace_id=trace_id, name="expected", value="Paris")


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("differential") / "traces.db"
    clock = {"ns": BASE_MS * 1_000_000}
    counter = itertools.count(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_tracing.clock, "ns", lambda: clock["ns"])
        mp.setitem(
            _tracing.ids, "trace", lambda: f"tr-{clock['ns'] // 1_000_000:012x}{next(counter):08x}"
        )
        sessiontrace.configure(tracking_uri=f"sqlite:///{path}", flush_interval=0.01)
        try:
            _write_traces(clock)
        finally:
            _runtime.reset_for_tests()
    return path


@pytest.fixture
def stores(sqlite_path: Path, postgres_uri: str) -> Iterator[tuple[Any, Any]]:
    """(SQLite, PostgreSQL) holding the same rows. PostgreSQL's session runs in Los
    Angeles time: day buckets must not follow it."""
    pg = PostgresStore(postgres_uri)
    pg.count_traces()  # creates the store's schema
    copy_rows(str(sqlite_path), postgres_uri)
    pg.connection().execute("SELECT set_config('TimeZone', ?, false)", ("America/Los_Angeles",))
    lite = SQLiteStore(sqlite_path)
    try:
        yield lite, pg
    finally:
        lite.close()
        pg.close()


def same(stores: tuple[Any, Any], call: Callable[[Any], Any]) -> Any:
    """``call``'s answer on SQLite, after checking PostgreSQL's is the same (floats to
    12 digits: the engines add a group's costs in different orders)."""
    lite, pg = stores
    expected = call(lite)
    assert _plain(call(pg)) == _plain(expected)
    return expected


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def _dicts(items: Any) -> list[Any]:
    return [i.to_dict() for i in items]


FILTERS = [
    None,
    "user = 'user-1'",
    "user != 'user-1'",
    "session = 'session-03'",
    "trace.timestamp_ms < 1765700000000",
    "trace.execution_time_ms >= 500",
    "status = 'ERROR'",
    "status IN ('OK', 'ERROR')",
    "status NOT IN ('OK')",
    "user IN ('user-1', 'User-0', '_u')",
    "user NOT IN ('user-1')",
    "user IS NULL",
    "session IS NOT NULL",
    "tag.query_category = 'chat'",
    "tag.query_category != 'chat'",
    "tag.query_category IS NULL",
    "tag.reviewed IS NOT NULL",
    "tag.reviewed IN ('yes')",
    "metadata.app_version = '1.1'",
    "metadata.app_version IN ('1.0', '2.0') AND user = 'user-2'",
    "metadata.app_version NOT IN ('1.0')",
    "name LIKE 'chat%'",
    "name LIKE 'c_at'",
    "name LIKE '%\\%'",
    "name LIKE 'x*y'",
    "name LIKE '100%'",
    "name LIKE '%\\_%'",
    "name LIKE 'under_score'",
    "name ILIKE 'chat%'",
    "name ILIKE '%SCORE'",
    "user LIKE 'user-%'",
    "user ILIKE 'USER-0'",
    "name RLIKE '^[Cc]hat'",
    "name RLIKE '\\d'",
    "name RLIKE '(?i)^chat'",
    "name RLIKE '\\bchat\\b'",
    "name RLIKE 'word\\B'",
    "name RLIKE 'a\\\\b'",
    "name RLIKE '^.{4}$'",
    "NOT user = 'user-1'",
    "NOT tag.query_category = 'chat'",
    "user = 'user-1' OR tag.query_category = 'search'",
    "(user = 'user-1' OR user = 'user-2') AND NOT status = 'OK'",
    "NOT (name LIKE 'c%' OR name RLIKE 'x')",
    "span.name = 'step'",
    "span.type = 'LLM'",
    "span.model = 'gpt-4o-mini'",
    "span.total_tokens > 30",
    "span.cost < 0.001",
    "span.attributes.model = 'm-1'",
    "span.attributes.model != 'm-1'",
    "span.attributes.model IN ('m-2')",
    "span.attributes.n = '3'",
    "span.attributes.n LIKE '1%'",
    "span.attributes.ratio = '0.5'",
    "span.attributes.ratio = '100.0'",
    "span.attributes.label LIKE '%\\%'",
    "span.attributes.label LIKE '50%'",
    "span.attributes.label ILIKE 'A_B'",
    "span.attributes.label RLIKE '^x.y$'",
    "span.attributes.missing = 'x'",
    "total_tokens > 30",
    "total_tokens < 20",
    "cost > 0.001",
    "cost IS NULL",
    "llm_calls = 0",
    "unpriced_calls >= 1",
    "feedback.thumbs_up = true",
    "feedback.thumbs_up = false AND user = 'user-1'",
    "feedback.thumbs_up != true",
    "feedback.thumbs_up = 'false'",
    "feedback.thumbs_up IS NULL",
    "feedback.score > 1",
    "feedback.score <= 3",
    "feedback.score = '4.5'",
    "feedback.comment = 'great'",
    "feedback.comment LIKE '%50%'",
    "feedback.comment LIKE 'a_b'",
    "feedback.comment ILIKE 'GREAT'",
    "feedback.comment RLIKE '^b.d'",
    "expectation.expected = 'Paris'",
    "expectation.expected IS NOT NULL OR feedback.thumbs_up = true",
    "NOT feedback.thumbs_up = true",
]


@pytest.mark.parametrize("text", FILTERS)
def test_search_traces_matches(stores: tuple[Any, Any], text: str | None) -> None:
    found = same(
        stores,
        lambda s: _dicts(
            search_traces(text, return_type="list", store=s, order_by=["timestamp ASC"])
        ),
    )
    assert found or "missing" in (text or "")  # each filter of the corpus finds traces


@pytest.mark.parametrize(
    "order_by",
    [None, ["timestamp ASC"], ["status DESC"], ["trace.name"], ["metadata.app_version DESC"]],
)
def test_search_pages_match(stores: tuple[Any, Any], order_by: list[str] | None) -> None:
    def pages(store: Any) -> list[Any]:
        out, token = [], None
        while True:
            page = search_traces(
                "status != 'IN_PROGRESS'",
                order_by=order_by,
                max_results=9,
                page_token=token,
                return_type="list",
                include_spans=False,
                store=store,
            )
            out.append([t.info.trace_id for t in page])
            token = page.next_page_token
            if token is None:
                return out

    assert len(same(stores, pages)) > 3


SESSION_KEYS = [
    "last_seen", "first_seen", "turns", "errors", "total_duration_ms", "mean_duration_ms",
    "session_id", "cost", "total_tokens", "input_tokens", "output_tokens", "llm_calls",
    "unpriced_calls", "feedback_count", "negative_feedback", "satisfaction",
]  # fmt: skip
USER_KEYS = [
    "last_seen", "first_seen", "traces", "sessions", "errors", "mean_latency_ms", "user_id",
    "cost", "total_tokens", "input_tokens", "output_tokens", "llm_calls", "unpriced_calls",
    "feedback_count", "negative_feedback", "satisfaction",
]  # fmt: skip


def _all_pages(fn: Callable[..., Any], store: Any, **kwargs: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = fn(max_results=4, page_token=token, store=store, **kwargs)
        out.append(_dicts(page))
        token = page.next_page_token
        if token is None:
            return out


@pytest.mark.parametrize("key", SESSION_KEYS)
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_list_sessions_matches(stores: tuple[Any, Any], key: str, direction: str) -> None:
    same(stores, lambda s: _all_pages(list_sessions, s, order_by=f"{key} {direction}"))


@pytest.mark.parametrize("key", USER_KEYS)
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_list_users_matches(stores: tuple[Any, Any], key: str, direction: str) -> None:
    same(stores, lambda s: _all_pages(list_users, s, order_by=f"{key} {direction}"))


@pytest.mark.parametrize(
    "text", [None, "tag.query_category = 'chat'", "NOT status = 'OK'", "name RLIKE '^c'"]
)
def test_default_pages_with_filters_match(stores: tuple[Any, Any], text: str | None) -> None:
    sessions = same(stores, lambda s: _all_pages(list_sessions, s, filter_string=text))
    same(stores, lambda s: _all_pages(list_users, s, filter_string=text))
    assert sessions[0]


def test_sessions_match(stores: tuple[Any, Any]) -> None:
    for n in [*range(18), 99]:
        session = f"session-{n:02d}"
        same(stores, lambda s, sid=session: get_session_summary(sid, store=s))
        same(stores, lambda s, sid=session: _dicts(session_flow(sid, store=s)))


@pytest.mark.parametrize("days", [1, 3, 7, None])
def test_user_reports_match_in_utc_days(stores: tuple[Any, Any], days: int | None) -> None:
    for user in [*(f"user-{i}" for i in range(8)), "User-0", "_u", "nobody"]:
        report = same(stores, lambda s, u=user: user_report(u, days, now_ms=NOW_MS, store=s))
        if report is not None and days is None:
            assert report.daily_activity[0].date >= "2025-12-13"


@pytest.mark.parametrize("text", [None, "user = 'user-1'", "name RLIKE 'a'"])
def test_daily_activity_matches(stores: tuple[Any, Any], text: str | None) -> None:
    days = same(stores, lambda s: daily_activity(text, days=10, now_ms=NOW_MS, store=s))
    assert days


@pytest.mark.parametrize("key", ["app_version", "environment", "mlflow.trace.user", "nope"])
@pytest.mark.parametrize(
    "order_by",
    [
        None, "traces", "users DESC", "errors", "mean_latency_ms", "first_seen",
        "last_seen ASC", "cost DESC", "total_tokens", "llm_calls", "unpriced_calls",
        "feedback_count", "negative_feedback ASC", "satisfaction", "satisfaction ASC",
    ],
)  # fmt: skip
def test_metadata_breakdown_matches(
    stores: tuple[Any, Any], key: str, order_by: str | None
) -> None:
    same(stores, lambda s: metadata_breakdown(key, order_by=order_by, store=s))
    same(stores, lambda s: metadata_breakdown(key, "status = 'OK'", order_by=order_by, store=s))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"days": 3, "now_ms": NOW_MS},
        {"user_id": "user-1"},
        {"metadata_key": "app_version"},
        {"metadata_key": "mlflow.trace.user", "name": "thumbs_up"},
        {"metadata_key": "mlflow.trace.session", "filter_string": "status = 'OK'"},
        {"name": "score", "filter_string": "name ILIKE '%a%'"},
    ],
)
def test_feedback_over_time_matches(stores: tuple[Any, Any], kwargs: dict[str, Any]) -> None:
    assert same(stores, lambda s: feedback_over_time(store=s, **kwargs))


def test_feedback_is_in_the_data_set(stores: tuple[Any, Any]) -> None:
    worst = same(stores, lambda s: list_sessions(order_by="satisfaction ASC", store=s))
    assert worst.items[0].satisfaction is not None and worst.items[0].satisfaction < 1
    assert worst.items[0].feedback["thumbs_up"].negative
    scores = [s.feedback["score"].mean for s in worst if "score" in s.feedback]
    assert scores and any(m != round(m) for m in scores)


@pytest.mark.parametrize(
    "order_by",
    [
        None, "llm_calls", "traces", "users", "cost", "total_tokens", "input_tokens",
        "output_tokens", "unpriced_calls", "model ASC",
    ],
)  # fmt: skip
def test_model_breakdown_matches(stores: tuple[Any, Any], order_by: str | None) -> None:
    assert same(stores, lambda s: model_breakdown(order_by=order_by, store=s))
    same(stores, lambda s: model_breakdown("user = 'user-3'", order_by=order_by, store=s))


# -- documented divergences -------------------------------------------------------------


def _ids(store: Any, text: str) -> list[str]:
    traces = search_traces(text, return_type="list", include_spans=False, store=store)
    return [t.info.trace_id for t in traces]


def test_boolean_span_attributes_read_as_each_engine_writes_them(
    stores: tuple[Any, Any],
) -> None:
    lite, pg = stores
    even = _ids(lite, "span.attributes.flag = '1'")
    assert even
    assert _ids(pg, "span.attributes.flag = 'true'") == even
    assert _ids(lite, "span.attributes.flag = 'true'") == []
    assert _ids(pg, "span.attributes.flag = '1'") == []


def test_a_string_with_nul_reads_up_to_it_on_sqlite_and_with_a_replacement_on_postgresql(
    stores: tuple[Any, Any],
) -> None:
    lite, pg = stores
    with_nul = _ids(lite, "span.attributes.raw = 'nul'")
    assert with_nul
    assert _ids(pg, "span.attributes.raw = 'nul\ufffdbyte'") == with_nul
    assert _ids(pg, "span.attributes.raw = 'nul'") == []
    same(stores, lambda s: _ids(s, "span.attributes.raw LIKE 'nul%'"))


def test_non_ascii_case_folding_is_left_to_the_database(stores: tuple[Any, Any]) -> None:
    # SQLite folds ASCII only; so does a PostgreSQL database with LC_CTYPE=C (the
    # test cluster's). A database with a Unicode LC_CTYPE would also match 'Émile'.
    same(stores, lambda s: _ids(s, "name ILIKE 'é%'"))
    lite, _ = stores
    assert len(_ids(lite, "name ILIKE 'é%'")) == len(_ids(lite, "name LIKE 'é%'"))


def test_named_groups_are_refused_on_postgresql_only(stores: tuple[Any, Any]) -> None:
    lite, pg = stores
    text = "name RLIKE '(?P<word>chat)'"
    assert _ids(lite, text) == _ids(lite, "name RLIKE '(chat)'")
    with pytest.raises(FilterSyntaxError) as info:
        _ids(pg, text)
    assert info.value.position == text.index("(?P")
    with pytest.raises(FilterSyntaxError):
        list_sessions(text, store=pg)


def test_a_pattern_only_postgresql_refuses_is_a_filter_syntax_error(
    stores: tuple[Any, Any],
) -> None:
    lite, pg = stores
    text = "user = 'user-1' AND name RLIKE 'a{256}'"  # PG's repetition limit is 255
    assert _ids(lite, text) == []
    for call in (
        lambda: _ids(pg, text),
        lambda: list_sessions(text, store=pg),
        lambda: list_sessions(text, order_by="turns", store=pg),
        lambda: list_users(text, store=pg),
        lambda: metadata_breakdown("app_version", text, store=pg),
        lambda: model_breakdown(text, store=pg),
        lambda: daily_activity(text, store=pg),
    ):
        with pytest.raises(FilterSyntaxError) as info:
            call()
        assert info.value.text == text
        assert info.value.position == text.index("'a{")


# -- generated filters ---------------------------------------------------------------

_STRING_FIELDS = [
    "user", "session", "name", "status", "tag.query_category", "tag.reviewed",
    "metadata.app_version", "span.name", "span.model", "span.attributes.model",
    "span.attributes.label", "span.attributes.n",
]  # fmt: skip
_NUMBER_FIELDS = ["trace.timestamp_ms", "execution_time_ms", "total_tokens", "cost", "span.cost"]
# LIKE and ILIKE patterns: the data's letters and every metacharacter of LIKE and GLOB
_PATTERN = st.text(alphabet="%_\\*?[]acehitmouseru-0123 É", max_size=6)
_REGEX = st.sampled_from(
    ["^c", "t$", "\\d", "(?i)chat", "\\bchat\\b", "a.b", "[a-c]+", "^.{4,5}$", "x|y", "^$"]
)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@st.composite
def _comparison(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        field = draw(st.sampled_from(_NUMBER_FIELDS))
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
        value = draw(st.integers(-1, 2_000_000_000_000) | st.sampled_from([0, 1, 30, 0.001]))
        return f"{field} {op} {value}"
    field = draw(st.sampled_from(_STRING_FIELDS))
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "RLIKE", "IN", "NOT IN", "IS NULL"]))
    if op == "IS NULL":
        return f"{field} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if op in ("IN", "NOT IN"):
        values = draw(st.lists(st.sampled_from(["user-1", "chat", "m-1", "1.1", "OK"]), min_size=1))
        return f"{field} {op} ({', '.join(map(_quoted, values))})"
    value = draw(_REGEX if op == "RLIKE" else _PATTERN)
    return f"{field} {op} {_quoted(value)}"


_FILTER = st.recursive(
    _comparison(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} AND {b})", inner, inner),
        st.builds(lambda a, b: f"({a} OR {b})", inner, inner),
        st.builds(lambda a: f"NOT {a}", inner),
    ),
    max_leaves=4,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=_FILTER)
def test_generated_filters_match(stores: tuple[Any, Any], text: str) -> None:
    try:
        parse_filter(text)
    except FilterSyntaxError:  # e.g. IS NULL on a field that is never NULL
        return
    same(stores, lambda s: _ids(s, text))
