#!/usr/bin/env python3
"""A throwaway PostgreSQL server for the tests and the demo: a temp dir, a socket, no trace left.

    python scripts/pg_throwaway.py run -- python -m pytest   # the command sees the server's URI
    python scripts/pg_throwaway.py run --tcp -- CMD ARGS...  # also on 127.0.0.1:<a free port>
    python scripts/pg_throwaway.py cleanup                   # servers whose owner has died

    from pg_throwaway import ThrowawayPostgres               # loaded by path: see tests/conftest.py
    with ThrowawayPostgres() as uri:
        ...                                                  # postgresql://sessiontrace@/...

``run`` puts the URI in ``SESSIONTRACE_TEST_PG_URI`` and ``PG_URI`` for the command,
stops the server however the command ends and exits with the command's status.

Why it is done this way (measured in shared/research/postgres.md, section 1):

- ``initdb`` + ``pg_ctl`` in ``/tmp/pgtest.XXXXXX`` start in 0.5-1 s and stop in 0.2 s,
  and touch nothing outside that directory. Debian's ``pg_ctlcluster`` is 2-6 s and
  writes under ``/etc`` and ``/var/log``; pytest-postgresql cannot run as root.
- PostgreSQL refuses to run as root, so as root every tool runs as the ``postgres``
  user (``runuser``), from ``/`` so it can change directory, in a directory chowned
  to that user under ``/tmp`` (``tmp_path`` is 0700 root and unreadable for it).
- The socket lives in that directory and ``listen_addresses`` is empty, so no port
  can clash; ``--tcp`` picks a free port and retries, because PostgreSQL cannot bind
  port 0. ``--locale=C`` makes ``ORDER BY`` agree with SQLite's BINARY collation
  and Python's ``sorted``. Durability is off: the data is thrown away anyway.
- Nothing may outlive the process that started the server. ``stop()`` runs from
  ``with``, ``atexit`` and a SIGTERM/SIGHUP handler, and a small watchdog process,
  which notices the owner's death through a pipe (even after SIGKILL), stops the
  server if the owner could not. ``cleanup_stale()`` (run by every ``start()``)
  removes what a crashed machine or a killed watchdog left: each directory records
  its owner's pid.

Stdlib only and no sessiontrace import: the Makefile runs it before the package
is importable, and the test fixtures load it by path.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

__all__ = [
    "ENV_URI",
    "PostgresUnavailable",
    "ThrowawayPostgres",
    "cleanup_stale",
    "find_tools",
    "main",
    "run",
]

ENV_URI = "SESSIONTRACE_TEST_PG_URI"
ENV_BIN = "SESSIONTRACE_PG_BIN"  # a bin directory to use instead of searching
SEARCH_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps the server binaries off PATH
TOOLS = ("initdb", "pg_ctl", "createdb")
TEMP_ROOT = "/tmp"  # short: a unix socket path must fit in 107 bytes
DIR_PREFIX = "pgtest."
OWNER_FILE = "owner"
USER = "sessiontrace"
DATABASE = "sessiontrace_test"
UNIX_PORT = 5432  # only names the socket file; nothing listens on TCP
INSTALL_HINT = "apt-get install postgresql (`make postgresql` does it)"
# Test settings: durability off (the data is thrown away), room for many pools.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's binaries are missing or the server would not start."""


# -- finding the binaries ----------------------------------------------------------------


def _version_key(bin_dir: str) -> tuple[int, ...]:
    version = Path(bin_dir).parent.name  # /usr/lib/postgresql/15/bin -> "15"
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def _tools_in(bin_dir: Path) -> dict[str, str] | None:
    paths = {tool: bin_dir / tool for tool in TOOLS}
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()):
        return {tool: str(p) for tool, p in paths.items()}
    return None


