from __future__ import annotations

import sessiontrace


def test_issue_example_records_user_session_and_child_span() -> None:
    @sessiontrace.trace
    def chat_completion(message: str) -> str:
        return f"echo: {message}"

    @sessiontrace.trace
    def my_app(user_id: str, session_id: str, message: str) -> str:
        sessiontrace.update_current_trace(
            metadata={
                "mlflow.trace.user": user_id,
                "mlflow.trace.session": session_id,
                "app_version": "1.0.0",
            },
            tags={"query_category": "chat"},
        )
        return chat_completion(message)

    assert my_app("user-123", "session-abc-0", "What is ML vs. AI?") == "echo: What is ML vs. AI?"
    trace = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id())
    assert trace is not None
    assert trace.info.trace_metadata["mlflow.trace.user"] == "user-123"
    assert trace.info.trace_metadata["mlflow.trace.session"] == "session-abc-0"
    assert trace.info.trace_metadata["app_version"] == "1.0.0"
    assert trace.info.tags == {"query_category": "chat"}
    assert trace.info.state == "OK"
    root, child = trace.data.spans
    assert (root.name, root.parent_id) == ("my_app", None)
    assert (child.name, child.parent_id) == ("chat_completion", root.span_id)
    assert child.inputs == {"message": "What is ML vs. AI?"}
    assert root.outputs == "echo: What is ML vs. AI?"
