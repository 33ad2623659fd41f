"""The middleware's entry primitive carries the client's request id to every trace."""

from __future__ import annotations

import sessiontrace
from sessiontrace._context import _reset_request_context, _set_request_context


def _traced() -> str:
    @sessiontrace.trace
    def work() -> str:
        return "ok"

    work()
    trace_id = sessiontrace.get_last_active_trace_id()
    assert trace_id is not None
    return trace_id


def test_request_id_reaches_traces_and_nested_user_session_keeps_it() -> None:
    token = _set_request_context("user-1", "session-1", "req-42")
    try:
        first = _traced()
        with sessiontrace.user_session(user_id="user-2"):
            nested = _traced()
    finally:
        _reset_request_context(token)
    after = _traced()
    infos = {t.info.trace_id: t.info for t in map(sessiontrace.get_trace, (first, nested, after))}
    assert infos[first].client_request_id == "req-42"
    assert infos[first].trace_metadata["mlflow.trace.user"] == "user-1"
    assert infos[nested].client_request_id == "req-42"
    assert infos[nested].trace_metadata["mlflow.trace.user"] == "user-2"
    assert infos[after].client_request_id is None
    assert "mlflow.trace.user" not in infos[after].trace_metadata
