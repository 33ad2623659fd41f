#!/usr/bin/env python3
"""Real MLflow and Phoenix servers on 127.0.0.1, each in a virtualenv of its own, offline.

    python scripts/otlp_servers.py install mlflow phoenix   # .venv-mlflow, .venv-phoenix (pinned)
    python scripts/otlp_servers.py run mlflow -- CMD ARGS   # the command sees $OTLP_MLFLOW_URL
                                                            # and $OTLP_MLFLOW_HEADERS (JSON)

    from otlp_servers import start                          # loaded by path: see tests/otlp
    with start("mlflow", workdir) as server:
        server.url, server.traces_url, server.headers        # headers: a fresh experiment/project
        server.client("import mlflow; ...")                  # Python in the server's own venv
        server.restart()                                     # same port, same data

Both servers pin versions (and dependencies: MLflow wants its own opentelemetry,
Phoenix its own SQLAlchemy and pandas) that the project's ``.venv`` should not take,
so each lives in its own venv next to the project (``SESSIONTRACE_OTLP_VENVS`` moves
them). ``install`` is idempotent: a venv whose stamp names the same pins is kept.

What is done and why (measured in shared/research/otlp_bridges.md, section 2):

- MLflow runs with ``--workers 1`` and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``:
  ready in about 8 s instead of 16, two processes instead of eleven. Its store is a
  SQLite file in the work directory. Telemetry is off for both servers.
- Phoenix binds gRPC on ``[::]:PHOENIX_GRPC_PORT`` whatever its host setting says, so
  both its ports are picked free. Its data lives in the work directory.
- ``mlflow server`` exits before its children, which are started from several
  threads: every descendant is collected from ``/proc/<pid>/task/*/children`` before
  the parent is signalled, and each is ended by pid (SIGTERM, then SIGKILL). Each
  server runs in a session of its own, whose members are swept as well.
- A watchdog process ends the servers if their owner dies (even by SIGKILL): it
  notices through a pipe, like scripts/pg_throwaway.py.

Stdlib only and no sessiontrace import.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "PINS",
    "Server",
    "ServerUnavailable",
    "install",
    "start",
    "venv_dir",
    "venv_python",
]

ROOT = Path(__file__).resolve().parent.parent

# The versions the mapping was verified on. The client packages read traces back.
PINS: dict[str, list[str]] = {
    "mlflow": ["mlflow==3.18.0"],
    "phoenix": ["arize-phoenix==20.21.0", "arize-phoenix-client==3.5.0"],
}
READY_TIMEOUT = 180.0  # both start in 8-40 s on a busy 2-core machine


class ServerUnavailable(RuntimeError):
    """The server's venv is missing or the server did not come up."""


def venv_dir(name: str) -> Path:
    base = os.environ.get("SESSIONTRACE_OTLP_VENVS")
    return (Path(base) if base else ROOT) / f".venv-{name}"


def venv_python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def _stamp(name: str) -> Path:
    return venv_dir(name) / ".installed"


def is_installed(name: str) -> bool:
    stamp = _stamp(name)
    return stamp.is_file() and stamp.read_text().split() == PINS[name]


