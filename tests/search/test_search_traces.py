"""search_traces against traces written through the SDK, checked against the records."""

from __future__ import annotations

import pandas as pd
import pytest

import sessiontrace
from sessiontrace import FilterSyntaxError
from sessiontrace._search import FRAME_COLUMNS

from .conftest import BASE_MS, DAY_MS, Record

pytestmark = pytest.mark.backends


def ids(result: sessiontrace.TraceList) -> list[str]:
    return [t.info.trace_id for t in result]


def newest_first(records: list[Record]) -> list[str]:
    return [
        r.trace_id for r in sorted(records, key=lambda r: (r.start_ms, r.trace_id), reverse=True)
    ]


FILTERS = [
    ("metadata.`mlflow.trace.user` = 'user-3'", lambda r: r.user == "user-3"),
    ("user = 'user-3' OR user = 'user-4'", lambda r: r.user in ("user-3", "user-4")),
    ("metadata.`mlflow.trace.session` = 'session-7'", lambda r: r.session == "session-7"),
    (
        "session = 'session-7' AND user != 'user-7'",
        lambda r: r.session == "session-7" and r.user not in (None, "user-7"),
    ),
    ("trace.status = 'ERROR'", lambda r: r.state == "ERROR"),
    ("trace.state != 'ERROR'", lambda r: r.state == "OK"),
    (f"trace.timestamp_ms > {BASE_MS + 5 * DAY_MS}", lambda r: r.start_ms > BASE_MS + 5 * DAY_MS),
    ("execution_time_ms >= 1500 AND execution_time < 2500", lambda r: 1500 <= r.duration_ms < 2500),
    ("tag.query_category = 'chat'", lambda r: r.tags.get("query_category") == "chat"),
    ("tags.query_category != 'chat'", lambda r: r.tags.get("query_category") == "search"),
    ("tag.query_category IS NULL", lambda r: "query_category" not in r.tags),
    ("tag.query_category IS NOT NULL", lambda r: "query_category" in r.tags),
    ("tags.query_category IN ('chat', 'search')", lambda r: "query_category" in r.tags),
    ("metadata.app_version = '1.1.0'", lambda r: r.app_version == "1.1.0"),
    ("metadata.app_version NOT IN ('1.1.0', '2.0.0')", lambda r: r.app_version == "1.0.0"),
    ("metadata.app_version LIKE '1.%'", lambda r: r.app_version.startswith("1.")),
    ("metadata.environment ILIKE 'STAG%'", lambda r: r.environment == "staging"),
    ("metadata.environment LIKE 'STAG%'", lambda r: False),  # LIKE is case-sensitive
    ("metadata.app_version RLIKE '^2'", lambda r: r.app_version.startswith("2")),
    ("metadata.`mlflow.trace.user` IS NULL", lambda r: r.user is None),
    ("session IS NULL", lambda r: r.session is None),
    ("span.type = 'LLM'", lambda r: r.span_type == "LLM"),
    ('span.type IN ("LLM", "RETRIEVER")', lambda r: True),
    (
        "span.name = 'retrieve' AND trace.status = 'OK'",
        lambda r: r.span_type == "RETRIEVER" and r.state == "OK",
    ),
    ("span.status = 'ERROR'", lambda r: r.state == "ERROR"),  # the failing root span
    ("span.attributes.model = 'm-1'", lambda r: True),
    ("span.attributes.model != 'm-1'", lambda r: False),
    ("trace.name = 'chat'", lambda r: True),
    (
        "NOT (user = 'user-1' OR tag.query_category = 'chat')",
        lambda r: r.user != "user-1" and r.tags.get("query_category") != "chat",
    ),
    (
        "user = 'user-2' AND metadata.app_version = '2.0.0'",
        lambda r: r.user == "user-2" and r.app_version == "2.0.0",
    ),
    ("user = 'user-2' AND tag.query_category IS NULL", lambda r: r.user == "user-2" and not r.tags),
]


