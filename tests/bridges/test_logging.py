"""sessiontrace.logging: the ids in log records, with the stdlib, structlog and real
uvicorn started from the documented dictConfig."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import structlog

import sessiontrace
from middleware.servers import free_port
from sessiontrace.logging import ContextFilter, add_context

ROOT = Path(__file__).resolve().parents[2]


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", (), None)
    record.__dict__.update(extra)
    assert ContextFilter().filter(record) is True
    return record


def _fields(record: logging.LogRecord) -> tuple[object, ...]:
    return tuple(getattr(record, k) for k in ("user_id", "session_id", "trace_id", "span_id"))


def test_none_outside_a_request_and_a_trace() -> None:
    assert _fields(_record()) == (None, None, None, None)


def test_inside_a_session_and_a_trace() -> None:
    with sessiontrace.user_session("u1", "s1"):
        assert _fields(_record()) == ("u1", "s1", None, None)
        with sessiontrace.start_span("work") as span:
            assert _fields(_record()) == ("u1", "s1", span.trace_id, span.span_id)
        # A value the call passed with extra= wins.
        assert _record(user_id="explicit").user_id == "explicit"


def test_opentelemetry_span_ids_when_no_sessiontrace_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("otel") as span:
        ctx = span.get_span_context()
        record = _record()
    provider.shutdown()
    assert (record.trace_id, record.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


def test_structlog_processor() -> None:
    log = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[add_context, structlog.processors.JSONRenderer()]
    )
    with sessiontrace.user_session("u2", "s2"):
        inside = json.loads(log.info("hi"))
        mine = json.loads(log.info("hi", user_id="mine"))
    outside = json.loads(log.info("hi"))
    assert (inside["user_id"], inside["session_id"], inside["trace_id"]) == ("u2", "s2", None)
    assert mine["user_id"] == "mine"
    assert outside["user_id"] is None


# The dictConfig of the README, as a file for `uvicorn --log-config`.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"sessiontrace": {"()": "sessiontrace.logging.ContextFilter"}},
    "formatters": {
        "ids": {"format": "%(name)s user=%(user_id)s session=%(session_id)s %(message)s"}
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": "ids",
            "filters": ["sessiontrace"],
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "app": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}

APP = textwrap.dedent(
    """
    import logging
    import sessiontrace
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        logging.getLogger("app").info("handled")
        return PlainTextResponse("ok")

    app = sessiontrace.ASGIMiddleware(Starlette(routes=[Route("/", hello)]))
    """
)


@pytest.mark.slow
def test_real_uvicorn_with_the_documented_log_config(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP)
    (tmp_path / "log.json").write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}",
        "SESSIONTRACE_TRACKING_URI": f"sqlite:///{tmp_path / 'traces.db'}",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "logapp:app",
            "--port",
            str(port),
            "--log-config",
            str(tmp_path / "log.json"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        with httpx.Client() as client:
            client.get(base, headers={"X-User-ID": "log-user", "X-Session-ID": "log-sess"})
            client.get(base)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    lines = out.splitlines()
    handled = [line for line in lines if line.startswith("app ")]
    assert handled[-2:] == [
        "app user=log-user session=log-sess handled",
        "app user=None session=None handled",
    ], out
    access = [line for line in lines if line.startswith("uvicorn.access ")]
    assert access[-2].startswith("uvicorn.access user=log-user session=log-sess "), out
    assert access[-1].startswith("uvicorn.access user=None session=None "), out
    assert any(line.startswith("uvicorn.error user=None") for line in lines), out


WSGI_APP = textwrap.dedent(
    """
    import logging
    import sessiontrace

    def hello(environ, start_response):
        logging.getLogger("app").info("handled")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = sessiontrace.WSGIMiddleware(hello)
    """
)


@pytest.mark.slow
def test_real_gunicorn_with_the_documented_log_config(tmp_path: Path) -> None:
    config = json.loads(json.dumps(LOG_CONFIG))
    loggers = config["loggers"]
    loggers["gunicorn.error"] = loggers.pop("uvicorn")
    loggers["gunicorn.access"] = loggers.pop("uvicorn.access")
    # gunicorn merges this into its defaults, whose root logger names a "console" handler.
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    (tmp_path / "logapp.py").write_text(WSGI_APP)
    (tmp_path / "gunicorn.conf.py").write_text(f"logconfig_dict = {config!r}\n")
    port = free_port()
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}",
        "SESSIONTRACE_TRACKING_URI": f"sqlite:///{tmp_path / 'traces.db'}",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread", "--threads", "2",
            "logapp:app",
        ],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/ping", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.communicate()[0]) from None
                time.sleep(0.1)
        with httpx.Client() as client:
            client.get(base, headers={"X-User-ID": "log-user", "X-Session-ID": "log-sess"})
            client.get(base)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    lines = out.splitlines()
    handled = [line for line in lines if line.startswith("app ")]
    assert handled[-2:] == [
        "app user=log-user session=log-sess handled",
        "app user=None session=None handled",
    ], out
    # gunicorn logs the access line after the body, outside the request's context.
    access = [line for line in lines if line.startswith("gunicorn.access ")]
    assert len(access) == 3, out
    assert all(line.startswith("gunicorn.access user=None session=None ") for line in access)
