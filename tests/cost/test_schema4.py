"""A schema 3 file, written by the sessiontrace before LLM totals, upgraded in place."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import sessiontrace
from sessiontrace._store._sqlite import SCHEMA_VERSION

from .conftest import last_trace, llm_call, usage

# Written by the code of commit b9f85f2 (schema 3); not named *.db, which git ignores.
SCHEMA_3 = Path(__file__).parent / "data" / "schema3.sqlite3"


def test_a_schema_3_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(SCHEMA_3, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        old_rows = conn.execute("SELECT * FROM traces ORDER BY trace_id").fetchall()
    sessiontrace.configure(tracking_uri=f"sqlite:///{path}")
    old = sessiontrace.get_trace("tr-schema3-0001")
    assert old is not None
    assert old.info.user_id == "old-u0" and old.info.tags == {"kind": "old"}
    assert [s.name for s in old.data.spans] == ["chat", "llm"]
    assert old.data.spans[1].attributes["mlflow.llm.model"] == "gpt-4o-mini"
    # Old traces are not re-priced: their LLM columns stay NULL (no known calls).
    assert "mlflow.trace.tokenUsage" not in old.info.trace_metadata
    with (
        sessiontrace.user_session(user_id="old-u1", session_id="old-s0"),
        sessiontrace.start_span("chat"),
    ):
        llm_call(tokens=usage(1000, 100, cache_read=400))
    new = last_trace()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        columns = [r[1] for r in conn.execute("PRAGMA table_info(traces)")]
        assert columns[-6:] == [
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "cost",
            "llm_calls",
            "unpriced_calls",
        ]
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(spans)")}
        assert "spans_model" in indexes
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(traces)")}
        assert {"traces_total_tokens", "traces_cost"} <= indexes
        # the old rows are unchanged but for the six new (NULL) columns
        rows = conn.execute(
            "SELECT * FROM traces WHERE trace_id LIKE 'tr-schema3-%' ORDER BY trace_id"
        ).fetchall()
        assert [r[:-6] for r in rows] == old_rows
        assert all(r[-6:] == (None,) * 6 for r in rows)
    assert json.loads(new.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == 1100
    # search, frames and analytics over old and new traces together
    assert [
        t.info.trace_id
        for t in sessiontrace.search_traces("trace.total_tokens > 0", return_type="list")
    ] == [new.info.trace_id]
    frame = sessiontrace.search_traces("user = 'old-u1'", order_by=["timestamp"])
    assert frame["info.total_tokens"].tolist() == [0, 0, 0, 1100]
    summary = sessiontrace.get_session_summary("old-s0")
    assert summary is not None and summary.turns == 3
    assert (summary.llm_calls, summary.total_tokens, summary.unpriced_calls) == (1, 1100, 0)
    (user,) = [u for u in sessiontrace.list_users(order_by="cost DESC") if u.user_id == "old-u1"]
    assert user.traces == 4 and user.cost is not None and user.cost > 0
    assert [m.model for m in sessiontrace.model_breakdown()] == ["gpt-4o-mini"]
