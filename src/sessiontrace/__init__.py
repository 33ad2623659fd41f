"""sessiontrace: who did what, in which conversation.

User- and session-aware tracing for LLM chat apps, MLflow-3-compatible metadata,
recorded to an embedded SQLite store by default.

>>> import sessiontrace
>>> @sessiontrace.trace
... def chat(message: str) -> str: ...
>>> with sessiontrace.user_session(user_id="user-456", session_id="session-123"):
...     chat("Hello")

Where things live:

- ``_context``, ``middleware/``: who is asking (user, session, request id);
- ``_tracing``: ``trace``, ``start_span``, live spans; a finished trace becomes a record;
- ``_records``: ``TraceRecord``, ``SpanRecord``, ``TagChange``, ``AssessmentChange``:
  what gets written;
- ``_assessments``: feedback and expectations (MLflow's entities);
  ``_feedback_api``: ``log_feedback`` and its siblings;
- ``_pipeline``: the queue and its writer thread, handing batches of records to a sink;
- ``_store/``: where traces are written and read back (``_rows``: the rows every SQL
  backend writes); ``_export/``: sinks that send records elsewhere (our HTTP wire,
  OTLP); ``_otlp/``: the OTLP mapping both ways (``_encode``, ``_decode``, ``_keys``);
- ``_runtime``: settings, and the pipeline, pricing and store wired together on first use;
- ``_search/``: where a filter becomes SQL; ``_analytics``: reports over a store;
- ``llm/``: autolog for the OpenAI and Anthropic SDKs, and pricing (on the writer thread);
- ``feedback/``: the endpoint a chat front end posts its users' feedback to;
- ``bridges/``: other tracers (MLflow, OpenTelemetry, OpenInference, Openlayer) get the
  request's ids; ``logging``: the ids in log records; ``propagation``: the ids sent on
  to other services (opt-in);
- ``server/``: the UI, its JSON API and the ingest endpoints (ours, OTLP's
  ``/v1/traces``); ``__main__``: the CLI.

Writes flow one way, tracing -> records -> pipeline -> sinks: the records, the
pipeline, the stores, the exporters, pricing and ingest never import tracing or the
runtime, and no modules import each other in a circle (``tests/test_layering.py``).
"""

from ._analytics import (
    DailyActivity,
    DailyFeedback,
    FeedbackStats,
    MetadataValueSummary,
    ModelSummary,
    SessionSummary,
    SessionTurn,
    UserReport,
    UserSummary,
    feedback_over_time,
    get_session_summary,
    list_sessions,
    list_users,
    metadata_breakdown,
    model_breakdown,
    session_flow,
    user_report,
)
from ._assessments import (
    Assessment,
    AssessmentError,
    AssessmentNotFoundError,
    AssessmentSource,
    AssessmentSourceType,
    Expectation,
    Feedback,
)
from ._config import Settings
from ._context import (
    ContextThreadPoolExecutor,
    clear_user_session_context,
    get_user_session_context,
    set_user_session_context,
    user_session,
    wrap_with_context,
)
from ._entities import (
    Span,
    SpanEvent,
    SpanStatus,
    SpanType,
    Trace,
    TraceData,
    TraceInfo,
    TraceState,
)
from ._export._otlp import OTLPTarget
from ._feedback_api import (
    delete_assessment,
    get_assessment,
    log_expectation,
    log_feedback,
    override_feedback,
    update_assessment,
)
from ._runtime import configure, flush, get_stats, get_trace
from ._search import FilterSyntaxError, Page, TraceList, search_traces
from ._store import SQLiteStore, TraceNotFoundError
from ._tracing import (
    LiveSpan,
    delete_trace_tag,
    get_current_active_span,
    get_last_active_trace_id,
    set_trace_tag,
    start_span,
    trace,
    update_current_trace,
    update_trace_user_session,
)
from ._version import __version__
from .feedback import feedback_app, feedback_wsgi_app
from .llm._autolog import autolog
from .llm._pricing import set_model_price
from .middleware import ASGIMiddleware, WSGIMiddleware

# Public modules reached as attributes (sessiontrace.openai.autolog()); neither
# imports its SDK until autolog() is called.
from . import anthropic as anthropic  # isort: skip
from . import openai as openai  # isort: skip

# sessiontrace.bridges.enable("mlflow"), sessiontrace.logging.ContextFilter(),
# sessiontrace.propagation.outgoing_headers(): none imports a third-party package.
from . import bridges as bridges  # isort: skip
from . import logging as logging  # isort: skip
from . import propagation as propagation  # isort: skip

__all__ = [
    "ASGIMiddleware",
    "Assessment",
    "AssessmentError",
    "AssessmentNotFoundError",
    "AssessmentSource",
    "AssessmentSourceType",
    "ContextThreadPoolExecutor",
    "DailyActivity",
    "DailyFeedback",
    "Expectation",
    "Feedback",
    "FeedbackStats",
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
    "delete_assessment",
    "delete_trace_tag",
    "feedback_app",
    "feedback_over_time",
    "feedback_wsgi_app",
    "flush",
    "get_assessment",
    "get_current_active_span",
    "get_last_active_trace_id",
    "get_session_summary",
    "get_stats",
    "get_trace",
    "get_user_session_context",
    "list_sessions",
    "list_users",
    "log_expectation",
    "log_feedback",
    "metadata_breakdown",
    "model_breakdown",
    "override_feedback",
    "search_traces",
    "session_flow",
    "set_model_price",
    "set_trace_tag",
    "set_user_session_context",
    "start_span",
    "trace",
    "update_assessment",
    "update_current_trace",
    "update_trace_user_session",
    "user_report",
    "user_session",
    "wrap_with_context",
]
