"""Settings precedence, tracking URIs and automatic metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace._config import Settings, hide_password, parse_tracking_uri, redact_uri
from sessiontrace._metadata import git_metadata


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///traces.db", "{cwd}/traces.db"),
        ("sqlite:///sub/dir/traces.db", "{cwd}/sub/dir/traces.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("traces.db", "{cwd}/traces.db"),
        ("/abs/other.db", "/abs/other.db"),
        ("  sqlite:////padded.db ", "/padded.db"),
    ],
)
def test_sqlite_uris(uri: str, expected: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    location = parse_tracking_uri(uri)
    assert location.scheme == "sqlite"
    assert location.path == expected.format(cwd=tmp_path.resolve())


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://app@db.internal/traces",
        "postgresql://app:s3cret@db.internal:5433/traces?sslmode=require",
        "postgres://app@db.internal/traces",
        "postgresql:///traces",
        "postgresql://sessiontrace@/sessiontrace_test?host=/tmp/pgtest.abc123&port=5432",
        "postgresql://app@db1:5432,db2:5432/traces?target_session_attrs=read-write",
        "POSTGRESQL://app@db.internal/traces",
    ],
)
def test_postgres_uris_are_kept_for_libpq(uri: str) -> None:
    """libpq reads every one of these (both spellings, sockets, several hosts) itself."""
    location = parse_tracking_uri(f" {uri} ")
    assert location.scheme == "postgresql"
    assert location.path == uri


def test_a_postgres_password_never_shows_in_settings_or_errors() -> None:
    uri = "postgresql://app:s3cret@db.internal/traces"
    assert "s3cret" not in repr(Settings.resolve({"tracking_uri": uri}, {}))
    assert "s3cret" not in repr(parse_tracking_uri(uri))
    assert "app:***@db.internal" in repr(Settings.resolve({"tracking_uri": uri}, {}))
    with pytest.raises(ValueError) as excinfo:
        parse_tracking_uri("postgresql+psycopg2://app:s3cret@db.internal/traces")
    assert "s3cret" not in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        parse_tracking_uri("http://app:s3cret@")
    assert "s3cret" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "postgresql://app:s3cret@db.internal/traces?sslmode=require",
            "postgresql://app:***@db.internal/traces?sslmode=require",
        ),
        ("postgres://app:p%40ss@db/traces", "postgres://app:***@db/traces"),
        ("postgresql://app:pa/ss@db/traces", "postgresql://app:***@db/traces"),
        ("postgresql://app:@db/traces", "postgresql://app:***@db/traces"),
        ("postgresql://app:x@db1:5432,db2/traces", "postgresql://app:***@db1:5432,db2/traces"),
        (
            "postgresql://app@db/traces?password=s3cret&sslmode=require&sslpassword=k",
            "postgresql://app@db/traces?password=***&sslmode=require&sslpassword=***",
        ),
        ("postgresql://app@db/traces?PASSWORD=s3cret", "postgresql://app@db/traces?PASSWORD=***"),
        ("host=db user=app password=s3cret", "host=db user=app password=***"),
        ("host=db password = 'with space' user=app", "host=db password = *** user=app"),
        # nothing secret: unchanged
        ("postgresql://app@db.internal/traces", "postgresql://app@db.internal/traces"),
        (
            "postgresql://app@/t?host=/tmp/pg&port=5432",
            "postgresql://app@/t?host=/tmp/pg&port=5432",
        ),
        ("sqlite:////data/traces.db", "sqlite:////data/traces.db"),
        ("/data/with:colon@sign.db", "/data/with:colon@sign.db"),
        ("http://tracehost:5000", "http://tracehost:5000"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_hide_password_scrubs_a_driver_message() -> None:
    uri = "postgresql://app:p%40ss@db/traces"
    message = f'invalid port in "{uri}" (password p@ss, p%40ss)'
    assert hide_password(message, uri) == (
        'invalid port in "postgresql://app:***@db/traces" (password ***, ***)'
    )
    assert hide_password("query password=k failed", "postgresql://a@db/t?password=k") == (
        "query password=*** failed"
    )
    assert hide_password("nothing to hide", "") == "nothing to hide"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "non-empty"),
        ("sqlite://", "sqlite:///relative.db"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:traces.db", "missing '//'"),
        ("ftp://host/x", "not supported"),
        ("postgresql+psycopg2://localhost/db", "SQLAlchemy"),
        ("mysql://localhost/db", "not supported"),
    ],
)
def test_bad_uris_fail_at_configure_time(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sessiontrace.configure(tracking_uri=uri)


def test_precedence_keyword_then_environment_then_default() -> None:
    env = {"SESSIONTRACE_APP_VERSION": "from-env", "SESSIONTRACE_BATCH_SIZE": "7"}
    assert Settings.resolve({}, env).app_version == "from-env"
    assert Settings.resolve({"app_version": "kw"}, env).app_version == "kw"
    assert Settings.resolve({}, {}).app_version is None
    assert Settings.resolve({}, env).batch_size == 7
    assert Settings.resolve({}, {}).tracking_uri == "sqlite:///sessiontrace.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESSIONTRACE_BATCH_SIZE": "lots"}, "SESSIONTRACE_BATCH_SIZE"),
        ({"SESSIONTRACE_MAX_QUEUE_SIZE": "0"}, "positive"),
        ({"SESSIONTRACE_FLUSH_INTERVAL": "-1"}, "positive"),
        ({"SESSIONTRACE_TRACKING_URI": "gopher://x"}, "not supported"),
    ],
)
def test_bad_environment_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.resolve({}, env)


def test_unknown_and_mistyped_settings() -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.resolve({"tracking_url": "x"}, {})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        Settings.resolve({"metadata": ["a"]}, {})


def test_configured_defaults_reach_every_trace_and_can_be_overridden(store_path: Path) -> None:
    sessiontrace.configure(
        tracking_uri=f"sqlite:///{store_path}",
        environment="staging",
        app_version="1.0.0",
        deployment_id="deployment-123",
        metadata={"region": "eu"},
    )

    @sessiontrace.trace
    def app(override: bool) -> None:
        if override:
            sessiontrace.update_current_trace(
                metadata={"mlflow.source.type": "PRODUCTION", "app_version": "1.1.0"}
            )

    app(False)
    first = sessiontrace.get_last_active_trace_id()
    app(True)
    second = sessiontrace.get_last_active_trace_id()
    assert first and second
    t1, t2 = sessiontrace.get_trace(first), sessiontrace.get_trace(second)
    assert t1 is not None and t2 is not None
    md1, md2 = t1.info.trace_metadata, t2.info.trace_metadata
    assert md1["mlflow.source.type"] == "staging"
    assert md1["app_version"] == "1.0.0"
    assert md1["deployment_id"] == "deployment-123"
    assert md1["region"] == "eu"
    assert md2["mlflow.source.type"] == "PRODUCTION"
    assert md2["app_version"] == "1.1.0"
    assert md2["region"] == "eu"


def test_environment_variables_configure_a_fresh_process(tmp_path: Path) -> None:
    script = tmp_path / "chat_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sessiontrace
            @sessiontrace.trace
            def app():
                return 1
            app()
            t = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id())
            md = t.info.trace_metadata
            print(md["mlflow.source.name"], md["mlflow.source.type"], md["app_version"])
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={
            **os.environ,
            "SESSIONTRACE_TRACKING_URI": "sqlite:///env.db",
            "SESSIONTRACE_APP_VERSION": "2.0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["chat_app.py", "LOCAL", "2.0"]
    assert (tmp_path / "env.db").exists()  # relative to the working directory


# -- git metadata, read from a real repository ---------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", "-b", "feature/chat", cwd=root)
    git("config", "user.email", "dev@example.com", cwd=root)
    git("config", "user.name", "Dev", cwd=root)
    (root / "app.py").write_text("print('hi')\n")
    git("add", "app.py", cwd=root)
    git("commit", "-q", "-m", "first", cwd=root)
    git(
        "remote",
        "add",
        "origin",
        "https://alice:s3cret-token@git.example.com/org/app.git",
        cwd=root,
    )
    return root


def test_git_metadata_matches_git_and_strips_credentials(repo: Path) -> None:
    sub = repo / "pkg" / "deep"
    sub.mkdir(parents=True)
    md = git_metadata(sub)
    assert md == {
        "mlflow.source.git.commit": git("rev-parse", "HEAD", cwd=repo),
        "mlflow.source.git.branch": "feature/chat",
        "mlflow.source.git.repoURL": "https://git.example.com/org/app.git",
    }


def test_git_metadata_with_packed_refs_and_detached_head(repo: Path) -> None:
    head = git("rev-parse", "HEAD", cwd=repo)
    git("pack-refs", "--all", cwd=repo)
    assert git_metadata(repo)["mlflow.source.git.commit"] == head
    git("checkout", "-q", "--detach", cwd=repo)
    md = git_metadata(repo)
    assert md["mlflow.source.git.commit"] == head
    assert "mlflow.source.git.branch" not in md


def test_no_git_metadata_outside_a_repository(tmp_path: Path) -> None:
    assert git_metadata(tmp_path) == {}


def test_automatic_metadata_of_a_script_in_a_repo(repo: Path) -> None:
    (repo / "serve.py").write_text(
        textwrap.dedent(
            """
            import json, sessiontrace
            @sessiontrace.trace
            def app():
                return 1
            app()
            t = sessiontrace.get_trace(sessiontrace.get_last_active_trace_id())
            print(json.dumps(t.info.trace_metadata))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "serve.py"],
        cwd=repo,
        env={**os.environ, "SESSIONTRACE_TRACKING_URI": "sqlite:///t.db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    import json

    md = json.loads(out)
    assert md["mlflow.source.name"] == "serve.py"
    assert md["mlflow.source.type"] == "LOCAL"
    assert md["mlflow.source.git.commit"] == git("rev-parse", "HEAD", cwd=repo)
    assert md["mlflow.source.git.repoURL"] == "https://git.example.com/org/app.git"
    assert "s3cret" not in out
