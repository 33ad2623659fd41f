"""The analysis code of the reference pages, run with ``import sessiontrace as mlflow``.

The functions below are the seeds' code as published (only the OpenAI call is
replaced by a canned answer); porting means changing the import, nothing else.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd
import pytest

import sessiontrace as mlflow

pytestmark = pytest.mark.backends


def chat_completion(message: str) -> str:
    return f"An answer to: {message}"


@mlflow.trace
def my_app(user_id: str, session_id: str, message: str) -> str:
    """Process a chat message with extra content logging for traces."""
    mlflow.update_current_trace(
        metadata={
            "mlflow.trace.user": user_id,
            "mlflow.trace.session": session_id,
        },
        tags={
            "query_category": "chat",
        },
    )
    app_environment = os.getenv("APP_ENVIRONMENT", "development")
    mlflow.update_current_trace(
        metadata={
            "mlflow.source.type": app_environment,
            "app_version": os.getenv("APP_VERSION", "1.0.0"),
            "deployment_id": os.getenv("DEPLOYMENT_ID", "unknown"),
        }
    )
    return chat_completion(message)


def analyze_user_behavior(user_id: str, days: int = 7) -> Any:
    """Analyze activity patterns for a specific user."""
    cutoff_ms = int((time.time() - days * 86400) * 1000)
    traces = mlflow.search_traces(
        filter_string=f"metadata.`mlflow.trace.user` = '{user_id}' AND "
        f"trace.timestamp_ms > {cutoff_ms}",
        order_by=["trace.timestamp_ms DESC"],
    )
    if len(traces) == 0:
        print(f"No activity found for user {user_id}")
        return None
    total_interactions = len(traces)
    unique_sessions = set(
        row.trace_metadata.get("mlflow.trace.session", "") for index, row in traces.iterrows()
    )
    unique_sessions.discard("")
    print(f"User {user_id} Activity Report ({days} days)")
    print("=" * 50)
    print(f"Total interactions: {total_interactions}")
    print(f"Unique sessions: {len(unique_sessions)}")
    traces["date"] = pd.to_datetime(traces["request_time"], unit="ms").dt.date
    daily_activity = traces.groupby("date").size()
    print("\nDaily activity:")
    print(daily_activity.to_string())
    query_categories = traces["tags"].apply(lambda tags: tags.get("query_category"))
    category_counts = query_categories.value_counts()
    print("\nQuery categories:")
    print(category_counts.to_string())
    print("\nPerformance:")
    print(f"Average response time: {traces['execution_duration'].mean():.1f}ms")
    print(f"Error rate: {(traces['state'] == 'ERROR').mean() * 100:.1f}%")
    return traces


def analyze_session_flow(session_id: str) -> list[dict[str, Any]]:
    """Analyze conversation flow within a session."""
    session_traces = mlflow.search_traces(
        filter_string=f"metadata.`mlflow.trace.session` = '{session_id}'",
        order_by=["timestamp ASC"],
    )
    conversation_turns = []
    for index, row in session_traces.iterrows():
        conversation_turns.append(
            {
                "turn": index + 1,
                "timestamp": int(row.request_time),
                "duration_ms": int(row.execution_duration),
                "status": str(row.state),
                "response": row.response,
            }
        )
    return conversation_turns


@pytest.fixture
def tutorial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENVIRONMENT", "staging")
    monkeypatch.setenv("APP_VERSION", "1.0.0")
    monkeypatch.setenv("DEPLOYMENT_ID", "deployment-123")
    for session in range(2):
        my_app(
            "user-123", f"session-abc-{session}", "What is MLflow and how does it help with GenAI?"
        )
        my_app("user-123", f"session-abc-{session}", "What is ML vs. AI?")
    monkeypatch.setenv("APP_VERSION", "1.1.0")
    monkeypatch.setenv("DEPLOYMENT_ID", "deployment-456")
    for session in range(2):
        my_app("user-456", f"session-def-{session}", "What is MLflow and how does it help?")


def test_databricks_tutorial_analysis(tutorial: None, capsys: pytest.CaptureFixture[str]) -> None:
    traces = mlflow.search_traces()
    first_trace = traces.iloc[0]
    assert first_trace.trace_metadata["mlflow.trace.user"] == "user-456"

    report = analyze_user_behavior(user_id="user-123")
    out = capsys.readouterr().out
    assert "Total interactions: 4" in out
    assert "Unique sessions: 2" in out
    assert "chat    4" in out
    assert "Error rate: 0.0%" in out
    assert len(report) == 4

    turns = analyze_session_flow(session_id="session-abc-0")
    assert [t["turn"] for t in turns] == [1, 2]
    assert [t["status"] for t in turns] == ["OK", "OK"]
    assert turns[0]["response"] == ("An answer to: What is MLflow and how does it help with GenAI?")
    assert turns[0]["timestamp"] <= turns[1]["timestamp"]

    traces = mlflow.search_traces()
    traces["app_version"] = traces["trace_metadata"].apply(lambda meta: meta.get("app_version"))
    traces["user_id"] = traces["trace_metadata"].apply(lambda meta: meta.get("mlflow.trace.user"))
    traces["app_environment"] = traces["trace_metadata"].apply(
        lambda meta: meta.get("mlflow.source.type")
    )
    assert traces.groupby("app_version").size().to_dict() == {"1.0.0": 4, "1.1.0": 2}
    assert traces.groupby("app_version")["user_id"].nunique().to_dict() == {"1.0.0": 1, "1.1.0": 1}
    assert traces.groupby("app_environment").size().to_dict() == {"staging": 6}


def test_mlflow_track_users_page_metrics(tutorial: None) -> None:
    user_id = "user-123"
    user_traces_df: pd.DataFrame = mlflow.search_traces(
        filter_string=f"metadata.`mlflow.trace.user` = '{user_id}'",
    )
    total_interactions = len(user_traces_df)
    unique_sessions = user_traces_df["metadata.mlflow.trace.session"].nunique()
    avg_response_time = user_traces_df["info.execution_time_ms"].mean()
    success_rate = user_traces_df["info.state"].value_counts()["OK"] / total_interactions
    assert (total_interactions, unique_sessions, success_rate) == (4, 2, 1.0)
    assert avg_response_time >= 0
    for query in (
        "metadata.`mlflow.trace.session` = 'session-abc-0'",
        "metadata.`mlflow.trace.user` = 'user-123' AND "
        "metadata.`mlflow.trace.session` = 'session-abc-0'",
    ):
        assert len(mlflow.search_traces(filter_string=query)) == 2


def test_mlflow2_session_tag() -> None:
    @mlflow.trace(span_type="CHAT_MODEL")
    def predict(messages: list[str], session_id: str) -> str:
        if session_id:
            mlflow.update_current_trace(tags={"session_id": session_id})
        return "ok"

    predict(["What is MLflow Tracing?"], "123456")
    predict(["What is MLflow Tracing?", "How to get started?"], "123456")
    traces = mlflow.search_traces(filter_string="tag.session_id = '123456'")
    assert len(traces) == 2
