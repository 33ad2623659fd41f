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


def post_under_key(uri: str, key: str, worker: int, start_at: float) -> list[str]:
    """A process's posts under one dedupe key (the feedback endpoint's), all at once:
    the ids the store answered with."""
    from sessiontrace import AssessmentSource, Feedback
    from sessiontrace._store import open_store

    store = open_store(uri)
    try:
        store.count_traces()  # connect (and create the schema) before the start
        while time.time() < start_at:
            time.sleep(0.001)
        return [
            store.put_assessment(
                Feedback(
                    name="thumbs_up",
                    value=(worker + i) % 2 == 0,
                    trace_id="tr-1",
                    source=AssessmentSource(source_type="HUMAN", source_id="u"),
                ),
                dedupe_key=key,
            ).assessment_id
            for i in range(20)
        ]
    finally:
        store.close()
