"""Helpers for testing code that uses sessiontrace.

>>> from sessiontrace.testing import capture_traces
>>> def test_chat_records_the_user():
...     with capture_traces() as captured:
...         with sessiontrace.user_session(user_id="u1"):
...             my_chat("hello")
...     assert captured.last().info.user_id == "u1"

``capture_traces(deterministic=True)`` also makes trace ids, span ids and the clock
predictable (``tr-00000000000000000000000000000001``, span ``0000000000000001``, one
millisecond per tick), so whole rows can be asserted exactly. A pytest fixture is two
lines::

    @pytest.fixture
    def traces():
        with capture_traces() as captured:
            yield captured
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import _runtime, _tracing
from ._entities import Trace

__all__ = ["TraceCapture", "capture_traces"]


class TraceCapture:
    """The traces recorded inside a ``capture_traces()`` block, oldest first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def traces(self) -> list[Trace]:
        _runtime.flush(_runtime.settings().shutdown_timeout)
        store = _runtime.get_store()
        ids = store.list_trace_ids(limit=store.count_traces())
        return store.load_traces(list(reversed(ids)))

    def last(self) -> Trace:
        traces = self.traces
        if not traces:
            raise AssertionError("no trace was recorded")
        return traces[-1]

    def __len__(self) -> int:
        return len(self.traces)


@contextmanager
def capture_traces(*, deterministic: bool = False) -> Iterator[TraceCapture]:
    """Record traces to a throw-away store for the block; restore everything after."""
    saved_ids = dict(_tracing.ids)
    saved_clock = dict(_tracing.clock)
    previous = _runtime.swap_settings(None)
    with tempfile.TemporaryDirectory(prefix="sessiontrace-") as folder:
        path = Path(folder) / "traces.db"
        try:
            _runtime.configure(tracking_uri=f"sqlite:///{path}", flush_interval=0.01)
            if deterministic:
                trace_seq = itertools.count(1)
                span_seq = itertools.count(1)
                tick = itertools.count(1)
                _tracing.ids["trace"] = lambda: f"tr-{next(trace_seq):032x}"
                _tracing.ids["span"] = lambda: f"{next(span_seq):016x}"
                _tracing.clock["ns"] = lambda: 1_700_000_000_000_000_000 + next(tick) * 1_000_000
            yield TraceCapture(path)
        finally:
            _tracing.ids.update(saved_ids)
            _tracing.clock.update(saved_clock)
            _runtime.swap_settings(previous)
