"""Send finished traces to OpenTelemetry backends over OTLP/HTTP (MLflow, Phoenix, Langfuse, a
Collector): binary protobuf, gzip, one or several targets.

``OTLPTarget`` says where (an endpoint, its headers, and presets for MLflow, Phoenix and
Langfuse). ``OTLPExporter`` is a pipeline ``Sink`` for one target. ``FanOut`` is the sink
the runtime installs when OTLP is configured: it writes each batch to the local store (the
"primary"; ``None`` when OTLP replaces it) and hands the same records to every target's
own pipeline (its own queue and writer thread), so a dead or slow target holds up neither
the app, nor the store, nor the other targets; what a target's queue cannot hold is
dropped and counted in ``get_stats()["otlp"]``.

Retries follow the OTLP spec: only 429, 502, 503 and 504 are retried, after the
``Retry-After`` the server asked for (capped by ``max_retry_after``), as are connection
failures and timeouts. Any other 4xx/5xx is not sent again: the pipeline then sends the
batch's traces one by one, so one trace a backend refuses cannot sink the others, and a
refused trace is dropped and counted. A 200 with ``partial_success`` is not retried
(the spec forbids it); its ``rejected_spans`` are counted.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import json
import logging
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._pipeline import Pipeline, RetryableExportError, Sink
from .._version import __version__
from ._http import ExportRejectedError

__all__ = ["FanOut", "OTLPExporter", "OTLPTarget", "parse_headers"]

logger = logging.getLogger("sessiontrace")

_RETRY_STATUS = frozenset({429, 502, 503, 504})
DEFAULT_MAX_ID_LENGTH = 250


def parse_headers(text: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (the ``OTEL_EXPORTER_OTLP_HEADERS`` form, values URL-encoded)."""
    from urllib.parse import unquote

    headers: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError("OTLP headers must be key=value pairs separated by commas")
        key, value = part.split("=", 1)
        key = unquote(key).strip()
        if not key:
            raise ValueError("an OTLP header has an empty name")
        headers[key] = unquote(value).strip()
    return headers


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("OTLP headers must map str to str")
        if not key or any(c in key for c in "\r\n:") or any(c in value for c in "\r\n"):
            raise ValueError(f"invalid OTLP header name or value for {key!r}")
        out[key] = value
    return out


def redact_endpoint(url: str) -> str:
    """The endpoint without user info, query or fragment: what may be logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclasses.dataclass(frozen=True)
class OTLPTarget:
    """One OTLP/HTTP destination.

    ``endpoint`` is the full traces URL (``.../v1/traces``); ``headers`` are sent with
    every request (never logged). ``max_id_length``: session and user ids longer than
    this are shortened to a stable form (MLflow rejects a whole batch for a session id
    over 250 characters).
    """

    endpoint: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    name: str = ""
    max_id_length: int = DEFAULT_MAX_ID_LENGTH
    compression: str = "gzip"
    timeout: float = 10.0
    max_retry_after: float = 30.0
    max_request_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint) if isinstance(self.endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OTLP endpoint must be an http(s):// URL, got {self.endpoint!r}")
        object.__setattr__(self, "headers", _check_headers(dict(self.headers or {})))
        if self.compression not in ("gzip", "none"):
            raise ValueError("compression must be 'gzip' or 'none'")
        if isinstance(self.max_id_length, bool) or not isinstance(self.max_id_length, int):
            raise TypeError("max_id_length must be an int")
        if self.max_id_length < 20:
            raise ValueError("max_id_length must be at least 20")
        if not self.timeout > 0 or not self.max_retry_after >= 0 or self.max_request_bytes <= 0:
            raise ValueError("timeout and max_request_bytes must be positive")
        if not self.name:
            object.__setattr__(self, "name", redact_endpoint(self.endpoint))

    @classmethod
    def mlflow(
        cls, base_url: str = "http://127.0.0.1:5000", *, experiment_id: str = "0", **options: Any
    ) -> OTLPTarget:
        """An MLflow tracking server (``mlflow server``); traces go to ``experiment_id``."""
        headers = {"x-mlflow-experiment-id": str(experiment_id), **options.pop("headers", {})}
        return cls(base_url.rstrip("/") + "/v1/traces", headers, **options)

    @classmethod
    def phoenix(
        cls, base_url: str = "http://127.0.0.1:6006", *, project: str = "default", **options: Any
    ) -> OTLPTarget:
        """Arize Phoenix (``phoenix serve``); traces go to ``project``. An API key, when the
        server has auth on, goes in ``headers={"authorization": "Bearer ..."}``."""
        headers = {"x-project-name": project, **options.pop("headers", {})}
        return cls(base_url.rstrip("/") + "/v1/traces", headers, **options)

    @classmethod
    def langfuse(
        cls,
        base_url: str = "https://cloud.langfuse.com",
        *,
        public_key: str,
        secret_key: str,
        **options: Any,
    ) -> OTLPTarget:
        """Langfuse (cloud or self-hosted), authenticated with a project's key pair."""
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        headers = {"authorization": f"Basic {token}", **options.pop("headers", {})}
        options.setdefault("max_id_length", 200)  # its SDK drops ids over 200 characters
        return cls(base_url.rstrip("/") + "/api/public/otel/v1/traces", headers, **options)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0)
    return None


