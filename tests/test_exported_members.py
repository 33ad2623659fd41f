"""The public surface is deliberate: every change to it shows up in this test."""

from __future__ import annotations

import types

import sessiontrace

PUBLIC = [
    "ASGIMiddleware",
    "ContextThreadPoolExecutor",
    "DailyActivity",
    "FilterSyntaxError",
    "LiveSpan",
    "MetadataValueSummary",
    "ModelSummary",
    "OTLPTarget",
    "Page",
    "SQLiteStore",
    "SessionSummary",
    "SessionTurn",
    "Settings",
    "Span",
    "SpanEvent",
    "SpanStatus",
    "SpanType",
    "Trace",
    "TraceData",
    "TraceInfo",
    "TraceList",
    "TraceNotFoundError",
    "TraceState",
    "UserReport",
    "UserSummary",
    "WSGIMiddleware",
    "__version__",
    "autolog",
    "clear_user_session_context",
    "configure",
    "delete_trace_tag",
    "flush",
    "get_current_active_span",
    "get_last_active_trace_id",
    "get_session_summary",
    "get_stats",
    "get_trace",
    "get_user_session_context",
    "list_sessions",
    "list_users",
    "metadata_breakdown",
    "model_breakdown",
    "search_traces",
    "session_flow",
    "set_model_price",
    "set_trace_tag",
    "set_user_session_context",
    "start_span",
    "trace",
    "update_current_trace",
    "update_trace_user_session",
    "user_report",
    "user_session",
    "wrap_with_context",
]


def test_all_is_exactly_the_public_surface() -> None:
    assert sessiontrace.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC


def test_every_exported_name_resolves_and_public_callables_are_documented() -> None:
    for name in sessiontrace.__all__:
        member = getattr(sessiontrace, name)
        if callable(member) and not name.startswith("_"):
            assert (member.__doc__ or "").strip(), f"{name} has no docstring"


def test_nothing_else_public_leaks_from_the_package() -> None:
    # Submodules (middleware, server, testing, ...) appear once imported; they are
    # reached as modules, not re-exported names.
    public = {
        name
        for name, value in vars(sessiontrace).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(PUBLIC) == set()