def find_tools(search_glob: str = SEARCH_GLOB) -> dict[str, str]:
    """Paths of ``initdb``, ``pg_ctl`` and ``createdb``: ``$SESSIONTRACE_PG_BIN``, else the
    newest ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    override = os.environ.get(ENV_BIN)
    if override:
        found = _tools_in(Path(override))
        if found is None:
            raise PostgresUnavailable(
                f"{ENV_BIN}={override} does not hold {', '.join(TOOLS)}; {INSTALL_HINT}"
            )
        return found
    import glob

    for bin_dir in sorted(glob.glob(search_glob), key=_version_key, reverse=True):
        found = _tools_in(Path(bin_dir))
        if found is not None:
            return found
    on_path = {tool: shutil.which(tool) for tool in TOOLS}
    if all(on_path.values()):
        return {tool: str(path) for tool, path in on_path.items()}
    raise PostgresUnavailable(
        f"PostgreSQL server binaries ({', '.join(TOOLS)}) not found in {search_glob} "
        f"or on PATH; install them: {INSTALL_HINT}"
    )


# -- processes and directories -----------------------------------------------------------


def _as_postgres() -> bool:
    return os.geteuid() == 0


def _postgres_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it "
            f"as; {INSTALL_HINT} creates one"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _tool_env() -> dict[str, str]:
    # PGHOST, PGPORT, PGDATA... of the caller must not redirect the tools.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _command(path: str, *args: str) -> list[str]:
    if _as_postgres():
        return ["runuser", "-u", "postgres", "--", path, *args]
    return [path, *args]


def _run_tool(path: str, *args: str, timeout: float = 120) -> None:
    # Output goes to a file, not a pipe: a server started by pg_ctl could otherwise
    # hold the pipe open and make this wait for its exit.
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.run(
                _command(path, *args),
                cwd="/",  # as postgres: `could not change directory to "/root"`
                env=_tool_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{Path(path).name} failed: {exc}") from None
        if proc.returncode != 0:
            out.seek(0)
            tail = "".join(out.readlines()[-15:]).strip()
            raise PostgresUnavailable(
                f"{Path(path).name} {' '.join(args[:1])} failed (exit {proc.returncode}): {tail}"
            )


def _start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (guards against a reused pid); '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name may hold spaces


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (an exited server not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _destroy(directory: Path) -> None:
    """Stop the server of ``directory`` (if one runs) and remove the directory."""
    data = directory / "data"
    pid = _postmaster_pid(data)
    if pid is not None and _alive(pid):
        try:
            pg_ctl = find_tools()["pg_ctl"]
            _run_tool(pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30")
        except PostgresUnavailable:
            pass
        if _alive(pid) and str(data).encode() in _cmdline(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    shutil.rmtree(directory, ignore_errors=True)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _owner_alive(directory: Path) -> bool | None:
    """Whether the process that started the server in ``directory`` lives (None: unknown)."""
    try:
        pid_text, _, started = (directory / OWNER_FILE).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return _alive(pid) and (not started or _start_time(pid) in ("", started))


def cleanup_stale(root: str = TEMP_ROOT) -> list[Path]:
    """Stop and remove the throwaway servers whose owner process has died.

    Only directories this script made (they hold an ``owner`` file) are touched, and
    only when that pid is gone or belongs to another process now. Returns them.
    """
    removed = []
    for directory in Path(root).glob(DIR_PREFIX + "*"):
        if directory.is_dir() and _owner_alive(directory) is False:
            _destroy(directory)
            removed.append(directory)
    return removed


# -- cleanup when the owner ends ---------------------------------------------------------

_live: list[ThrowawayPostgres] = []
_hooks = {"atexit": False}
_saved_handlers: dict[int, Any] = {}
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Stop the servers, then die of the signal as if no handler had been installed.
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    if not _hooks["atexit"]:
        atexit.register(_stop_all)
        _hooks["atexit"] = True
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _HANDLED_SIGNALS:
        # Only where the default (die) is in force: a handler of the host's is kept.
        if signum not in _saved_handlers and signal.getsignal(signum) is signal.SIG_DFL:
            _saved_handlers[signum] = signal.signal(signum, _on_signal)


def _remove_hooks() -> None:
    if _live or threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_saved_handlers.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous)
        del _saved_handlers[signum]


def _watch(directory: str) -> None:
    """The watchdog: wait for EOF on stdin (the owner has exited), then clean up."""
    with contextlib.suppress(Exception):
        sys.stdin.buffer.read()
    path = Path(directory)
    if path.is_dir():
        _destroy(path)


# -- the server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server in a fresh ``/tmp/pgtest.XXXXXX``, gone after ``stop()``.

    ``start()`` returns ``postgresql://sessiontrace@/sessiontrace_test?host=DIR&port=5432``
    (``sessiontrace`` is a superuser with trust authentication; with ``tcp=True``,
    ``postgresql://sessiontrace@127.0.0.1:PORT/sessiontrace_test``). Raises
    ``PostgresUnavailable`` when the binaries are missing or the server will not start.

    >>> with ThrowawayPostgres() as uri:
    ...     psycopg.connect(uri).execute("select 1")
    """

    def __init__(self, *, tcp: bool = False, start_timeout: float = 60) -> None:
        self.tcp = tcp
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.port: int | None = None
        self.uri: str | None = None
        self._owner_pid = 0
        self._tools: dict[str, str] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watch_pipe: int | None = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> str:
        if self.uri is not None:
            return self.uri
        self._tools = find_tools()
        ids = _postgres_ids() if _as_postgres() else None
        with contextlib.suppress(OSError):
            cleanup_stale()
        self._owner_pid = os.getpid()
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=TEMP_ROOT))
        _live.append(self)
        _install_hooks()
        try:
            (self.dir / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
            self._start_watchdog()
            if ids is not None:
                os.chown(self.dir, *ids)
            data = self.dir / "data"
            _run_tool(
                self._tools["initdb"],
                *("-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8"),
                *("--locale=C", "--no-sync"),
            )
            with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(self._config())
            self._start_server(data)
            _run_tool(
                self._tools["createdb"], *self._client_args(), "-U", USER, DATABASE, timeout=60
            )
        except BaseException:
            self.stop()
            raise
        self.uri = self.uri_for(DATABASE)
        return self.uri

    def uri_for(self, database: str) -> str:
        """The URI of another database on this server (e.g. one per test worker)."""
        assert self.dir is not None and self.port is not None, "start() first"
        if self.tcp:
            return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{USER}@/{database}?host={self.dir}&port={self.port}"

    def _config(self) -> str:
        assert self.dir is not None
        lines = [
            "",
            "# pg_throwaway.py: a test server, thrown away after the run",
            f"listen_addresses = '{'127.0.0.1' if self.tcp else ''}'",
            f"unix_socket_directories = '{self.dir}'",
            *(f"{name} = {value}" for name, value in SETTINGS.items()),
        ]
        return "\n".join(lines) + "\n"

    def _client_args(self) -> list[str]:
        return ["-h", str(self.dir), "-p", str(self.port)]

    def _start_server(self, data: Path) -> None:
        assert self.dir is not None
        log = self.dir / "server.log"
        attempts = 5 if self.tcp else 1
        for attempt in range(attempts):
            self.port = _free_port() if self.tcp else UNIX_PORT
            try:
                _run_tool(
                    self._tools["pg_ctl"],
                    *("start", "-D", str(data), "-l", str(log), "-w"),
                    *("-t", str(int(self.start_timeout)), "-o", f"-p {self.port}"),
                    timeout=self.start_timeout + 10,
                )
                return
            except PostgresUnavailable as exc:
                text = log.read_text(errors="replace") if log.exists() else ""
                clash = any(
                    sign in text
                    for sign in ("could not bind", "already in use", "could not create any TCP")
                )
                if attempt + 1 < attempts and clash:
                    log.unlink(missing_ok=True)
                    continue
                raise PostgresUnavailable(f"{exc}\n{text[-2000:]}") from None

    def _start_watchdog(self) -> None:
        # The pipe's write end stays in this process only (not inheritable): when the
        # process ends, however it ends, the watchdog reads EOF and cleans up.
        read_end, write_end = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "_watch", str(self.dir)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,  # never hold a caller's capture pipe open
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,  # a Ctrl+C to our process group is not for it
            )
        finally:
            os.close(read_end)
        self._watch_pipe = write_end

    def stop(self) -> None:
        """Stop the server and remove its directory; harmless to call twice.

        Does nothing in a forked child: the server belongs to the process that started it.
        """
        if self.dir is None or os.getpid() != self._owner_pid:
            return
        directory, self.dir, self.uri = self.dir, None, None
        try:
            _destroy(directory)
        finally:
            if self._watch_pipe is not None:
                os.close(self._watch_pipe)
                self._watch_pipe = None
            if self._watchdog is not None:
                try:
                    self._watchdog.wait(10)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                    self._watchdog.wait()
                self._watchdog = None
            if self in _live:
                _live.remove(self)
            _remove_hooks()


