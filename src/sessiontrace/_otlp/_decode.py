"""OTLP traces in (``ExportTraceServiceRequest``, protobuf or OTLP/JSON): one
``OtlpSpan`` a span, each holding the ``SpanRecord`` the store writes and the
trace-level facts the span carried (session, user, tags, metadata).

Spans are decoded one by one: a span that breaks the spec (an id of the wrong
length or all zeros, an end before its start) is rejected alone and counted, the
others are kept (the receiver answers ``partial_success``). A body that is not a
request at all raises ``OtlpDecodeError``.

The attribute mapping is the inverse of the exporter's (``_keys`` names both):

- ``langfuse.session.id`` > ``session.id`` > ``gen_ai.conversation.id`` give the
  trace's session, ``langfuse.user.id`` > ``user.id`` its user, from any span;
- ``mlflow.spanInputs`` > ``input.value`` (JSON when ``input.mime_type`` says so)
  > ``gen_ai.input.messages`` give the span's inputs, and the same for outputs;
- ``mlflow.spanType`` > ``openinference.span.kind`` > ``gen_ai.operation.name``
  give its type;
- GenAI and OpenInference model, provider, token and cost attributes give the
  ``mlflow.llm.*`` / ``mlflow.chat.tokenUsage`` attributes our LLM totals read;
- ``mlflow.traceTag.<k>`` and ``tag.tags`` give tags, ``sessiontrace.metadata.<k>``,
  ``langfuse.trace.metadata.<k>`` and ``metadata`` (JSON text) metadata; a foreign
  resource's attributes become metadata too (as MLflow makes them tags).

The keys consumed into those fields leave the span's attributes; every other
attribute is kept as it came. Spans our own exporter sent (scope ``sessiontrace``)
also lose the attributes it derived, so a trace sent and received comes back equal.

The protobuf path needs ``opentelemetry-proto``; the JSON path needs nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .._records import SpanRecord
from .._serialize import dumps
from ..llm._keys import COST, MODEL, PROVIDER, USAGE
from ._keys import (
    CLIENT_REQUEST_ID,
    GENAI_CONVERSATION_ID,
    GENAI_INPUT_MESSAGES,
    GENAI_OPERATION_NAME,
    GENAI_OUTPUT_MESSAGES,
    GENAI_PROVIDER_NAME,
    GENAI_REQUEST_MODEL,
    GENAI_RESPONSE_MODEL,
    GENAI_SYSTEM,
    GENAI_USAGE_INPUT_TOKENS,
    GENAI_USAGE_OUTPUT_TOKENS,
    INPUT_MIME_TYPE,
    INPUT_VALUE,
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_METADATA_PREFIX,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_USER_ID,
    LLM_MODEL_NAME,
    LLM_PROVIDER,
    LLM_TOKEN_COUNT_COMPLETION,
    LLM_TOKEN_COUNT_PROMPT,
    LLM_TOKEN_COUNT_TOTAL,
    METADATA_JSON,
    METADATA_PREFIX,
    MIME_JSON,
    MLFLOW_SPAN_INPUTS,
    MLFLOW_SPAN_OUTPUTS,
    MLFLOW_SPAN_TYPE,
    MLFLOW_TRACE_TAG_PREFIX,
    OPENINFERENCE_SPAN_KIND,
    OUTPUT_MIME_TYPE,
    OUTPUT_VALUE,
    SCOPE_NAME,
    SESSION_ID,
    SPAN_TYPE_FROM_GENAI_OPERATION,
    SPAN_TYPE_FROM_KIND,
    TAG_TAGS,
    USER_ID,
)

__all__ = [
    "REMOTE_PARENT",
    "Decoded",
    "OtlpDecodeError",
    "OtlpSpan",
    "decode_json",
    "decode_protobuf",
]

# A local root under a remote parent keeps that parent's id here; its parent_id is
# None, as every root's is in our store.
REMOTE_PARENT = "sessiontrace.otlp.remote_parent_id"
_REMOTE = 0x300  # FLAG_HAS_IS_REMOTE | FLAG_PARENT_IS_REMOTE
_STATUS = ("UNSET", "OK", "ERROR")
# The spec's OTLP/JSON has integer enums; protobuf's JSON mapping writes names.
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_MAX_NAME = 1000
_MAX_MESSAGE = 20_000
_MAX_ID = 1000  # longer session/user ids are dropped (and said so)
_MAX_KEY = 1000
_MAX_VALUE = 8000
_LLM_TYPES = frozenset({"LLM", "CHAT_MODEL", "EMBEDDING"})
_SESSION_KEYS = (LANGFUSE_SESSION_ID, SESSION_ID, GENAI_CONVERSATION_ID)
_USER_KEYS = (LANGFUSE_USER_ID, USER_ID)
_LLM_KEYS = frozenset(
    {
        GENAI_USAGE_INPUT_TOKENS,
        GENAI_USAGE_OUTPUT_TOKENS,
        LLM_TOKEN_COUNT_PROMPT,
        LLM_TOKEN_COUNT_COMPLETION,
        GENAI_REQUEST_MODEL,
        GENAI_RESPONSE_MODEL,
        LLM_MODEL_NAME,
        "llm.cost.total",
    }
)
_OPENINFERENCE_COST = ("llm.cost.prompt", "llm.cost.completion", "llm.cost.total")
# What our own exporter adds to a span beside the span's own attributes.
_DERIVED = frozenset(
    {
        *_SESSION_KEYS,
        *_USER_KEYS,
        OPENINFERENCE_SPAN_KIND,
        GENAI_OPERATION_NAME,
        GENAI_REQUEST_MODEL,
        GENAI_RESPONSE_MODEL,
        GENAI_SYSTEM,
        GENAI_PROVIDER_NAME,
        GENAI_USAGE_INPUT_TOKENS,
        GENAI_USAGE_OUTPUT_TOKENS,
        LLM_MODEL_NAME,
        LLM_PROVIDER,
        LLM_TOKEN_COUNT_PROMPT,
        LLM_TOKEN_COUNT_COMPLETION,
        LLM_TOKEN_COUNT_TOTAL,
        LANGFUSE_TRACE_NAME,
        TAG_TAGS,
        METADATA_JSON,
        GENAI_INPUT_MESSAGES,
        GENAI_OUTPUT_MESSAGES,
    }
)
# Resource attributes that say which SDK sent a span, not which app: not metadata.
_SKIP_RESOURCE = ("telemetry.sdk.", "telemetry.auto.", "process.", "mlflow.")
# Attribute values MLflow (and our exporter) send as JSON text that we keep as dicts.
_JSON_VALUED = (USAGE, COST)


_new = tuple.__new__
_quote = (
    json.encoder.encode_basestring
)  # a str as JSON text, in C  # a named tuple without its Python-level __new__


class OtlpDecodeError(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` in the encoding it claims."""