def install(name: str, *, python: str = sys.executable) -> float:
    """Create (or keep) the venv of ``name`` with its pins; the seconds it took."""
    if name not in PINS:
        raise ValueError(f"unknown server {name!r}; expected one of {sorted(PINS)}")
    if is_installed(name):
        return 0.0
    started = time.monotonic()
    venv = venv_dir(name)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *PINS[name]], check=True)
    _stamp(name).write_text(" ".join(PINS[name]) + "\n")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of all its threads), depth first."""
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            if child not in out:
                out.append(child)
                stack.append(child)
    return out


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if os.getsid(int(entry)) == sid:
                    members.append(int(entry))
    return members


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pid: int, *, grace: float = 5.0) -> None:
    """End ``pid``, all its descendants and its session's members, each by pid."""
    pids = [pid, *descendants(pid)]
    pids += [p for p in _session_members(pid) if p not in pids and p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            # Children found late (forked while we signalled) are ended too.
            for p in list(pids):
                for child in descendants(p):
                    if child not in pids:
                        pids.append(child)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(child, sig)
            if not any(_alive(p) for p in pids):
                return
            time.sleep(0.05)


_WATCHDOG = """
import os, signal, sys, time
pid = int(sys.argv[1])
sys.stdin.read()  # returns when the owner has closed the pipe or died
try:
    os.killpg(pid, signal.SIGTERM)
    time.sleep(3)
    os.killpg(pid, signal.SIGKILL)
except OSError:
    pass
"""


@dataclass
class Server:
    """One running server; ``stop()`` (or ``with``) ends it with all its children."""

    name: str
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)
    _watchdog: subprocess.Popen[bytes] | None = None

    @property
    def traces_url(self) -> str:
        return self.url + "/v1/traces"

    @property
    def python(self) -> Path:
        return venv_python(self.name)

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None or descendants(self.process.pid):
            kill_tree(self.process.pid)
        with contextlib.suppress(Exception):
            self.process.wait(5)
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
            with contextlib.suppress(Exception):
                self._watchdog.wait(5)
            self._watchdog = None

    def restart(self) -> None:
        """Stop and start again on the same port and data (a target restart)."""
        self.stop()
        fresh = _launch(self.name, self.workdir, port=int(self.url.rsplit(":", 1)[1]))
        self.process, self.log_path, self._watchdog = fresh.process, fresh.log_path, fresh._watchdog
        _wait_ready(self)

    def client(self, code: str, *args: str, timeout: float = 300.0) -> str:
        """Run Python ``code`` in the server's venv (its own client); its stdout."""
        env = {**_base_env(), "OTLP_SERVER_URL": self.url}
        done = subprocess.run(
            [str(self.python), "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=self.workdir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} client failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_"))}
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PHOENIX_TELEMETRY_ENABLED="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def _launch(name: str, workdir: Path, *, port: int | None = None) -> Server:
    python = venv_python(name)
    if not is_installed(name):
        raise ServerUnavailable(
            f"{venv_dir(name)} is missing; run: python scripts/otlp_servers.py install {name}"
        )
    port = port or free_port()
    env = _base_env()
    bin_dir = python.parent
    if name == "mlflow":
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        (workdir / "mlflow-artifacts").mkdir(parents=True, exist_ok=True)
        cmd = [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--default-artifact-root",
            str(workdir / "mlflow-artifacts"),
            "--workers",
            "1",
        ]
    else:
        env.update(
            PHOENIX_WORKING_DIR=str(workdir / "phoenix"),
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(port),
            PHOENIX_GRPC_PORT=str(free_port()),
        )
        cmd = [str(bin_dir / "phoenix"), "serve"]
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(process.pid)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    return Server(name, f"http://127.0.0.1:{port}", workdir, process, log_path, {}, watchdog)


def _wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> None:
    path = "/health" if server.name == "mlflow" else "/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    tail = server.log_tail()
    server.stop()
    raise ServerUnavailable(f"{server.name} did not become ready at {server.url}:\n{tail}")


def _mlflow_experiment(server: Server) -> str:
    """Create an experiment through the REST API; its id (the OTLP routing header)."""
    body = json.dumps({"name": f"sessiontrace-{os.getpid()}-{time.time_ns()}"}).encode()
    request = urllib.request.Request(
        server.url + "/api/2.0/mlflow/experiments/create",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.load(response)["experiment_id"])


@contextlib.contextmanager
def start(name: str, workdir: Path | None = None) -> Iterator[Server]:
    """Start ``name`` ("mlflow" or "phoenix") on 127.0.0.1, wait until ready, stop after.

    ``server.headers`` are the OTLP headers that route to a fresh experiment (MLflow)
    or project (Phoenix).
    """
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix=f"otlp-{name}-")) if workdir is None else workdir
    server = _launch(name, work)
    try:
        _wait_ready(server)
        if name == "mlflow":
            server.headers = {"x-mlflow-experiment-id": _mlflow_experiment(server)}
        else:
            server.headers = {"x-project-name": f"sessiontrace-{os.getpid()}"}
        yield server
    finally:
        server.stop()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="create the venvs (idempotent)")
    p_install.add_argument("names", nargs="+", choices=sorted(PINS))
    p_run = sub.add_parser("run", help="start a server, run a command, stop the server")
    p_run.add_argument("name", choices=sorted(PINS))
    p_run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "install":
        for name in args.names:
            seconds = install(name)
            state = f"installed in {seconds:.0f} s" if seconds else "already installed"
            print(f"{venv_dir(name)}: {' '.join(PINS[name])} ({state})", flush=True)
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run needs a command after --")
    with start(args.name) as server:
        env = {
            **os.environ,
            f"OTLP_{args.name.upper()}_URL": server.url,
            f"OTLP_{args.name.upper()}_HEADERS": json.dumps(server.headers),
        }
        return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
