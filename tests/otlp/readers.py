"""Read traces back through each backend's OWN Python client, run in the server's venv.

Each snippet prints one JSON document; ``Server.client(code, *args)`` runs it with
``OTLP_SERVER_URL`` set.
"""

from __future__ import annotations

import json
from typing import Any

MLFLOW = r"""
import json, os, sys
import mlflow
mlflow.set_tracking_uri(os.environ["OTLP_SERVER_URL"])
experiment = sys.argv[1]
out = {"traces": [], "sessions": None}
for t in mlflow.search_traces(locations=[experiment], return_type="list", max_results=1000):
    info = t.info
    out["traces"].append({
        "trace_id": info.trace_id,
        "state": str(info.state),
        "name": info.tags.get("mlflow.traceName"),
        "session": info.trace_metadata.get("mlflow.trace.session"),
        "user": info.trace_metadata.get("mlflow.trace.user"),
        "request_preview": info.request_preview,
        "response_preview": info.response_preview,
        "tags": dict(info.tags),
        "spans": [
            {"name": s.name, "type": s.span_type, "parent": s.parent_id,
             "inputs": s.inputs, "outputs": s.outputs}
            for s in (t.data.spans if t.data else [])
        ],
    })
session = sys.argv[2] if len(sys.argv) > 2 else None
if session:
    found = mlflow.search_traces(
        locations=[experiment], return_type="list",
        filter_string=f"metadata.`mlflow.trace.session` = '{session}'",
    )
    out["by_session"] = len(found)
if hasattr(mlflow, "search_sessions"):
    try:
        out["sessions"] = sorted(
            [getattr(s, "session_id", None) or str(s), getattr(s, "trace_count", None)]
            for s in mlflow.search_sessions(locations=[experiment])
        )
    except Exception as exc:  # an experimental API: report, do not fail the read
        out["sessions"] = f"error: {type(exc).__name__}: {exc}"
print(json.dumps(out, default=str))
"""

PHOENIX = r"""
import json, os, sys
from phoenix.client import Client
client = Client(base_url=os.environ["OTLP_SERVER_URL"])
project = sys.argv[1]
spans = client.spans.get_spans(project_identifier=project, limit=10000)
out = {"spans": [
    {"name": s["name"], "kind": s["span_kind"], "trace_id": s["context"]["trace_id"],
     "parent_id": s.get("parent_id"), "attributes": s.get("attributes", {})}
    for s in spans
]}
sessions = client.sessions.list(project_name=project)
out["sessions"] = {
    s["session_id"]: {"traces": len(s["traces"]), "tokens": s.get("token_count_total")}
    for s in sessions
}
out["turns"] = {
    sid: [
        {"input": (t.get("input") or {}).get("value"),
         "output": (t.get("output") or {}).get("value")}
        for t in client.sessions.get_session_turns(session_id=sid)
    ]
    for sid in out["sessions"]
}
print(json.dumps(out, default=str))
"""


def read(server: Any, code: str, *args: str) -> dict[str, Any]:
    text = server.client(code, *args)
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result
