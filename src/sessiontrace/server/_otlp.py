"""``POST /v1/traces``: OTLP/HTTP in, the same trace rows as our own ingest out.

The request (spec: opentelemetry-proto ``docs/specification.md``, OTLP/HTTP):

- ``Content-Type`` ``application/x-protobuf`` or ``application/json`` (parameters
  ignored), anything else 415; ``Content-Encoding`` ``gzip``, ``deflate`` (zlib or
  raw) or none, anything else 415;
- the body is capped as sent (the server's ``max_body_bytes``) and again after
  inflating (64 MiB, the spec's default), each 413, so a zip bomb costs one cap;
- a body that is no ``ExportTraceServiceRequest`` is 400, a store that is busy 503
  with ``Retry-After``, too many requests waiting for the store 429; a bad span alone
  is dropped and counted in ``partial_success`` (200: the client must not resend);
- the answer is in the request's encoding: an empty ``ExportTraceServiceResponse``
  (0 bytes, or ``{}``), errors as a ``google.rpc.Status``.

Traces arrive in pieces: an SDK's batch processor sends whatever spans ended, so a
child comes before its root, a trace spans several requests, a retry resends spans,
and a service's entry span has a remote parent. Every request is merged into what the
store already holds for its traces (under one lock, so two requests for a trace do
not race), keyed by (trace id, span id): a resent span replaces itself, a late one
joins its trace, and the trace row is written again with all of them. The trace's
root is its span without a parent, or under a remote parent (``flags`` 0x300); until
that span has arrived and ended, the trace is ``IN_PROGRESS`` with its earliest
orphan standing in as root. Session and user: the first non-empty value seen wins.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from .._entities import METADATA_SESSION, METADATA_USER, Span, Trace, TraceState
from .._otlp._decode import Decoded, OtlpDecodeError, OtlpSpan, decode_json, decode_protobuf
from .._pipeline import RetryableExportError
from .._records import SpanRecord, TraceRecord
from .._serialize import dumps
from .._store._base import Store
from ..llm._keys import TRACE_COST, TRACE_TOKEN_USAGE
from ._body import BodyTooLarge, read_body

__all__ = ["MAX_INFLATED_BYTES", "assemble", "otlp_traces_endpoint"]

logger = logging.getLogger("sessiontrace")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_INFLATED_BYTES = 64 * 1024 * 1024
_MAX_WAITING = 16  # requests queued for the store before the next one gets 429
_CHUNK = 1 << 20
# google.rpc.Code values for the error bodies
_RPC_CODE = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 503: 14}


class _Writer(Protocol):
    store: Store

    def export(self, items: Sequence[Any]) -> None: ...


def otlp_traces_endpoint(
    writer: _Writer,
    *,
    max_body_bytes: int,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
) -> Callable[[Request], Awaitable[Response]]:
    """The ``/v1/traces`` endpoint writing through ``writer`` (the app's one writer)."""
    merge_lock = threading.Lock()
    waiting = 0

    def write(spans: list[OtlpSpan]) -> None:
        with merge_lock:
            trace_ids = list(dict.fromkeys(s.record.trace_id for s in spans))
            try:
                loaded = writer.store.load_traces(trace_ids)
            except Exception as exc:  # locked, or the database away: the client retries
                logger.debug("sessiontrace: OTLP: reading the stored traces failed", exc_info=True)
                raise RetryableExportError(f"cannot read the store: {type(exc).__name__}") from exc
            stored = {t.info.trace_id: t for t in loaded}
            writer.export(assemble(spans, stored))

    async def endpoint(request: Request) -> Response:
        nonlocal waiting
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return _status(JSON, 415, f"Content-Type must be {PROTOBUF} or {JSON}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "deflate"):
            return _status(content_type, 415, "Content-Encoding must be gzip, deflate or none")
        try:
            body = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _status(content_type, 413, f"the body is larger than {max_body_bytes} bytes")

        def decode() -> Decoded:
            raw = _inflate(body, encoding, max_inflated_bytes)
            return decode_protobuf(raw) if content_type == PROTOBUF else decode_json(raw)

        try:
            decoded = await anyio.to_thread.run_sync(decode)
        except BodyTooLarge:
            return _status(
                content_type, 413, f"inflated, the body is over {max_inflated_bytes} bytes"
            )
        except OtlpDecodeError as exc:
            return _status(content_type, 400, str(exc))
        except ImportError:
            return _status(
                content_type,
                415,
                "protobuf needs opentelemetry-proto on the server "
                "(pip install 'sessiontrace[server]'); or send OTLP/JSON",
            )
        if decoded.spans:
            if waiting >= _MAX_WAITING:
                return _status(content_type, 429, "too many requests waiting", retry_after=True)
            waiting += 1
            try:
                await anyio.to_thread.run_sync(write, decoded.spans)
            except RetryableExportError:
                return _status(content_type, 503, "the store is busy, retry", retry_after=True)
            finally:
                waiting -= 1
        return _success(content_type, decoded)

    return endpoint


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body decompressed, never past ``limit`` bytes (``BodyTooLarge`` beyond)."""
    if encoding in ("identity", ""):
        if len(body) > limit:
            raise BodyTooLarge
        return body
    if encoding == "gzip":
        return _inflate_with(body, 31, limit)
    try:
        return _inflate_with(body, 15, limit)  # deflate as the spec means it: zlib
    except OtlpDecodeError:
        return _inflate_with(body, -15, limit)  # what some clients send: raw deflate


def _inflate_with(body: bytes, wbits: int, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:  # gzip may hold several members, one after another
            inflater = zlib.decompressobj(wbits)
            while data:
                chunk = inflater.decompress(data, min(_CHUNK, limit - size + 1))
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                out.append(chunk)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
                if not chunk and not data:
                    break
            if not inflater.eof:
                raise OtlpDecodeError("the compressed body ends early")
            data = inflater.unused_data
    except zlib.error as exc:
        raise OtlpDecodeError(f"cannot inflate the body: {exc}") from None
    return b"".join(out)


# -- answers -----------------------------------------------------------------------------


def _success(content_type: str, decoded: Decoded) -> Response:
    message = "; ".join(decoded.errors)
    if content_type == JSON:
        body: dict[str, Any] = {}
        if decoded.rejected:
            body["partialSuccess"] = {
                "rejectedSpans": str(decoded.rejected),  # int64: a string in OTLP/JSON
                "errorMessage": message,
            }
        return Response(json.dumps(body), media_type=JSON)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = message
    return Response(response.SerializeToString(), media_type=PROTOBUF)


def _status(content_type: str, status: int, message: str, *, retry_after: bool = False) -> Response:
    """An error as a ``google.rpc.Status`` (code, message) in the request's encoding."""
    code = _RPC_CODE.get(status, 2)
    headers = {"Retry-After": "1"} if retry_after else None
    if content_type == PROTOBUF:
        text = message.encode("utf-8")
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
        return Response(body, status, headers, media_type=PROTOBUF)
    return Response(
        json.dumps({"code": code, "message": message}), status, headers, media_type=JSON
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# -- assembling traces from spans that arrive in pieces ------------------------------------


def assemble(received: Iterable[OtlpSpan], stored: Mapping[str, Trace]) -> list[TraceRecord]:
    """One ``TraceRecord`` a trace of ``received``: its spans merged with those of the
    ``stored`` trace of the same id (a received span replaces a stored one)."""
    groups: dict[str, list[OtlpSpan]] = {}
    for span in received:
        groups.setdefault(span.record.trace_id, []).append(span)
    return [_trace(trace_id, group, stored.get(trace_id)) for trace_id, group in groups.items()]


def _trace(trace_id: str, group: list[OtlpSpan], old: Trace | None) -> TraceRecord:
    spans: dict[str, SpanRecord] = {}
    metadata: dict[str, str] = {}
    tags: dict[str, str] = {}
    client_request_id = None
    if old is not None:
        for stored in old.data.spans:
            spans[stored.span_id] = _record(trace_id, stored)
        metadata.update(old.info.trace_metadata)
        metadata.pop(TRACE_TOKEN_USAGE, None)  # the store computes them again
        metadata.pop(TRACE_COST, None)
        tags.update(old.info.tags)
        client_request_id = old.info.client_request_id
    for span in group:
        spans[span.record.span_id] = span.record
    # Roots last, so that what the root says about its trace wins over its children.
    facts = sorted(group, key=lambda s: (s.local_root, s.record.start_ns))
    first = sorted(group, key=lambda s: (not s.local_root, s.record.start_ns))
    for span in facts:
        if span.metadata:
            metadata.update(span.metadata)
        if span.tags:
            tags.update(span.tags)
    for key, attr in ((METADATA_SESSION, "session_id"), (METADATA_USER, "user_id")):
        if not metadata.get(key):
            value = next((getattr(s, attr) for s in first if getattr(s, attr)), None)
            if value is not None:
                metadata[key] = value
            else:
                metadata.pop(key, None)
    if client_request_id is None:
        client_request_id = next((s.client_request_id for s in first if s.client_request_id), None)
    ordered = sorted(spans.values(), key=lambda s: (s.start_ns, s.span_id))
    roots = [s for s in ordered if s.parent_id is None]
    if roots:
        root = roots[0]
        complete = root.end_ns is not None
    else:
        ids = spans.keys()
        root = next((s for s in ordered if s.parent_id not in ids), ordered[0])
        complete = False
    if not complete:
        state = TraceState.IN_PROGRESS
    else:
        state = TraceState.ERROR if root.status == "ERROR" else TraceState.OK
    start = ordered[0].start_ns
    end = max(s.end_ns or s.start_ns for s in ordered)
    return TraceRecord(
        trace_id,
        start,
        end,
        state,
        root,
        tuple(ordered),
        metadata,
        tags,
        None,  # previews: from the root, by the store
        None,
        client_request_id,
    )


def _record(trace_id: str, span: Span) -> SpanRecord:
    """A stored span as a record again."""
    inputs, outputs = span.inputs, span.outputs
    return SpanRecord(
        trace_id,
        span.span_id,
        span.parent_id,
        span.name,
        span.span_type,
        span.start_time_ns,
        span.end_time_ns,
        span.status,
        span.status_message,
        None if inputs is None else dumps(inputs),
        None if outputs is None else dumps(outputs),
        dict(span.attributes) or None,
        [
            {"name": e.name, "timestamp_ns": e.timestamp_ns, "attributes": dict(e.attributes)}
            for e in span.events
        ]
        or None,
    )
