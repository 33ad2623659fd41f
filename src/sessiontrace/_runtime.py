"""Process-wide state: settings, the pipeline and the store, created on first use."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ._config import ENV_VARS, Settings, parse_tracking_uri
from ._metadata import SOURCE_TYPE, automatic_metadata
from ._pipeline import Pipeline, Sink
from .llm import _pricing

if TYPE_CHECKING:
    from ._entities import Trace
    from ._export._otlp import FanOut
    from ._store._base import Store

logger = logging.getLogger("sessiontrace")

__all__ = [
    "ENV_VARS",
    "base_metadata",
    "configure",
    "count_internal_error",
    "flush",
    "get_stats",
    "get_store",
    "get_trace",
    "settings",
    "submit",
]


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.settings: Settings | None = None
        self.pipeline: Pipeline | None = None
        self.store: Store | None = None
        self.base_metadata: dict[str, str] | None = None
        self.internal_errors: dict[str, int] = {}
        self.atexit_registered = False
        self.sink_error_logged = False


_state = _State()

# The id of the trace that finished last, in the process and per thread; tracing
# writes them (get_last_active_trace_id), they live here so that resetting the
# process state needs nothing from tracing.
last_trace: dict[str, str | None] = {"trace_id": None}
thread_last_trace = threading.local()


def _install(new: Settings | None) -> None:
    _state.settings = new
    _state.base_metadata = None
    _state.sink_error_logged = False
    if new is not None:
        _pricing.use_prices_file(new.prices)


def settings() -> Settings:
    current = _state.settings
    if current is None:
        with _state.lock:
            current = _state.settings
            if current is None:
                current = Settings.resolve(lenient=True)
                _install(current)
    return current


def configure(
    *,
    tracking_uri: str | None = None,
    tracking_token: str | None = None,
    environment: str | None = None,
    app_version: str | None = None,
    deployment_id: str | None = None,
    metadata: dict[str, str] | None = None,
    max_queue_size: int | None = None,
    max_block_seconds: float | None = None,
    batch_size: int | None = None,
    flush_interval: float | None = None,
    shutdown_timeout: float | None = None,
    prices: str | os.PathLike[str] | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: dict[str, str] | str | None = None,
    otlp_targets: list[Any] | None = None,
    otlp_only: bool | None = None,
) -> Settings:
    """Set process-wide settings; an argument left out comes from the environment or default.

    Traces queued so far are written to the previous store first. ``environment``,
    ``app_version``, ``deployment_id`` and ``metadata`` become metadata on every
    trace (``mlflow.source.type``, ``app_version``, ``deployment_id``, your keys);
    any of them can still be overridden per trace.

    >>> sessiontrace.configure(tracking_uri="sqlite:////data/traces.db", app_version="1.1.0")

    With ``tracking_uri="postgresql://app@db.internal/traces"`` they go to PostgreSQL
    (``pip install 'sessiontrace[postgres]'``; without it this raises ``ImportError``),
    where every instance of the app can write. With ``tracking_uri="http://tracehost:5000"``
    traces are sent to a sessiontrace server (``sessiontrace ui``) instead;
    ``tracking_token`` is its ``--token``.
    ``prices`` names a JSON or TOML file of model prices (see ``set_model_price``);
    a malformed one raises ``ValueError`` here.

    ``otlp_endpoint`` (a ``.../v1/traces`` URL) with ``otlp_headers`` also sends every
    trace over OTLP/HTTP (``pip install 'sessiontrace[otlp]'``); ``otlp_targets`` adds
    more (``sessiontrace.OTLPTarget.mlflow(...)``, ``.phoenix(...)``, ``.langfuse(...)``).
    ``otlp_only=True`` sends them there instead of to ``tracking_uri``.
    """
    if prices is not None:
        prices = os.fspath(prices)
        _pricing.load_prices_file(prices)  # a bad file fails here, not later in the writer
    new = Settings.resolve(
        {
            "tracking_uri": tracking_uri,
            "tracking_token": tracking_token,
            "environment": environment,
            "app_version": app_version,
            "deployment_id": deployment_id,
            "metadata": metadata,
            "max_queue_size": max_queue_size,
            "max_block_seconds": max_block_seconds,
            "batch_size": batch_size,
            "flush_interval": flush_interval,
            "shutdown_timeout": shutdown_timeout,
            "prices": prices,
            "otlp_endpoint": otlp_endpoint,
            "otlp_headers": otlp_headers,
            "otlp_targets": otlp_targets,
            "otlp_only": otlp_only,
        }
    )
    if new.otlp_target_list:
        from ._otlp import _encode  # noqa: F401  # a missing otlp extra fails here
    if parse_tracking_uri(new.tracking_uri).scheme == "postgresql":
        from ._store import require_postgres

        require_postgres()  # a missing driver fails here, not in the first traced call
    with _state.lock:
        _close_pipeline()
        _install(new)
    return new


def base_metadata() -> dict[str, str]:
    """Automatic metadata + configured defaults; computed once, copied per trace."""
    md = _state.base_metadata
    if md is None:
        s = settings()
        md = automatic_metadata()
        if s.environment:
            md[SOURCE_TYPE] = s.environment
        if s.app_version:
            md["app_version"] = s.app_version
        if s.deployment_id:
            md["deployment_id"] = s.deployment_id
        md.update(s.metadata)
        _state.base_metadata = md
    return md


def get_store() -> Store:
    """The store of the tracking URI: SQLite or PostgreSQL, opened once per process."""
    store = _state.store
    if store is None:
        with _state.lock:
            if _state.store is None:
                from ._store import open_location

                location = parse_tracking_uri(settings().tracking_uri)
                if location.scheme in ("http", "https"):
                    raise ValueError(
                        f"this process sends its traces to {location.path}; reading them "
                        "needs a sqlite or postgresql tracking URI (or that server's UI "
                        "and JSON API)"
                    )
                _state.store = open_location(location)
            store = _state.store
    return store


def store_is_local() -> bool:
    """True when this process writes the store itself and can read it back at once
    (SQLite, PostgreSQL); False when traces travel to a server over HTTP, where a tag
    edit has to follow its trace through the queue."""
    s = settings()
    if s.otlp_only:  # traces go only to OTLP targets: nothing local to read or edit
        return False
    return parse_tracking_uri(s.tracking_uri).scheme in ("sqlite", "postgresql")


def _sink(s: Settings) -> Sink:
    targets = s.otlp_target_list
    if not targets:
        return _local_sink(s)
    from ._export._otlp import FanOut, OTLPExporter

    resource = otlp_resource(s)
    try:
        exporters = [OTLPExporter(target, resource=resource) for target in targets]
    except ImportError as exc:
        if s.otlp_only:
            raise
        # An OTEL_EXPORTER_OTLP_* variable meant for another tracer, and no otlp extra:
        # keep recording locally rather than lose every trace.
        logger.error("sessiontrace does not send OTLP (pip install 'sessiontrace[otlp]'): %s", exc)
        return _local_sink(s)
    return FanOut(
        None if s.otlp_only else _local_sink(s),
        exporters,
        max_queue_size=s.max_queue_size,
        batch_size=min(s.batch_size, 512),
        flush_interval=s.flush_interval,
        max_block_seconds=s.max_block_seconds,
        shutdown_timeout=s.shutdown_timeout,
    )


def _local_sink(s: Settings) -> Sink:
    location = parse_tracking_uri(s.tracking_uri)
    if location.scheme in ("http", "https"):
        from ._export import HttpExporter

        return HttpExporter(location.path, token=s.tracking_token)
    return get_store()


def otlp_resource(s: Settings) -> dict[str, str]:
    """OTLP resource attributes: OTEL_RESOURCE_ATTRIBUTES, then ours (service, version, env)."""
    from urllib.parse import unquote

    from ._version import __version__

    resource: dict[str, str] = {}
    for part in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            resource[unquote(key).strip()] = unquote(value).strip()
    metadata = base_metadata()
    service = os.environ.get("OTEL_SERVICE_NAME") or resource.get("service.name")
    resource["service.name"] = service or metadata.get("mlflow.source.name") or "sessiontrace"
    if s.app_version:
        resource["service.version"] = s.app_version
    if s.environment:
        resource["deployment.environment.name"] = s.environment
    if s.deployment_id:
        resource["sessiontrace.resource.deployment_id"] = s.deployment_id
    resource.update(
        {
            "telemetry.sdk.name": "sessiontrace",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
    )
    return resource


def _pipeline() -> Pipeline:
    pipeline = _state.pipeline
    if pipeline is None:
        with _state.lock:
            if _state.pipeline is None:
                s = settings()
                try:
                    sink = _sink(s)
                except ImportError as exc:
                    # A URI from the environment names a store whose driver is missing:
                    # tracing drops (and counts) every trace; say why, once.
                    if not _state.sink_error_logged:
                        _state.sink_error_logged = True
                        logger.error("sessiontrace cannot record traces: %s", exc)
                    raise
                _state.pipeline = Pipeline(
                    sink,
                    max_queue_size=s.max_queue_size,
                    batch_size=s.batch_size,
                    flush_interval=s.flush_interval,
                    max_block_seconds=s.max_block_seconds,
                    prepare=_pricing.price_items,
                    count_error=count_internal_error,
                )
                if not _state.atexit_registered:
                    atexit.register(_at_exit)
                    _state.atexit_registered = True
            pipeline = _state.pipeline
    return pipeline


def submit(item: Any) -> None:
    pipeline = _state.pipeline
    if pipeline is None:
        pipeline = _pipeline()
    pipeline.submit(item)


def flush(timeout: float | None = None) -> bool:
    """Block until every trace finished so far is in the store (and sent to every OTLP
    target); ``False`` on timeout."""
    pipeline = _state.pipeline
    if pipeline is None:
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    done = pipeline.flush(timeout)
    fan_out = _fan_out(pipeline)
    if done and fan_out is not None:
        done = fan_out.flush(None if deadline is None else max(deadline - time.monotonic(), 0))
    return done


def _fan_out(pipeline: Pipeline) -> FanOut | None:
    """The OTLP fan-out sink, when OTLP is configured (its module is loaded only then)."""
    module = sys.modules.get("sessiontrace._export._otlp")
    if module is not None and isinstance(pipeline.sink, module.FanOut):
        return pipeline.sink  # type: ignore[no-any-return]
    return None


def _close_pipeline() -> None:
    pipeline, _state.pipeline = _state.pipeline, None
    store, _state.store = _state.store, None
    if pipeline is not None:
        pipeline.close(settings().shutdown_timeout)
    elif store is not None:
        store.close()


def _at_exit() -> None:
    pipeline = _state.pipeline
    if pipeline is not None:
        pipeline.close(settings().shutdown_timeout)


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()
    if _state.pipeline is not None:
        _state.pipeline.after_fork()
    elif _state.store is not None:
        _state.store.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def count_internal_error(where: str) -> None:
    _state.internal_errors[where] = _state.internal_errors.get(where, 0) + 1


def get_stats() -> dict[str, Any]:
    """Counters of the trace pipeline: written, queued, dropped (by reason), failures."""
    pipeline = _state.pipeline
    stats: dict[str, Any] = (
        pipeline.stats()
        if pipeline is not None
        else {
            "written": 0,
            "queued": 0,
            "dropped": 0,
            "dropped_by_reason": {},
            "export_failures": 0,
            "retries": 0,
            "store_healthy": True,
        }
    )
    fan_out = _fan_out(pipeline) if pipeline is not None else None
    stats["otlp"] = fan_out.stats() if fan_out is not None else []
    stats["internal_errors"] = dict(_state.internal_errors)
    stats["llm_pricing"] = _pricing.pricing_stats()
    return stats


def get_trace(trace_id: str) -> Trace | None:
    """The logged trace with this id, or ``None``; waits for queued traces to be written."""
    pipeline = _state.pipeline
    if pipeline is not None:  # the local store only: not the OTLP targets
        pipeline.flush(settings().shutdown_timeout)
    return get_store().get_trace(trace_id)


def swap_settings(new: Settings | None) -> Settings | None:
    """Write what is queued, then install ``new`` (None: resolve again on first use).

    Returns the settings that were in force; ``sessiontrace.testing`` restores them.
    """
    with _state.lock:
        _close_pipeline()
        old = _state.settings
        _install(new)
    return old


def reset_for_tests() -> None:
    """Write what is queued, close the store and forget all settings (test isolation)."""
    with _state.lock:
        _close_pipeline()
        _install(None)
        _state.internal_errors.clear()
    _pricing.reset_for_tests()
    last_trace["trace_id"] = None
    thread_last_trace.__dict__.clear()