class OtlpSpan(NamedTuple):
    """One received span: its record, and what it says about its trace."""

    record: SpanRecord
    local_root: bool  # no parent, or a remote one: this service's entry span
    session_id: str | None
    user_id: str | None
    metadata: dict[str, str] | None
    tags: dict[str, str] | None
    client_request_id: str | None


class Decoded(NamedTuple):
    spans: list[OtlpSpan]
    rejected: int
    errors: list[str]  # the first few reasons, for partial_success.error_message


class _Reject(ValueError):
    pass


class _Collector:
    __slots__ = ("errors", "rejected", "spans")

    def __init__(self) -> None:
        self.spans: list[OtlpSpan] = []
        self.rejected = 0
        self.errors: list[str] = []

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5 and reason not in self.errors:
            self.errors.append(reason)

    def result(self) -> Decoded:
        return Decoded(self.spans, self.rejected, self.errors)


# -- protobuf -------------------------------------------------------------------------

_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


def decode_protobuf(body: bytes) -> Decoded:
    """Spans of a binary ``ExportTraceServiceRequest``; ``OtlpDecodeError`` if it is not one."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError, or an error of its C parser
        raise OtlpDecodeError(f"not an ExportTraceServiceRequest: {exc}") from None
    out = _Collector()
    for resource_spans in request.resource_spans:
        resource_md: dict[str, str] | None = None
        for scope_spans in resource_spans.scope_spans:
            ours = scope_spans.scope.name == SCOPE_NAME
            if not ours and resource_md is None:
                resource_md = _resource_metadata(_pb_attributes(resource_spans.resource.attributes))
            for span in scope_spans.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                if len(tid) != 16 or tid == _ZERO16:
                    out.reject("trace_id must be 16 bytes, not all zero")
                    continue
                if len(sid) != 8 or sid == _ZERO8:
                    out.reject("span_id must be 8 bytes, not all zero")
                    continue
                if pid and len(pid) != 8:
                    out.reject("parent_span_id must be empty or 8 bytes")
                    continue
                status = span.status
                events = None
                if span.events:
                    events = [
                        {
                            "name": e.name,
                            "timestamp_ns": e.time_unix_nano,
                            "attributes": _pb_attributes(e.attributes),
                        }
                        for e in span.events
                    ]
                try:
                    out.spans.append(
                        _span(
                            tid.hex(),
                            sid.hex(),
                            pid.hex() if pid and pid != _ZERO8 else None,
                            span.flags,
                            span.name,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            status.code,
                            status.message,
                            _pb_attributes(span.attributes),
                            events,
                            resource_md,
                            ours,
                        )
                    )
                except (ValueError, TypeError) as exc:  # _Reject is a ValueError
                    out.reject(str(exc) if isinstance(exc, _Reject) else "a malformed span")
    return out.result()


def _pb_attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        # Most values are non-empty strings: reading string_value first skips the
        # WhichOneof (the dearest call here) for them.
        text = value.string_value
        if text:
            out[kv.key] = text
            continue
        # An empty AnyValue (kind None) is OTLP's null.
        out[kv.key] = _pb_value(value, value.WhichOneof("value"))
    return out


def _pb_value(value: Any, kind: str | None) -> Any:
    if kind == "string_value" or kind == "bool_value" or kind == "int_value":
        return getattr(value, kind)
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [_pb_value(v, v.WhichOneof("value")) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None  # an empty AnyValue, or a string table index (profiles only)


# -- OTLP/JSON ---------------------------------------------------------------------------


def _json_loader() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


_json_loads = _json_loader()


def decode_json(body: bytes) -> Decoded:
    """Spans of an OTLP/JSON request (lowerCamelCase keys, hex ids, int64 as strings
    or numbers, integer enums; unknown keys ignored); ``OtlpDecodeError`` if it is
    not one."""
    try:
        request = _json_loads(body)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise OtlpDecodeError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise OtlpDecodeError("an ExportTraceServiceRequest is a JSON object")
    out = _Collector()
    for resource_spans in _list(request, "resourceSpans", "resource_spans"):
        if not isinstance(resource_spans, dict):
            raise OtlpDecodeError("resourceSpans holds objects")
        resource = _field(resource_spans, "resource", "resource")
        resource_md: dict[str, str] | None = None
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            if not isinstance(scope_spans, dict):
                raise OtlpDecodeError("scopeSpans holds objects")
            scope = scope_spans.get("scope")
            ours = isinstance(scope, dict) and scope.get("name") == SCOPE_NAME
            if not ours and resource_md is None:
                attrs = resource.get("attributes") if isinstance(resource, dict) else None
                try:
                    resource_md = _resource_metadata(_json_attributes(attrs))
                except (ValueError, TypeError):
                    raise OtlpDecodeError("malformed resource attributes") from None
            for span in _list(scope_spans, "spans", "spans"):
                try:
                    out.spans.append(_json_span(span, resource_md, ours))
                except (ValueError, TypeError, AttributeError) as exc:
                    out.reject(str(exc) if isinstance(exc, _Reject) else "a malformed span")
    return out.result()


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _list(obj: dict[str, Any], camel: str, snake: str) -> list[Any]:
    value = _field(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{camel} must be a list")
    return value


def _json_id(value: Any, size: int, name: str) -> str | None:
    """A hex id of ``size`` bytes (lower-cased); ``None`` when empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Reject(f"{name} must be a hex string")
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
    else:
        # Not the spec's hex: a few senders use protobuf's JSON mapping (base64).
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != size:
        raise _Reject(f"{name} must be {size} bytes as hex")
    if raw == bytes(size):
        return None
    return raw.hex()


