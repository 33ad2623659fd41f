"""Records -> OTLP ``ExportTraceServiceRequest``: the attribute set MLflow, Phoenix and
Langfuse all read (the table in README "Send traces to OpenTelemetry backends").

Every span carries the trace's session and user (``session.id``,
``gen_ai.conversation.id``, ``user.id``), its inputs and outputs (``input.value`` /
``output.value`` with their mime types) and its type (``openinference.span.kind`` and
``mlflow.spanType``); LLM spans add the GenAI and OpenInference model and token
attributes. The root span adds the trace name and tags as MLflow reads them
(``mlflow.traceTag.*``), the tags as Phoenix and Langfuse read them (``tag.tags``) and the
metadata losslessly (``sessiontrace.metadata.<key>``) and for Langfuse and Phoenix.

What OTLP cannot carry is counted, never silently lost: a tag edited after its trace was
sent (``TagChange``) cannot be expressed in OTLP and is skipped; a span still running
when its trace was handed over is left out here and sent when it ends (it arrives as a
late ``SpanRecord``). A session or user id longer than ``max_id_length`` (MLflow rejects
a whole batch for a session id over 250 characters) is shortened to a stable form: its
first characters, ``~`` and a hash of the whole id, so distinct ids stay distinct; the
full id is kept in the root's ``sessiontrace.metadata.*``.

Importing this module starts nothing; it needs ``opentelemetry-proto`` (the ``otlp``
extra).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .._records import SpanRecord, TagChange, TraceRecord
from . import _keys as k

__all__ = ["EncodeStats", "encode_request", "otlp_span_id", "otlp_trace_id", "shorten_id"]

METADATA_USER = "mlflow.trace.user"
METADATA_SESSION = "mlflow.trace.session"
_USAGE = "mlflow.chat.tokenUsage"
_MODEL = "mlflow.llm.model"
_PROVIDER = "mlflow.llm.provider"
_LLM_TYPES = frozenset({"LLM", "CHAT_MODEL"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STATUS: dict[str, Any] = {"OK": k.STATUS_CODE_OK, "ERROR": k.STATUS_CODE_ERROR}
_KIND_SERVER: Any = 2
_KIND_CLIENT: Any = 3
_KIND_INTERNAL: Any = 1
_ERROR: Any = k.STATUS_CODE_ERROR
_CLIENT_TYPES = frozenset({"LLM", "CHAT_MODEL", "EMBEDDING", "RETRIEVER", "RERANKER"})


@dataclass
class EncodeStats:
    """What one request left out or changed (the exporter adds these to its counters)."""

    traces: int = 0
    spans: int = 0
    late_spans: int = 0
    unfinished_spans: int = 0
    tag_changes_skipped: int = 0
    ids_shortened: int = 0


def otlp_trace_id(trace_id: str) -> bytes:
    """``tr-<32 hex>`` -> its 16 bytes; any other id -> the first 16 bytes of its SHA-256."""
    text = trace_id[3:] if trace_id.startswith("tr-") else trace_id
    if len(text) == 32:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return hashlib.sha256(trace_id.encode("utf-8", "replace")).digest()[:16]


def otlp_span_id(span_id: str) -> bytes:
    """16 hex -> its 8 bytes; any other id -> the first 8 bytes of its SHA-256."""
    if len(span_id) == 16:
        try:
            return bytes.fromhex(span_id)
        except ValueError:
            pass
    return hashlib.sha256(span_id.encode("utf-8", "replace")).digest()[:8]


def shorten_id(value: str, max_length: int) -> str:
    """``value`` if it fits, else a stable shorter form: a prefix, ``~``, 16 hex of SHA-256."""
    if len(value) <= max_length:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return value[: max(max_length - 17, 0)] + "~" + digest[: max(max_length - 1, 0)]


def _set_any(target: AnyValue, value: Any) -> None:
    """Write a JSON-able value into an ``AnyValue`` (dicts as kvlists, lists as arrays)."""
    t = type(value)
    if t is str:
        target.string_value = value
    elif t is bool:
        target.bool_value = value
    elif t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif t is float:
        target.double_value = value
    elif value is None:
        return  # an empty AnyValue: OTLP's null
    elif isinstance(value, (list, tuple)):
        values = target.array_value.values
        for item in value:
            _set_any(values.add(), item)
        if not value:
            target.array_value.SetInParent()
    elif isinstance(value, dict):
        kvs = target.kvlist_value.values
        for key, item in value.items():
            kv = kvs.add(key=str(key))
            _set_any(kv.value, item)
        if not value:
            target.kvlist_value.SetInParent()
    elif isinstance(value, str):  # a str subclass
        target.string_value = str(value)
    elif isinstance(value, int):
        _set_any(target, int(value))
    elif isinstance(value, float):
        target.double_value = float(value)
    else:
        target.string_value = str(value)


def _add(attributes: Any, key: str, value: Any) -> None:
    _set_any(attributes.add(key=key).value, value)


def _io(attributes: Any, value_key: str, mime_key: str, text: str | None) -> None:
    """Inputs/outputs (JSON text): a JSON string goes as text/plain, anything else as JSON."""
    if text is None:
        return
    if text[:1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if type(decoded) is str:
            _add(attributes, value_key, decoded)
            _add(attributes, mime_key, k.MIME_TEXT)
            return
    _add(attributes, value_key, text)
    _add(attributes, mime_key, k.MIME_JSON)


def _llm(attributes: Any, own: Mapping[str, Any]) -> None:
    _add(attributes, k.GENAI_OPERATION_NAME, "chat")
    model = own.get(_MODEL)
    if isinstance(model, str) and model:
        _add(attributes, k.GENAI_REQUEST_MODEL, model)
        _add(attributes, k.LLM_MODEL_NAME, model)
    provider = own.get(_PROVIDER)
    if isinstance(provider, str) and provider:
        _add(attributes, k.GENAI_PROVIDER_NAME, provider)
        _add(attributes, k.LLM_PROVIDER, provider)
    usage = own.get(_USAGE)
    if isinstance(usage, str):
        try:
            usage = json.loads(usage)
        except ValueError:
            usage = None
    if isinstance(usage, dict):
        pairs = (
            ("input_tokens", (k.GENAI_USAGE_INPUT_TOKENS, k.LLM_TOKEN_COUNT_PROMPT)),
            ("output_tokens", (k.GENAI_USAGE_OUTPUT_TOKENS, k.LLM_TOKEN_COUNT_COMPLETION)),
            ("total_tokens", (k.LLM_TOKEN_COUNT_TOTAL,)),
        )
        for field, keys in pairs:
            n = usage.get(field)
            if type(n) is int:
                for key in keys:
                    _add(attributes, key, n)


class _Encoder:
    __slots__ = ("max_id_length", "stats")

    def __init__(self, max_id_length: int) -> None:
        self.max_id_length = max_id_length
        self.stats = EncodeStats()

    def ident(self, value: str | None) -> str | None:
        if value is None or len(value) <= self.max_id_length:
            return value
        self.stats.ids_shortened += 1
        return shorten_id(value, self.max_id_length)

    def span(
        self,
        out: Any,
        span: SpanRecord,
        trace_bytes: bytes,
        who: tuple[tuple[str, str], ...],
    ) -> None:
        s: Span = out.add()
        s.trace_id = trace_bytes
        s.span_id = otlp_span_id(span.span_id)
        if span.parent_id:
            s.parent_span_id = otlp_span_id(span.parent_id)
        s.flags = k.FLAG_HAS_IS_REMOTE
        s.name = span.name
        span_type = span.span_type or "UNKNOWN"
        s.kind = (
            _KIND_SERVER
            if span_type == "HTTP"
            else _KIND_CLIENT
            if span_type in _CLIENT_TYPES
            else _KIND_INTERNAL
        )
        s.start_time_unix_nano = max(int(span.start_ns), 0)
        s.end_time_unix_nano = max(int(span.end_ns or span.start_ns), 0)
        code = _STATUS.get(span.status, k.STATUS_CODE_UNSET)
        if code:
            s.status.code = code
            if span.status_message and code == k.STATUS_CODE_ERROR:
                s.status.message = span.status_message
        attributes = s.attributes
        for key, value in who:
            _add(attributes, key, value)
        _io(attributes, k.INPUT_VALUE, k.INPUT_MIME_TYPE, span.inputs_json)
        _io(attributes, k.OUTPUT_VALUE, k.OUTPUT_MIME_TYPE, span.outputs_json)
        _add(attributes, k.OPENINFERENCE_SPAN_KIND, k.SPAN_KIND_FROM_TYPE.get(span_type, "CHAIN"))
        _add(attributes, k.MLFLOW_SPAN_TYPE, span_type)
        own = span.attributes or {}
        if span_type in _LLM_TYPES or _USAGE in own:
            _llm(attributes, own)
        for key, value in own.items():
            _add(attributes, key, value)
        for event in span.events or ():
            e = s.events.add()
            e.name = str(event.get("name", ""))
            e.time_unix_nano = max(int(event.get("timestamp_ns") or span.start_ns), 0)
            for key, value in (event.get("attributes") or {}).items():
                _add(e.attributes, str(key), value)

    def trace(self, out: Any, trace: TraceRecord) -> None:
        metadata = trace.metadata or {}
        session = metadata.get(METADATA_SESSION)
        user = metadata.get(METADATA_USER)
        short_session, short_user = self.ident(session), self.ident(user)
        who: list[tuple[str, str]] = []
        if short_session:
            who += [(k.SESSION_ID, short_session), (k.GENAI_CONVERSATION_ID, short_session)]
        if short_user:
            who.append((k.USER_ID, short_user))
        trace_bytes = otlp_trace_id(trace.trace_id)
        root_id = trace.root.span_id
        for span in trace.spans:
            if span.end_ns is None and span.span_id != root_id:
                self.stats.unfinished_spans += 1  # sent when it ends, as a late span
                continue
            self.span(out, span, trace_bytes, tuple(who))
            self.stats.spans += 1
            if span.span_id == root_id:
                self.root(out[len(out) - 1], trace, metadata)
        self.stats.traces += 1

    def root(
        self,
        s: Span,
        trace: TraceRecord,
        metadata: Mapping[str, str],
    ) -> None:
        attributes = s.attributes
        name = trace.root.name
        _add(attributes, k.MLFLOW_TRACE_NAME_TAG, name)
        _add(attributes, k.LANGFUSE_TRACE_NAME, name)
        tags = trace.tags or {}
        for key, value in tags.items():
            _add(attributes, k.MLFLOW_TRACE_TAG_PREFIX + key, value)
        if tags:
            _add(attributes, k.TAG_TAGS, [f"{key}:{value}" for key, value in tags.items()])
        shown: dict[str, str] = {}
        for key, value in metadata.items():
            if key in (METADATA_SESSION, METADATA_USER):
                # Travel as session.id / user.id; kept here only when those were shortened.
                if len(value) <= self.max_id_length:
                    continue
            else:
                shown[key] = value
                _add(attributes, k.LANGFUSE_TRACE_METADATA_PREFIX + key, value)
            _add(attributes, k.METADATA_PREFIX + key, value)
        if shown:
            _add(attributes, k.METADATA_JSON, json.dumps(shown, ensure_ascii=False))
        if trace.client_request_id:
            _add(attributes, k.CLIENT_REQUEST_ID, trace.client_request_id)
        if trace.state == "ERROR" and not s.status.code:
            s.status.code = _ERROR

    def late(self, out: Any, span: SpanRecord) -> None:
        self.span(out, span, otlp_trace_id(span.trace_id), ())
        self.stats.spans += 1
        self.stats.late_spans += 1


def encode_request(
    items: Iterable[Any],
    *,
    resource: Mapping[str, Any] | None = None,
    max_id_length: int = k.MLFLOW_SESSION_MAX_LENGTH,
    scope_version: str = "",
) -> tuple[ExportTraceServiceRequest, EncodeStats]:
    """One ``ExportTraceServiceRequest`` for a batch of records, and what it left out.

    ``resource`` are the resource attributes (``service.name``, ...). Tag changes are
    skipped and counted; unknown item types raise ``TypeError``.
    """
    if max_id_length < 20:
        raise ValueError("max_id_length must be at least 20")
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (resource or {}).items():
        _add(resource_spans.resource.attributes, key, value)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = k.SCOPE_NAME
    if scope_version:
        scope_spans.scope.version = scope_version
    out = scope_spans.spans
    encoder = _Encoder(max_id_length)
    for item in items:
        if isinstance(item, TraceRecord):
            encoder.trace(out, item)
        elif isinstance(item, SpanRecord):
            encoder.late(out, item)
        elif isinstance(item, TagChange):
            encoder.stats.tag_changes_skipped += 1
        else:
            raise TypeError(f"cannot encode {type(item).__name__} as OTLP")
    return request, encoder.stats