class OTLPExporter:
    """A ``Sink`` posting protobuf ``ExportTraceServiceRequest``s to one OTLP target."""

    def __init__(self, target: OTLPTarget, *, resource: Mapping[str, Any] | None = None) -> None:
        from .._otlp import _encode  # fails here (configure time) without the otlp extra

        self.target = target
        self._encode = _encode.encode_bytes
        self._resource = dict(resource or {})
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"sessiontrace/{__version__}",
            **target.headers,
        }
        if target.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._client: Any = None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "exported_traces",
                "exported_spans",
                "rejected_spans",
                "retryable_failures",
                "refused_requests",
                "ids_shortened",
                "tag_changes_skipped",
                "unfinished_spans_deferred",
            ),
            0,
        )
        self.last_error: str | None = None
        # Tests and the benchmark watch this; it is set by every sleep on Retry-After.
        self.sleep = time.sleep

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, n in deltas.items():
                self._counts[key] += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["endpoint"] = redact_endpoint(self.target.endpoint)
        out["last_error"] = self.last_error
        return out

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError:
                raise RetryableExportError(
                    "sending OTLP needs httpx: pip install 'sessiontrace[otlp]'"
                ) from None
            timeout = self.target.timeout
            self._client = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
                headers=self._headers,
                trust_env=False,
            )
        return self._client

    def encode(self, items: Sequence[Any]) -> tuple[bytes, Any]:
        body, stats = self._encode(
            items,
            resource=self._resource,
            max_id_length=self.target.max_id_length,
            scope_version=__version__,
        )
        return body, stats

    def export(self, items: Sequence[Any]) -> None:
        body, stats = self.encode(items)
        if len(body) > self.target.max_request_bytes and len(items) > 1:
            half = len(items) // 2
            self.export(items[:half])
            self.export(items[half:])
            return
        if stats.spans:
            self._post(body)
        self._count(
            exported_traces=stats.traces,
            exported_spans=stats.spans,
            ids_shortened=stats.ids_shortened,
            tag_changes_skipped=stats.tag_changes_skipped,
            unfinished_spans_deferred=stats.unfinished_spans,
        )

    def _post(self, body: bytes) -> None:
        client = self._http()
        import httpx

        if self.target.compression == "gzip":
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
        self._count(requests=1)
        try:
            response = client.post(self.target.endpoint, content=body)
        except httpx.HTTPError as exc:  # refused, reset, timed out: the target may come back
            self._failed(f"{type(exc).__name__}")
            raise RetryableExportError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            self._partial_success(response)
            return
        if status in _RETRY_STATUS:
            self._failed(f"HTTP {status}")
            wait = _retry_after(response.headers.get("retry-after"))
            if wait:
                self.sleep(min(wait, self.target.max_retry_after))
            raise RetryableExportError(f"OTLP target answered {status}")
        self._count(refused_requests=1)
        self.last_error = f"HTTP {status}"
        raise ExportRejectedError(
            f"OTLP target {self.target.name} refused the request ({status}): "
            f"{response.text[:300]!r}"
        )

    def _failed(self, what: str) -> None:
        self._count(retryable_failures=1)
        self.last_error = what

    def _partial_success(self, response: Any) -> None:
        content = response.content
        if not content:
            return
        rejected, message = 0, ""
        ctype = response.headers.get("content-type", "")
        try:
            if "json" in ctype:
                partial = json.loads(content).get("partialSuccess") or {}
                rejected = int(partial.get("rejectedSpans") or 0)
                message = str(partial.get("errorMessage") or "")
            else:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceResponse,
                )

                parsed = ExportTraceServiceResponse.FromString(content)
                rejected = int(parsed.partial_success.rejected_spans)
                message = parsed.partial_success.error_message
        except Exception:  # an unreadable success body is still a success
            return
        if rejected > 0:
            self._count(rejected_spans=rejected)
            self.last_error = f"partial success: {message[:200]}"
            logger.warning(
                "OTLP target %s rejected %d span(s): %s", self.target.name, rejected, message[:200]
            )

    def after_fork(self) -> None:
        self._client = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


class FanOut:
    """A ``Sink``: the local store (or nothing) plus one queued pipeline per OTLP target."""

    def __init__(
        self,
        primary: Sink | None,
        exporters: Sequence[OTLPExporter],
        *,
        max_queue_size: int,
        batch_size: int,
        flush_interval: float,
        max_block_seconds: float,
        shutdown_timeout: float,
    ) -> None:
        self.primary = primary
        self.exporters = list(exporters)
        self._shutdown_timeout = shutdown_timeout
        self.pipelines = [
            Pipeline(
                exporter,
                max_queue_size=max_queue_size,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_block_seconds=max_block_seconds,
            )
            for exporter in self.exporters
        ]

    def export(self, items: Sequence[Any]) -> None:
        primary = self.primary
        if primary is not None:
            try:
                primary.export(items)
            except RetryableExportError:
                raise  # the batch comes again as a whole: forward it then
            except Exception:
                if len(items) == 1:  # the store cannot take it; the targets still get it
                    self._forward(items)
                raise  # a batch is split by the pipeline and comes back item by item
        self._forward(items)

    def _forward(self, items: Sequence[Any]) -> None:
        for pipeline in self.pipelines:
            for item in items:
                pipeline.submit(item)

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        for pipeline in self.pipelines:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done = pipeline.flush(left) and done
        return done

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for exporter, pipeline in zip(self.exporters, self.pipelines, strict=True):
            item = exporter.stats()
            item.update(pipeline.stats())
            out.append(item)
        return out

    def after_fork(self) -> None:
        if self.primary is not None:
            self.primary.after_fork()
        for pipeline in self.pipelines:
            pipeline.after_fork()

    def close(self) -> None:
        deadline = time.monotonic() + self._shutdown_timeout
        for pipeline in self.pipelines:
            pipeline.close(max(deadline - time.monotonic(), 0.0))
        if self.primary is not None:
            self.primary.close()