@pytest.mark.parametrize(("text", "match"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filter_selects_the_same_traces_as_python(dataset: list[Record], text: str, match) -> None:  # type: ignore[no-untyped-def]
    result = sessiontrace.search_traces(filter_string=text, return_type="list", include_spans=False)
    assert ids(result) == newest_first([r for r in dataset if match(r)])


def test_order_by_and_pagination_walk_every_trace_once(dataset: list[Record]) -> None:
    for order_by, key in [
        (None, lambda r: (-r.start_ms, r.trace_id)),
        (["timestamp ASC"], lambda r: (r.start_ms, r.trace_id)),
        # not a keyset order: the token carries an offset
        (["execution_time_ms DESC"], lambda r: (-r.duration_ms, -r.start_ms, r.trace_id[::-1])),
    ]:
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = sessiontrace.search_traces(
                order_by=order_by,
                max_results=17,
                page_token=token,
                return_type="list",
                include_spans=False,
            )
            seen += ids(page)
            pages += 1
            token = page.next_page_token
            if token is None:
                break
        assert pages == -(-len(dataset) // 17)
        assert len(seen) == len(set(seen)) == len(dataset)
        sort_key = {r.trace_id: key(r) for r in dataset}
        assert [sort_key[i] for i in seen] == sorted(sort_key.values())


def test_page_token_is_tied_to_its_query(dataset: list[Record]) -> None:
    page = sessiontrace.search_traces(max_results=5, return_type="list")
    assert page.next_page_token is not None
    with pytest.raises(ValueError, match="different query"):
        sessiontrace.search_traces(filter_string="user = 'user-1'", page_token=page.next_page_token)
    with pytest.raises(ValueError, match="invalid page_token"):
        sessiontrace.search_traces(page_token="not a token!")


def test_dataframe_has_mlflow_columns_and_flattened_ones(dataset: list[Record]) -> None:
    df = sessiontrace.search_traces(
        filter_string="session = 'session-3'", order_by=["timestamp ASC"]
    )
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[: len(FRAME_COLUMNS)]) == FRAME_COLUMNS
    for column in (
        "info.execution_time_ms",
        "info.state",
        "info.request_id",
        "info.timestamp_ms",
        "metadata.mlflow.trace.session",
        "metadata.app_version",
    ):
        assert column in df.columns
    records = sorted((r for r in dataset if r.session == "session-3"), key=lambda r: r.start_ms)
    assert list(df["trace_id"]) == [r.trace_id for r in records]
    assert list(df["request_time"]) == [r.start_ms for r in records]
    assert list(df["execution_duration"]) == [r.duration_ms for r in records]
    assert list(df["info.execution_time_ms"]) == [r.duration_ms for r in records]
    assert list(df["state"]) == [r.state for r in records]
    assert list(df["request"]) == [{"message": r.message} for r in records]
    assert list(df["response"]) == [r.response for r in records]
    assert list(df["tags"]) == [r.tags for r in records]
    assert list(df["metadata.app_version"]) == [r.app_version for r in records]
    assert df["trace_metadata"].iloc[0]["mlflow.trace.session"] == "session-3"
    assert [len(s) for s in df["spans"]] == [2] * len(records)
    assert df.attrs["next_page_token"] is None


def test_empty_result_still_has_the_columns_analysis_code_reads() -> None:
    df = sessiontrace.search_traces(filter_string="user = 'nobody'")
    assert len(df) == 0
    assert "metadata.mlflow.trace.session" in df.columns
    assert df["metadata.mlflow.trace.session"].nunique() == 0


def test_without_spans_request_and_response_come_from_previews(dataset: list[Record]) -> None:
    df = sessiontrace.search_traces(max_results=3, include_spans=False)
    newest = sorted(dataset, key=lambda r: (r.start_ms, r.trace_id), reverse=True)[:3]
    assert list(df["request"]) == [{"message": r.message} for r in newest]
    assert all(s == [] for s in df["spans"])


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(FilterSyntaxError):
        sessiontrace.search_traces(filter_string="user = ")
    with pytest.raises(FilterSyntaxError):
        sessiontrace.search_traces(order_by=["sideways"])
    with pytest.raises(ValueError, match="max_results"):
        sessiontrace.search_traces(max_results=0)
    with pytest.raises(ValueError, match="return_type"):
        sessiontrace.search_traces(return_type="json")  # type: ignore[call-overload]


def test_pandas_missing_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a)
    )
    assert isinstance(sessiontrace.search_traces(), list)  # the default falls back to a list
    with pytest.raises(ImportError, match=r"pip install 'sessiontrace\[pandas\]'"):
        sessiontrace.search_traces(return_type="pandas")


def test_sql_injection_attempts_are_just_values(dataset: list[Record]) -> None:
    nasty = "x' OR '1'='1"
    escaped = nasty.replace("'", "''")
    assert sessiontrace.search_traces(filter_string=f"user = '{escaped}'", return_type="list") == []
    assert (
        sessiontrace.search_traces(
            filter_string="tag.`query_category' OR 1=1 --` = 'chat'", return_type="list"
        )
        == []
    )
    # the tables are intact
    assert len(sessiontrace.search_traces(return_type="list")) == len(dataset)


def test_traces_started_in_the_same_millisecond_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sessiontrace import _tracing

    monkeypatch.setitem(_tracing.clock, "ns", lambda: 1_765_000_000_000_000_000)

    @sessiontrace.trace
    def turn(n: int) -> int:
        sessiontrace.update_current_trace(metadata={"mlflow.trace.session": "s"})
        return n

    for n in range(5):
        turn(n)
    oldest_first = sessiontrace.search_traces(
        filter_string="session = 's'", order_by=["timestamp ASC"], return_type="list"
    )
    assert [t.data.response for t in oldest_first] == ["0", "1", "2", "3", "4"]
    newest_first = sessiontrace.search_traces(filter_string="session = 's'", return_type="list")
    assert [t.data.response for t in newest_first] == ["4", "3", "2", "1", "0"]


def test_traces_read_from_their_row_later_pickle_and_compare_like_loaded_ones(
    dataset: list[Record],
) -> None:
    # A search's traces build their spans (and a frame's traces everything) from the
    # stored row on first read: untouched ones must still pickle, copy and compare.
    import copy
    import pickle

    where = "session = 'session-3'"
    listed = sessiontrace.search_traces(where, return_type="list")
    framed = list(sessiontrace.search_traces(where, return_type="pandas")["trace"])
    assert listed and len(framed) == len(listed)
    loaded = [sessiontrace.get_trace(t.info.trace_id) for t in listed]
    for traces in (listed, framed):
        revived = pickle.loads(pickle.dumps(traces))
        assert revived == loaded
        assert [copy.copy(t) for t in traces] == loaded
        assert [t.to_dict() for t in traces] == [t.to_dict() for t in loaded if t]
    with pytest.raises(AttributeError):
        _ = framed[0].nope
    assert not hasattr(sessiontrace.search_traces(where, return_type="list")[0].data, "nope")
