"""The DataFrame built from blocks is the one ``pandas.DataFrame(columns)`` builds."""

from __future__ import annotations

import contextlib
import datetime
import math
import random
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import sessiontrace
from sessiontrace._entities import Trace, TraceData, TraceInfo
from sessiontrace._search import _frame, traces_to_frame

pytestmark = pytest.mark.backends

pd = pytest.importorskip("pandas")
if not hasattr(getattr(pd.api, "internals", None), "create_dataframe_from_blocks"):
    pytest.skip("this pandas has no block constructor", allow_module_level=True)


@pytest.fixture(params=["direct", "public"])
def block_calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the frames really built from blocks (a silent fallback would pass), with
    the blocks made directly (pandas 3) and through ``create_dataframe_from_blocks``."""
    calls: list[int] = []
    real = _frame._from_blocks

    def counting(*args: Any, **kwargs: Any) -> Any:
        frame = real(*args, **kwargs)
        calls.append(1)
        return frame

    monkeypatch.setattr(_frame, "_from_blocks", counting)
    if request.param == "public":
        monkeypatch.setattr(_frame, "_block_maker", lambda pd: None)
    elif pd.__version__.startswith("3."):
        assert _frame._block_maker(pd) is not None
    else:
        pytest.skip("blocks are made directly on pandas 3 only")
    return calls


def _reference(columns: dict[str, list[Any]]) -> Any:
    return pd.DataFrame(columns)


def assert_same_frame(fast: Any, reference: Any) -> None:
    """Equal values and dtypes, and each column in the same kind of pandas block (a
    datetime column in a generic block compares equal, then fails on assignment)."""
    pd.testing.assert_frame_equal(fast, reference)

    def block_types(df: Any) -> list[str]:
        blocks = df._mgr.blocks
        return [type(blocks[b]).__name__ for b in df._mgr.blknos]

    assert block_types(fast) == block_types(reference)


def _trace(i: int) -> Trace:
    info = TraceInfo(f"tr-{i}", 1000 + i, 5, "OK", {}, {})
    return Trace(info, TraceData([]))


_VALUE_KINDS = [
    lambda r, i: f"s{r.randrange(5)}",
    lambda r, i: None,
    lambda r, i: math.nan,
    lambda r, i: r.randrange(-(10**6), 10**6),
    lambda r, i: r.random(),
    lambda r, i: r.random() < 0.5,
    lambda r, i: {"k": r.randrange(3)},
    lambda r, i: [r.randrange(3)],
    lambda r, i: [],
    lambda r, i: _trace(i),
    lambda r, i: 2**70,
    lambda r, i: datetime.datetime(2026, 1, 1 + r.randrange(3)),  # its own block type
]


def _random_columns(rng: random.Random, rows: int) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for c in range(rng.randrange(1, 9)):
        kinds = rng.sample(range(len(_VALUE_KINDS)), rng.choice([1, 1, 1, 2, 3]))
        columns[f"c{c}"] = [_VALUE_KINDS[rng.choice(kinds)](rng, i) for i in range(rows)]
    if rng.random() < 0.5:  # the same list under two names, as info.* aliases are
        columns["alias"] = columns["c0"]
    return columns


def _cases() -> Iterator[dict[str, list[Any]]]:
    rng = random.Random(7)
    for _ in range(300):
        yield _random_columns(rng, rng.choice([1, 2, 5, 14]))


def test_random_columns_match_the_plain_constructor(block_calls: list[int]) -> None:
    checked = 0
    for columns in _cases():
        assert_same_frame(_frame.frame_from_columns(columns), _reference(columns))
        checked += 1
    assert len(block_calls) == checked  # every one went through the block path


def test_with_strings_as_objects_too(block_calls: list[int]) -> None:
    # pandas 2's behaviour (and pandas 3 with string inference off): str columns are object.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pd.option_context("future.infer_string", False):
            for columns in _cases():
                fast = _frame.frame_from_columns(columns)
                assert_same_frame(fast, _reference(columns))
    assert block_calls


def test_a_column_edited_in_place_leaves_its_alias_alone(block_calls: list[int]) -> None:
    shared = ["a", "b", None]
    times = [1, 2, 3]
    df = _frame.frame_from_columns({"x": shared, "y": shared, "t": times, "u": times})
    df.loc[0, "x"] = "changed"
    df.loc[0, "t"] = 99
    assert df["y"].tolist()[0] == "a" and df["u"].tolist()[0] == 1
    assert shared[0] == "a" and times[0] == 1
    assert block_calls


def test_frames_with_the_same_columns_do_not_share_their_column_index(
    block_calls: list[int],
) -> None:
    columns = {"trace_id": ["a", "b"], "n": [1, 2]}
    first = _frame.frame_from_columns(columns)
    first.columns.name = "renamed"
    first.columns = ["id", "m"]
    second = _frame.frame_from_columns(columns)
    assert second.columns.name is None and list(second.columns) == ["trace_id", "n"]
    assert block_calls


def test_search_traces_frame_matches_the_plain_constructor(
    block_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    @sessiontrace.trace(name="chat")
    def chat(i: int) -> Any:
        metadata = {"app_version": f"1.{i % 3}"}
        if i % 4 == 0:
            metadata["only_some"] = "x"
        sessiontrace.update_current_trace(
            metadata=metadata,
            tags={"n": str(i)} if i % 2 else {},
            client_request_id=f"req-{i}" if i % 5 == 0 else None,
        )
        with sessiontrace.start_span("llm", span_type="LLM") as span:
            span.set_attributes({"model": "m"})
            if i % 3 == 0:  # LLM calls: tokens for some traces, a cost for fewer
                span.set_attributes(
                    {
                        "mlflow.chat.tokenUsage": {"input_tokens": 10 * i, "output_tokens": i},
                        "mlflow.llm.model": "gpt-4o-mini" if i % 2 else "unknown-model",
                    }
                )
            span.add_event("token", {"i": i})
        if i == 7:
            raise ValueError("boom")
        return [{"answer": i}, "text", i, None][i % 4]

    for i in range(12):
        with (
            sessiontrace.user_session(
                user_id=f"u{i % 3}" if i % 6 else None, session_id=f"s{i % 2}"
            ),
            contextlib.suppress(ValueError),
        ):
            chat(i)
    sessiontrace.flush()
    fast = sessiontrace.search_traces(order_by=["timestamp ASC"], return_type="pandas")
    assert block_calls
    monkeypatch.setattr(pd.api.internals, "create_dataframe_from_blocks", None)
    plain = sessiontrace.search_traces(order_by=["timestamp ASC"], return_type="pandas")
    # The trace objects are fresh per search; compare them by value.
    assert_same_frame(fast.drop(columns="trace"), plain.drop(columns="trace"))
    assert [t.to_dict() for t in fast["trace"]] == [t.to_dict() for t in plain["trace"]]
    assert fast["spans"][0][1]["events"] == [
        {
            "name": "token",
            "timestamp_ns": fast["spans"][0][1]["events"][0]["timestamp_ns"],
            "attributes": {"i": 0},
        }
    ]
    assert fast.loc[7, "state"] == "ERROR" and fast["response"].tolist()[0] == {"answer": 0}
    assert fast["info.total_tokens"].tolist() == [11 * i if i % 3 == 0 else 0 for i in range(12)]
    assert fast["info.llm_calls"].tolist() == [int(i % 3 == 0) for i in range(12)]
    assert fast["info.unpriced_calls"].tolist() == [int(i % 6 == 0) for i in range(12)]
    assert str(fast["info.cost"].dtype) == "float64"
    priced = [i for i in range(12) if not math.isnan(fast["info.cost"][i])]
    assert priced == [3, 9] and fast["info.cost"][3] == pytest.approx((30 * 0.15 + 3 * 0.6) / 1e6)
    # The frame is built column by column from the rows; from Trace objects (the path
    # for rows a newer schema has not rewritten) it must come out the same.
    traces = sessiontrace.search_traces(order_by=["timestamp ASC"], return_type="list")
    from_traces = traces_to_frame(traces)
    pd.testing.assert_frame_equal(plain.drop(columns="trace"), from_traces.drop(columns="trace"))
    assert [t.to_dict() for t in fast["trace"]] == [t.to_dict() for t in traces]
    by_id = [sessiontrace.get_trace(t) for t in fast["trace_id"]]
    assert [t.to_dict() for t in fast["trace"]] == [t.to_dict() for t in by_id if t]
    assert fast["trace"][3].info.trace_metadata == fast["trace_metadata"][3]
