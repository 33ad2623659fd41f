"""A finished trace record, built without tracing (for stores on their own)."""

from __future__ import annotations

import time
import uuid

from sessiontrace._records import SpanRecord, TraceRecord


def one_trace(user_id: str = "u-1", session_id: str = "s-1") -> TraceRecord:
    tid = "tr-" + uuid.uuid4().hex
    now = time.time_ns()
    root = SpanRecord(
        tid, "sp-1", None, "chat", "CHAIN", now, now + 1000, "OK", "", '"hi"', '"yo"', None, None
    )
    metadata = {"mlflow.trace.user": user_id, "mlflow.trace.session": session_id}
    return TraceRecord(
        tid, now, now + 1000, "OK", root, (root,), metadata, {}, '"hi"', '"yo"', None
    )