def _int(value: Any, name: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Reject(f"{name} must be an integer (or its decimal string)")


def _json_span(span: Any, resource_md: dict[str, str] | None, ours: bool) -> OtlpSpan:
    if not isinstance(span, dict):
        raise _Reject("a span must be an object")
    g = span.get
    trace_id = _json_id(_field(span, "traceId", "trace_id"), 16, "traceId")
    if trace_id is None:
        raise _Reject("trace_id must be 16 bytes, not all zero")
    span_id = _json_id(_field(span, "spanId", "span_id"), 8, "spanId")
    if span_id is None:
        raise _Reject("span_id must be 8 bytes, not all zero")
    parent_id = _json_id(_field(span, "parentSpanId", "parent_span_id"), 8, "parentSpanId")
    name = g("name") or ""
    if not isinstance(name, str):
        raise _Reject("name must be a string")
    status = g("status") or {}
    if not isinstance(status, dict):
        raise _Reject("status must be an object")
    code = status.get("code")
    code = (
        _STATUS_NAMES.get(code, 0)
        if isinstance(code, str) and code[:1] == "S"
        else _int(code, "status.code")
    )
    message = status.get("message") or ""
    events = None
    raw_events = g("events")
    if raw_events:
        if not isinstance(raw_events, list):
            raise _Reject("events must be a list")
        events = []
        for e in raw_events:
            if not isinstance(e, dict):
                raise _Reject("an event must be an object")
            events.append(
                {
                    "name": str(e.get("name") or ""),
                    "timestamp_ns": _int(_field(e, "timeUnixNano", "time_unix_nano"), "time"),
                    "attributes": _json_attributes(e.get("attributes")),
                }
            )
    return _span(
        trace_id,
        span_id,
        parent_id,
        _int(g("flags"), "flags"),
        name,
        _int(_field(span, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
        _int(_field(span, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
        code,
        message if isinstance(message, str) else str(message),
        _json_attributes(g("attributes")),
        events,
        resource_md,
        ours,
    )


def _json_attributes(kvs: Any) -> dict[str, Any]:
    if not kvs:
        return {}
    if not isinstance(kvs, list):
        raise _Reject("attributes must be a list of {key, value}")
    out: dict[str, Any] = {}
    for kv in kvs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise _Reject("an attribute must be an object with a string key")
        value = kv.get("value")
        if isinstance(value, dict):
            if "stringValue" in value:
                string = value["stringValue"]
                out[kv["key"]] = string if isinstance(string, str) else str(string)
                continue
            out[kv["key"]] = _json_value(value)  # {}: OTLP's null
    return out


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if key in ("stringValue", "string_value"):
            return item if isinstance(item, str) else str(item)
        if key in ("boolValue", "bool_value"):
            return bool(item)
        if key in ("intValue", "int_value"):
            if isinstance(item, str) and item[:1] == "-":
                return int(item)  # a ValueError rejects the span
            return _int(item, "intValue")
        if key in ("doubleValue", "double_value"):
            try:
                number = float(item)
            except (TypeError, ValueError):
                raise _Reject("doubleValue must be a number") from None
            return number if math.isfinite(number) else str(number)
        if key in ("arrayValue", "array_value"):
            values = item.get("values") if isinstance(item, dict) else None
            return [_json_value(v) for v in values or ()]
        if key in ("kvlistValue", "kvlist_value"):
            values = item.get("values") if isinstance(item, dict) else None
            return _json_attributes(values)
        if key in ("bytesValue", "bytes_value"):
            return item if isinstance(item, str) else None
    return None


# -- the mapping, shared by both encodings -----------------------------------------------


def _resource_metadata(attributes: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in attributes.items():
        if key.startswith(_SKIP_RESOURCE) or len(key) > _MAX_KEY:
            continue
        out[key] = _text(value)
    return out


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return text[:_MAX_VALUE]


def _span(
    trace_hex: str,
    span_id: str,
    parent_id: str | None,
    flags: int,
    name: str,
    start_ns: int,
    end_ns: int,
    code: int,
    message: str,
    a: dict[str, Any],
    events: list[dict[str, Any]] | None,
    resource_md: dict[str, str] | None,
    ours: bool,
) -> OtlpSpan:
    if end_ns and end_ns < start_ns:
        raise _Reject("end_time_unix_nano is before start_time_unix_nano")
    if not 0 <= start_ns < 2**63 or not 0 <= end_ns < 2**63:
        raise _Reject("times must be between 0 and 2**63 nanoseconds")
    trace_id = "tr-" + trace_hex
    local_root = parent_id is None
    if not local_root and flags & _REMOTE == _REMOTE:
        a[REMOTE_PARENT] = parent_id
        parent_id, local_root = None, True
    pop = a.pop
    # The usual case, one key each (session.id, user.id), inline.
    if GENAI_CONVERSATION_ID in a or LANGFUSE_SESSION_ID in a:
        session = _pick_id(a, _SESSION_KEYS)
    else:
        session = pop(SESSION_ID, None)
        if session is not None and (type(session) is not str or not 0 < len(session) <= _MAX_ID):
            a[SESSION_ID] = session
            session = _pick_id(a, _SESSION_KEYS)
    if LANGFUSE_USER_ID in a:
        user = _pick_id(a, _USER_KEYS)
    else:
        user = pop(USER_ID, None)
        if user is not None and (type(user) is not str or not 0 < len(user) <= _MAX_ID):
            a[USER_ID] = user
            user = _pick_id(a, _USER_KEYS)
    # Inputs and outputs: the common case (input.value, maybe a mime type) inline.
    inputs = outputs = None
    if INPUT_VALUE in a and MLFLOW_SPAN_INPUTS not in a:
        value, mime = pop(INPUT_VALUE), pop(INPUT_MIME_TYPE, None)
        if type(value) is str and mime != MIME_JSON:
            inputs = _quote(value)
        else:
            inputs = _json_text(value, as_json=True)
    elif MLFLOW_SPAN_INPUTS in a or GENAI_INPUT_MESSAGES in a:
        inputs = _io(a, MLFLOW_SPAN_INPUTS, INPUT_VALUE, INPUT_MIME_TYPE, GENAI_INPUT_MESSAGES)
    if OUTPUT_VALUE in a and MLFLOW_SPAN_OUTPUTS not in a:
        value, mime = pop(OUTPUT_VALUE), pop(OUTPUT_MIME_TYPE, None)
        if type(value) is str and mime != MIME_JSON:
            outputs = _quote(value)
        else:
            outputs = _json_text(value, as_json=True)
    elif MLFLOW_SPAN_OUTPUTS in a or GENAI_OUTPUT_MESSAGES in a:
        outputs = _io(a, MLFLOW_SPAN_OUTPUTS, OUTPUT_VALUE, OUTPUT_MIME_TYPE, GENAI_OUTPUT_MESSAGES)
    kind = pop(OPENINFERENCE_SPAN_KIND, None)
    span_type = _mlflow_span_type(pop(MLFLOW_SPAN_TYPE)) if MLFLOW_SPAN_TYPE in a else None
    if span_type is None:
        if type(kind) is str:
            span_type = _FROM_KIND.get(kind) or SPAN_TYPE_FROM_KIND.get(kind.upper(), "UNKNOWN")
        else:
            if kind is not None:
                a[OPENINFERENCE_SPAN_KIND] = kind
            operation = a.get(GENAI_OPERATION_NAME)
            span_type = (
                SPAN_TYPE_FROM_GENAI_OPERATION.get(operation, "UNKNOWN")
                if type(operation) is str
                else "UNKNOWN"
            )
    metadata: dict[str, str] | None = resource_md
    tags: dict[str, str] | None = None
    client_request_id = None
    if ours:
        for key in _DERIVED & a.keys():
            del a[key]
    elif span_type in _LLM_TYPES or not _LLM_KEYS.isdisjoint(a):
        _llm_attributes(a, span_type)
    if USAGE in a or COST in a:
        for key in _JSON_VALUED:
            value = a.get(key)
            if isinstance(value, str) and value[:1] == "{":
                with contextlib.suppress(ValueError):
                    a[key] = json.loads(value)
    # Trace-level keys (mostly on the root): tags, metadata, the client's request id.
    # One scan in C for the prefixes, most spans have none of them.
    joined = "\n".join(a)
    trace_keys = []
    if "mlflow.traceTag." in joined or ".metadata." in joined:
        trace_keys = [k for k in a if k.startswith(_TRACE_PREFIXES)]
    if trace_keys or TAG_TAGS in a or METADATA_JSON in a or CLIENT_REQUEST_ID in a:
        md: dict[str, str] = dict(metadata or {})
        found: dict[str, str] = {}
        for key in trace_keys:
            value = _text(a.pop(key))
            if key.startswith(MLFLOW_TRACE_TAG_PREFIX):
                tag = key[len(MLFLOW_TRACE_TAG_PREFIX) :]
                if tag != "mlflow.traceName":  # the root's name is the trace's name
                    found[tag] = value
            elif key.startswith(METADATA_PREFIX):
                md[key[len(METADATA_PREFIX) :]] = value
            else:
                md.setdefault(key[len(LANGFUSE_TRACE_METADATA_PREFIX) :], value)
        listed = a.pop(TAG_TAGS, None)
        if isinstance(listed, list):
            for item in listed:
                if isinstance(item, str):
                    key, _, value = item.partition(":")
                    found.setdefault(key, value)
        elif listed is not None:
            a[TAG_TAGS] = listed
        blob = a.get(METADATA_JSON)
        if isinstance(blob, str) and blob[:1] == "{":
            try:
                parsed = json.loads(blob)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                del a[METADATA_JSON]
                for key, value in parsed.items():
                    md.setdefault(str(key)[:_MAX_KEY], _text(value))
        request_id = a.pop(CLIENT_REQUEST_ID, None)
        if isinstance(request_id, str) and request_id:
            client_request_id = request_id[:_MAX_NAME]
        metadata, tags = md, found or None
    record = _new(
        SpanRecord,
        (
            trace_id,
            span_id,
            parent_id,
            name[:_MAX_NAME],
            span_type,
            start_ns,
            end_ns or None,
            _STATUS[code] if 0 <= code <= 2 else "UNSET",
            message[:_MAX_MESSAGE],
            inputs,
            outputs,
            a or None,
            events,
        ),
    )
    return _new(OtlpSpan, (record, local_root, session, user, metadata, tags, client_request_id))


_TRACE_PREFIXES = (MLFLOW_TRACE_TAG_PREFIX, METADATA_PREFIX, LANGFUSE_TRACE_METADATA_PREFIX)


def _pick_id(a: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    found = None
    for key in keys:
        value = a.pop(key, None)
        if found is None and value is not None and value != "":
            text = value if isinstance(value, str) else _text(value)
            if len(text) <= _MAX_ID:
                found = text
    return found


def _io(a: dict[str, Any], mlflow_key: str, key: str, mime_key: str, genai_key: str) -> str | None:
    """A span's inputs (or outputs) as JSON text, from the first key that has them."""
    mime = a.pop(mime_key, None)
    value = a.pop(key, None)
    exact = a.pop(mlflow_key, None)
    if exact is not None:
        text = _json_text(exact, as_json=True)
        if text is not None:
            return text
    if value is not None:
        return _json_text(value, as_json=mime == MIME_JSON)
    messages = a.get(genai_key)
    if messages is not None:
        del a[genai_key]
        return _json_text(messages, as_json=True)
    return None


def _json_text(value: Any, *, as_json: bool) -> str | None:
    """``value`` as JSON text: a string that holds strict JSON as it is (when
    ``as_json``), any other value encoded."""
    if isinstance(value, str) and as_json:
        try:
            _strict_loads(value)
        except ValueError:
            return _quote(value)  # not JSON after all: keep it as a string
        return value
    if type(value) is str:
        return _quote(value)
    return dumps(value)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_loader() -> Callable[[str], Any]:
    # orjson is strict already (no NaN, no Infinity) and several times faster.
    try:
        import orjson
    except ImportError:
        return json.JSONDecoder(parse_constant=_refuse).decode
    return orjson.loads


_strict_loads = _strict_loader()


def _mlflow_span_type(value: Any) -> str | None:
    if isinstance(value, str) and value[:1] == '"':  # MLflow sends JSON text
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return value[:100] if isinstance(value, str) and value else None


_FROM_KIND = dict(SPAN_TYPE_FROM_KIND)


def _first(a: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = a.get(key)
        if value is not None and value != "":
            return value
    return None


def _count(value: Any) -> int | None:
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def _llm_attributes(a: dict[str, Any], span_type: str) -> None:
    """The ``mlflow.*`` LLM attributes our totals read, from GenAI and OpenInference ones
    (each only where the span does not have it already)."""
    if USAGE not in a:
        get = a.get
        inp = get(GENAI_USAGE_INPUT_TOKENS)
        inp = _count(get(LLM_TOKEN_COUNT_PROMPT) if inp is None else inp)
        out = get(GENAI_USAGE_OUTPUT_TOKENS)
        out = _count(get(LLM_TOKEN_COUNT_COMPLETION) if out is None else out)
        if inp is not None or out is not None:
            total = _count(a.get(LLM_TOKEN_COUNT_TOTAL))
            inp, out = inp or 0, out or 0
            a[USAGE] = {
                "input_tokens": inp,
                "output_tokens": out,
                "total_tokens": inp + out if total is None else total,
            }
    if MODEL not in a:
        model = _first(a, GENAI_RESPONSE_MODEL, GENAI_REQUEST_MODEL, LLM_MODEL_NAME)
        if isinstance(model, str) and (USAGE in a or span_type in _LLM_TYPES):
            a[MODEL] = model
    if PROVIDER not in a and MODEL in a:
        provider = _first(a, GENAI_PROVIDER_NAME, GENAI_SYSTEM, LLM_PROVIDER, "llm.system")
        if isinstance(provider, str):
            a[PROVIDER] = provider
    if COST not in a and "llm.cost.total" in a:
        prompt, completion, total = (a.get(k) for k in _OPENINFERENCE_COST)
        cost = {
            "input_cost": prompt,
            "output_cost": completion,
            "total_cost": total,
        }
        a[COST] = {k: float(v) for k, v in cost.items() if isinstance(v, (int, float))}
