"""The assessments table on both stores: writes, reads, overrides, dedupe, migration."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace import (
    AssessmentError,
    AssessmentNotFoundError,
    AssessmentSource,
    Expectation,
    Feedback,
)
from sessiontrace._store import open_store

pytestmark = pytest.mark.backends

HUMAN = AssessmentSource(source_type="HUMAN", source_id="user-1")


def _feedback(trace_id: str = "tr-1", value: Any = True, **kw: Any) -> Feedback:
    return Feedback(
        name=kw.pop("name", "thumbs_up"), value=value, source=HUMAN, trace_id=trace_id, **kw
    )


def test_put_and_get_round_trip_every_kind_of_value(store: Any) -> None:
    values: list[Any] = [True, False, 0, 3, 2.5, -1e300, "good", "", [1, "a", None], {"k": [True]}]
    stored = [
        store.put_assessment(_feedback(value=v, rationale="why", metadata={"n": 1})) for v in values
    ]
    for a, v in zip(stored, values, strict=True):
        assert a.assessment_id.startswith("a-") and len(a.assessment_id) == 34
        got = store.get_assessment("tr-1", a.assessment_id)
        assert isinstance(got, Feedback)
        assert got.value == v and type(got.value) is type(v)
        assert got.rationale == "why" and got.metadata == {"n": "1"}  # MLflow: str values
        assert got.source == HUMAN and got.valid is True and got.overrides is None
        assert got == a
    e = store.put_assessment(Expectation(name="expected", value={"answer": 42}, trace_id="tr-1"))
    got = store.get_assessment("tr-1", e.assessment_id)
    assert isinstance(got, Expectation) and got.value == {"answer": 42}
    assert got.source == AssessmentSource(source_type="HUMAN", source_id="default")


def test_value_columns_for_roll_ups(store: Any) -> None:
    store.put_assessment(_feedback(value=True))
    store.put_assessment(_feedback(value=False))
    store.put_assessment(_feedback(value=4))
    store.put_assessment(_feedback(value="meh"))
    store.put_assessment(_feedback(value=None, error=AssessmentError(error_code="TIMEOUT")))
    rows = (
        store.connection()
        .execute(
            "SELECT value_json, value_num, value_bool FROM assessments "
            "ORDER BY create_time_ms, value_json"
        )
        .fetchall()
    )
    assert sorted(tuple(r) for r in rows if r[0] is not None) == sorted(
        [("true", 1.0, 1), ("false", 0.0, 0), ("4", 4.0, None), ('"meh"', None, None)]
    )
    assert [tuple(r) for r in rows if r[0] is None] == [(None, None, None)]


def test_error_round_trips(store: Any) -> None:
    a = store.put_assessment(_feedback(value=None, error=ValueError("judge timed out")))
    got = store.get_assessment("tr-1", a.assessment_id)
    assert got.error.error_code == "ValueError"
    assert got.error.error_message == "judge timed out"
    assert got.value is None


def test_get_unknown_or_on_another_trace_raises(store: Any) -> None:
    a = store.put_assessment(_feedback())
    with pytest.raises(AssessmentNotFoundError):
        store.get_assessment("tr-2", a.assessment_id)
    with pytest.raises(AssessmentNotFoundError):
        store.get_assessment("tr-1", "a-nope")
    with pytest.raises(AssessmentNotFoundError):
        store.delete_assessment("tr-1", "a-nope")
    with pytest.raises(AssessmentNotFoundError):
        store.update_assessment("tr-1", "a-nope", value=1)


def test_assessments_for_groups_by_trace_oldest_first(store: Any) -> None:
    a = store.put_assessment(_feedback("tr-1", create_time_ms=2000))
    b = store.put_assessment(_feedback("tr-1", create_time_ms=1000))
    c = store.put_assessment(_feedback("tr-2"))
    found = store.assessments_for(["tr-1", "tr-2", "tr-3"])
    assert [x.assessment_id for x in found["tr-1"]] == [b.assessment_id, a.assessment_id]
    assert [x.assessment_id for x in found["tr-2"]] == [c.assessment_id]
    assert "tr-3" not in found
    assert store.assessments_for([]) == {}


def test_override_keeps_the_original_invalid_and_delete_restores_it(store: Any) -> None:
    old = store.put_assessment(_feedback(value=0.2, span_id="s1"))
    new = store.override_assessment(
        "tr-1", old.assessment_id, Feedback(name="ignored", value=0.9, source=HUMAN)
    )
    assert new.overrides == old.assessment_id and new.valid is True
    assert new.name == "thumbs_up" and new.span_id == "s1"
    assert store.get_assessment("tr-1", old.assessment_id).valid is False
    assert store.get_assessment("tr-1", old.assessment_id).value == 0.2
    store.delete_assessment("tr-1", new.assessment_id)
    assert store.get_assessment("tr-1", old.assessment_id).valid is True
    with pytest.raises(AssessmentNotFoundError):
        store.override_assessment("tr-1", "a-nope", _feedback())
    e = store.put_assessment(Expectation(name="x", value=1, trace_id="tr-1"))
    with pytest.raises(ValueError, match="not a feedback"):
        store.override_assessment("tr-1", e.assessment_id, _feedback())


def test_update_changes_fields_in_place(store: Any) -> None:
    a = store.put_assessment(_feedback(value=True, create_time_ms=1000, last_update_time_ms=1000))
    b = store.update_assessment("tr-1", a.assessment_id, value=False, rationale="changed my mind")
    assert b.assessment_id == a.assessment_id and b.create_time_ms == 1000
    assert b.last_update_time_ms > 1000
    got = store.get_assessment("tr-1", a.assessment_id)
    assert got.value is False and got.rationale == "changed my mind"
    with pytest.raises(ValueError):
        store.update_assessment("tr-1", a.assessment_id, value=float("nan"))
    with pytest.raises(ValueError, match="cannot update"):
        store.update_assessment("tr-1", a.assessment_id, create_time_ms=5)
    assert store.get_assessment("tr-1", a.assessment_id).value is False


def test_dedupe_key_updates_one_row(store: Any) -> None:
    first = store.put_assessment(_feedback(value=True, create_time_ms=1000), dedupe_key="k")
    second = store.put_assessment(
        _feedback(value=False, rationale="no", create_time_ms=5000), dedupe_key="k"
    )
    assert second.assessment_id == first.assessment_id
    assert second.create_time_ms == 1000 and second.value is False and second.rationale == "no"
    assert len(store.assessments_for(["tr-1"])["tr-1"]) == 1
    other = store.put_assessment(_feedback(value=True), dedupe_key="k2")
    assert other.assessment_id != first.assessment_id


def test_dedupe_is_atomic_under_concurrent_posts(store: Any, tracking_uri: str) -> None:
    """Sixteen threads, each with its own store object (own connections, as separate
    app processes would have), post under one key at once: one row survives."""
    stores = [open_store(tracking_uri) for _ in range(16)]
    barrier = threading.Barrier(len(stores))
    ids: list[str] = []
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            barrier.wait()
            ids.append(
                stores[i]
                .put_assessment(_feedback(value=i % 2 == 0), dedupe_key="tr-1\x1fthumbs\x1fu")
                .assessment_id
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len(set(ids)) == 1
    assert len(store.assessments_for(["tr-1"])["tr-1"]) == 1


@pytest.mark.slow
def test_dedupe_is_atomic_across_processes(store: Any, tracking_uri: str) -> None:
    """Four processes post twenty times each under one key, starting together."""
    import multiprocessing
    import time

    from tests.feedback._traces import post_under_key

    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3  # after every process has started and connected
    with ctx.Pool(4) as pool:
        answers = pool.starmap(
            post_under_key,
            [(tracking_uri, "tr-1\x1fthumbs_up\x1fu", w, start_at) for w in range(4)],
        )
        pool.close()
        pool.join()
    ids = {i for answer in answers for i in answer}
    assert len(ids) == 1
    rows = store.assessments_for(["tr-1"])["tr-1"]
    assert [r.assessment_id for r in rows] == list(ids)


def test_trace_owner(store: Any) -> None:
    import sessiontrace

    with (
        sessiontrace.user_session(user_id="u-1", session_id="s-1"),
        sessiontrace.start_span("chat") as span,
    ):
        tid = span.trace_id
    with sessiontrace.start_span("anonymous") as span:
        anon = span.trace_id
    sessiontrace.flush()
    assert store.trace_owner(tid) == ("u-1", "s-1")
    assert store.trace_owner(anon) == (None, None)
    assert store.trace_owner("tr-missing") is None


# Written by the code of commit 5ef0595 (schema 4); not named *.db, which git ignores.
SCHEMA_4 = Path(__file__).parent / "data" / "schema4.sqlite3"


@pytest.mark.only_backend("sqlite")
def test_sqlite_migrates_a_schema_4_file(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "old.db"
    shutil.copy(SCHEMA_4, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        old_rows = conn.execute("SELECT * FROM traces ORDER BY trace_id").fetchall()
    conn.close()
    sessiontrace.configure(tracking_uri=f"sqlite:///{path}")
    fb = sessiontrace.log_feedback(trace_id="tr-schema4-0002", name="thumbs_up", value=False)
    old = sessiontrace.get_trace("tr-schema4-0001")
    assert old is not None and old.info.tags == {"kind": "old"} and old.info.assessments == []
    assert sessiontrace.get_trace("tr-schema4-0002").info.assessments == [fb]  # type: ignore[union-attr]
    found = sessiontrace.search_traces("feedback.thumbs_up = false", return_type="list")
    assert [t.info.trace_id for t in found] == ["tr-schema4-0002"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
        assert conn.execute("SELECT * FROM traces ORDER BY trace_id").fetchall() == old_rows
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(assessments)")}
        assert {"assessments_trace", "assessments_name", "assessments_dedupe"} <= indexes
    conn.close()


@pytest.mark.only_backend("postgresql")
def test_postgres_migrates_a_schema_4_database(backend: str, tracking_uri: str) -> None:
    from tests.feedback._traces import one_trace

    first = open_store(tracking_uri)
    first.export([one_trace()])
    conn = first.connection()
    conn.execute("DROP TABLE assessments")
    conn.execute("UPDATE sessiontrace_schema SET version = 4")
    first.close()
    second = open_store(tracking_uri)
    try:
        tid = second.list_trace_ids()[0]
        a = second.put_assessment(_feedback(tid))
        assert second.get_trace(tid).info.assessments == [a]  # type: ignore[union-attr]
        row = second.connection().execute("SELECT version FROM sessiontrace_schema").fetchone()
        assert row[0] == 5
    finally:
        second.close()
