"""Assessments logged with an http tracking URI reach a real server's store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.server.conftest import ServerProcess, free_port

import sessiontrace
from sessiontrace._export._wire import encode_batch
from sessiontrace._records import AssessmentChange
from sessiontrace._store import open_store
from sessiontrace.server._ingest import IngestError, parse_batch

pytestmark = pytest.mark.backends

USER = sessiontrace.AssessmentSource(source_type="HUMAN", source_id="user-1")


@pytest.fixture
def server(db: str) -> Iterator[ServerProcess]:
    """``python -m sessiontrace.server`` on the test's store, on 127.0.0.1."""
    srv = ServerProcess(db, free_port())
    srv.start()
    yield srv
    srv.stop()


def _stored(db: Any, tid: str) -> list[Any]:
    store = open_store(db)
    try:
        return store.assessments_for([tid]).get(tid, [])
    finally:
        store.close()


def test_feedback_reaches_the_server(server: ServerProcess) -> None:
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    with sessiontrace.start_span("chat") as span:
        tid = span.trace_id
        live = sessiontrace.log_feedback(trace_id=tid, name="quality", value=0.5)  # live
    fb = sessiontrace.log_feedback(
        trace_id=tid, name="thumbs_up", value=False, source=USER, rationale="wrong"
    )
    e = sessiontrace.log_expectation(trace_id=tid, name="expected", value={"a": [1]})
    gone = sessiontrace.log_feedback(trace_id=tid, name="tmp", value="x")
    assert sessiontrace.flush(10)
    sessiontrace.delete_assessment(tid, gone.assessment_id)
    new = sessiontrace.override_feedback(trace_id=tid, assessment_id=live.assessment_id, value=0.9)
    sessiontrace.update_assessment(
        tid, fb.assessment_id, sessiontrace.Feedback(name="thumbs_up", value=True, rationale="ok")
    )
    assert sessiontrace.flush(10)
    stored = {a.assessment_id: a for a in _stored(server.db, tid)}
    assert set(stored) == {live.assessment_id, fb.assessment_id, e.assessment_id, new.assessment_id}
    assert stored[live.assessment_id].valid is False
    assert stored[new.assessment_id].name == "quality"
    assert stored[new.assessment_id].overrides == live.assessment_id
    assert stored[new.assessment_id].value == 0.9
    assert stored[fb.assessment_id].value is True and stored[fb.assessment_id].rationale == "ok"
    assert stored[fb.assessment_id].source == USER
    assert stored[e.assessment_id].value == {"a": [1]}
    assert sessiontrace.get_stats()["dropped"] == 0
    # the server's JSON API shows them with the trace
    r = httpx.get(
        f"{server.url}/api/trace",
        params={"id": tid},
        timeout=5,
    )
    names = {a["assessment_name"] for a in r.json()["info"]["assessments"]}
    assert names == {"quality", "thumbs_up", "expected"}
    with pytest.raises(ValueError, match="sqlite"):
        sessiontrace.get_assessment(tid, fb.assessment_id)


def test_a_change_sent_twice_or_naming_nothing_costs_no_traces(server: ServerProcess) -> None:
    """A retried batch applies once; a change for an assessment the server does not
    have is dropped, and the batch's trace is still written."""
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    fb = sessiontrace.Feedback(name="n", value=1, trace_id="tr-x")
    fb.assessment_id = "a-" + "0" * 32
    put = AssessmentChange("tr-x", "put", fb.assessment_id, fb.to_dictionary())
    body = encode_batch([put, put, AssessmentChange("tr-x", "delete", "a-missing", None)])
    for _ in range(2):
        r = httpx.post(
            f"{server.url}/api/ingest",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
    assert [a.assessment_id for a in _stored(server.db, "tr-x")] == [fb.assessment_id]


@pytest.mark.parametrize(
    ("assessment", "message"),
    [
        (
            {"assessment_name": "n", "source": {"source_type": "ROBOT"}, "feedback": {"value": 1}},
            "source type",
        ),
        (
            {
                "assessment_name": "n",
                "source": {"source_type": "CODE"},
                "feedback": {"value": "NaN"},
            },
            None,
        ),
        (
            {"assessment_name": "", "source": {"source_type": "CODE"}, "feedback": {"value": 1}},
            "at least 1",
        ),
        ({"assessment_name": "n", "source": {"source_type": "CODE"}}, "Unknown assessment type"),
        (
            {
                "assessment_name": "n",
                "source": {"source_type": "CODE"},
                "feedback": {"value": 1},
                "x": 1,
            },
            "Extra",
        ),
    ],
)
def test_ingest_validates_assessments(assessment: dict[str, Any], message: str | None) -> None:
    body = json.dumps(
        {
            "version": 1,
            "items": [
                {
                    "kind": "assessment",
                    "trace_id": "tr-1",
                    "op": "put",
                    "assessment_id": "a-1",
                    "assessment": assessment,
                }
            ],
        }
    ).encode()
    if message is None:  # the string "NaN" is a str value, not a number: accepted
        assert parse_batch(body, max_items=10)[0].assessment["feedback"] == {"value": "NaN"}
        return
    with pytest.raises(IngestError) as info:
        parse_batch(body, max_items=10)
    assert message in json.dumps(info.value.errors)


def test_ingest_refuses_a_nan_number() -> None:
    body = (
        b'{"version":1,"items":[{"kind":"assessment","trace_id":"t","op":"put",'
        b'"assessment_id":"a-1","assessment":{"assessment_name":"n",'
        b'"source":{"source_type":"CODE"},"feedback":{"value":NaN}}}]}'
    )
    with pytest.raises(IngestError):
        parse_batch(body, max_items=10)


def test_a_remote_update_merges_metadata_as_a_local_one(server: ServerProcess) -> None:
    sessiontrace.configure(tracking_uri=server.url, flush_interval=0.01)
    with sessiontrace.start_span("chat") as span:
        tid = span.trace_id
    fb = sessiontrace.log_feedback(
        trace_id=tid, name="n", value=1, rationale="r", metadata={"a": 1}
    )
    sessiontrace.update_assessment(
        tid, fb.assessment_id, sessiontrace.Feedback(name="n", value=2, metadata={"b": 2})
    )
    wrong = sessiontrace.Expectation(name="n", value=3)
    sessiontrace.update_assessment(tid, fb.assessment_id, wrong)  # dropped by the server
    assert sessiontrace.flush(10)
    [stored] = _stored(server.db, tid)
    assert stored.value == 2 and stored.rationale == "r" and stored.metadata == {"a": "1", "b": "2"}
    assert sessiontrace.get_stats()["dropped"] == 0