# -- command line ------------------------------------------------------------------------


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run(command: Sequence[str], *, tcp: bool = False, err: IO[str] | None = None) -> int:
    """Run ``command`` with a throwaway server's URI in its environment; its exit status.

    SIGTERM and SIGHUP are passed on to the command; Ctrl+C reaches it from the
    terminal directly. The server is stopped however the command ends.
    """
    err = err or sys.stderr
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        else:
            raise _Interrupted(signum)

    previous = {s: signal.signal(s, forward) for s in _HANDLED_SIGNALS}
    server = ThrowawayPostgres(tcp=tcp)
    try:
        started = time.monotonic()
        uri = server.start()
        print(
            f"pg_throwaway: PostgreSQL at {uri} ({time.monotonic() - started:.1f} s)",
            file=err,
            flush=True,
        )
        env = {**os.environ, ENV_URI: uri, "PG_URI": uri}
        child = subprocess.Popen(list(command), env=env)
        # The terminal sends Ctrl+C to the command too; ours would be a second one.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while True:
                try:
                    code = child.wait()
                    break
                except _Interrupted:  # the command ended as the signal came: reap it
                    continue
        finally:
            signal.signal(signal.SIGINT, previous_int)
        return 128 - code if code < 0 else code
    except PostgresUnavailable as exc:
        print(f"pg_throwaway: {exc}", file=err)
        return 1
    except FileNotFoundError as exc:
        print(f"pg_throwaway: cannot run {command[0]!r}: {exc}", file=err)
        return 127
    except _Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pg_throwaway.py", description=__doc__.split("\n", 1)[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p_run = sub.add_parser("run", help="start a server, run a command with its URI, stop it")
    p_run.add_argument("--tcp", action="store_true", help="also listen on 127.0.0.1")
    p_run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser("cleanup", help="stop and remove servers whose owner process has died")
    p_watch = sub.add_parser("_watch")  # internal: the watchdog
    p_watch.add_argument("directory")
    args = parser.parse_args(argv)
    if args.action == "_watch":
        _watch(args.directory)
        return 0
    if args.action == "cleanup":
        for directory in cleanup_stale():
            print(f"removed {directory}")
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command: run -- CMD ARGS...")
    return run(command, tcp=args.tcp)


if __name__ == "__main__":
    sys.exit(main())
