"""Choosing the store from a path or URI: the runtime, the CLI and `sessiontrace ui`.

The PostgreSQL store is stood in for by a fake ``sessiontrace._store._postgres``
module, so these tests run without psycopg or a server; tests/test_postgres_wiring.py
runs the same paths against the real store.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

import sessiontrace
from sessiontrace import _runtime
from sessiontrace.__main__ import main
from sessiontrace._store import SQLiteStore, open_store

SECRET = "s3cret-pw"
PG_URI = f"postgresql://app:{SECRET}@db.invalid/traces"


class FakePostgresStore:
    """Records its URI; every read fails the way an unreachable database does."""

    opened: ClassVar[list[str]] = []

    def __init__(self, uri: str) -> None:
        self.uri = uri
        FakePostgresStore.opened.append(uri)

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        import psycopg

        # libpq-style text that echoes the connection string, password included
        raise psycopg.OperationalError(f'connection to "{self.uri}" failed ({SECRET})')


@pytest.fixture
def fake_postgres(monkeypatch: pytest.MonkeyPatch) -> type[FakePostgresStore]:
    pytest.importorskip("psycopg")
    module = types.ModuleType("sessiontrace._store._postgres")
    module.PostgresStore = FakePostgresStore  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sessiontrace._store._postgres", module)
    FakePostgresStore.opened = []
    return FakePostgresStore


@pytest.fixture
def no_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if sessiontrace[postgres] were not installed (None in sys.modules blocks import)."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "sessiontrace._store._postgres", None)


# -- open_store -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{p}", "sqlite:///{p}", "path"])
def test_paths_and_sqlite_uris_open_sqlite(form: str, tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = open_store(path if form == "path" else form.format(p=path))
    assert isinstance(store, SQLiteStore)
    assert store.path == str(path)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_uris_open_the_postgres_store_with_the_uri_unchanged(
    fake_postgres: type[FakePostgresStore], scheme: str
) -> None:
    uri = f"{scheme}://app@db.invalid/traces?sslmode=require"
    store = open_store(uri)
    assert isinstance(store, fake_postgres)
    assert fake_postgres.opened == [uri]


def test_without_psycopg_the_error_says_what_to_install(no_psycopg: None) -> None:
    with pytest.raises(ImportError, match=r"pip install 'sessiontrace\[postgres\]'"):
        open_store(PG_URI)


def test_a_driver_part_missing_inside_the_store_module_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("psycopg")
    import importlib

    from sessiontrace import _store

    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> Any:
        if name == "sessiontrace._store._postgres":
            raise ModuleNotFoundError("No module named 'psycopg_pool'", name="psycopg_pool")
        return real(name, package)

    monkeypatch.setattr(_store.importlib, "import_module", import_module)
    with pytest.raises(ImportError, match=r"psycopg_pool: pip install 'sessiontrace\[postgres\]'"):
        open_store(PG_URI)


def test_a_server_url_is_not_a_store() -> None:
    with pytest.raises(ValueError, match="is a sessiontrace server"):
        open_store("http://tracehost:5000")


def test_importing_sessiontrace_does_not_import_psycopg() -> None:
    import subprocess

    code = "import sys, sessiontrace, sessiontrace.__main__; print('psycopg' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# -- the runtime --------------------------------------------------------------------------


def test_configure_selects_postgres(fake_postgres: type[FakePostgresStore]) -> None:
    sessiontrace.configure(tracking_uri=PG_URI)
    assert isinstance(_runtime.get_store(), fake_postgres)
    assert fake_postgres.opened == [PG_URI]
    assert _runtime.store_is_local()  # written and read back by this process


def test_the_environment_selects_postgres(
    fake_postgres: type[FakePostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONTRACE_TRACKING_URI", PG_URI)
    _runtime.reset_for_tests()
    assert isinstance(_runtime.get_store(), fake_postgres)


def test_configure_without_psycopg_fails_at_once_and_keeps_the_settings(
    no_psycopg: None, store_path: Path
) -> None:
    with pytest.raises(ImportError, match=r"sessiontrace\[postgres\]"):
        sessiontrace.configure(tracking_uri=PG_URI)
    assert _runtime.settings().tracking_uri == f"sqlite:///{store_path}"


def test_an_environment_uri_without_psycopg_never_breaks_the_app_and_says_why_once(
    no_psycopg: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SESSIONTRACE_TRACKING_URI", PG_URI)
    _runtime.reset_for_tests()  # settings resolve lazily, inside the first traced call

    @sessiontrace.trace
    def chat() -> str:
        return "still answers"

    assert [chat(), chat()] == ["still answers"] * 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "pip install 'sessiontrace[postgres]'" in errors[0].getMessage()
    assert SECRET not in caplog.text
    assert sum(sessiontrace.get_stats()["internal_errors"].values()) == 2


def test_a_server_tracking_uri_is_not_local() -> None:
    sessiontrace.configure(tracking_uri="http://tracehost:5000")
    assert not _runtime.store_is_local()
    with pytest.raises(ValueError, match="needs a sqlite or postgresql tracking URI"):
        _runtime.get_store()


# -- the CLI ------------------------------------------------------------------------------


def test_cli_reads_postgres_through_the_factory_without_printing_the_password(
    fake_postgres: type[FakePostgresStore], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["traces", "--db", PG_URI]) == 2
    assert fake_postgres.opened == [PG_URI]
    err = capsys.readouterr().err
    assert "cannot read the trace database" in err
    assert "app:***@db.invalid" in err
    assert SECRET not in err


def test_cli_tracking_uri_option_and_environment_reach_postgres(
    fake_postgres: type[FakePostgresStore],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["sessions", "--tracking-uri", PG_URI]) == 2
    monkeypatch.setenv("SESSIONTRACE_TRACKING_URI", PG_URI)
    assert main(["users"]) == 2
    assert fake_postgres.opened == [PG_URI, PG_URI]
    assert SECRET not in capsys.readouterr().err


def test_cli_without_psycopg_says_what_to_install(
    no_psycopg: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["traces", "--db", PG_URI]) == 2
    err = capsys.readouterr().err
    assert "pip install 'sessiontrace[postgres]'" in err
    assert SECRET not in err


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("http://tracehost:5000", "is a sessiontrace server"),
        (f"postgresql+psycopg2://app:{SECRET}@db/traces", "SQLAlchemy"),
        ("{missing}", "no trace database at"),
    ],
)
def test_cli_bad_db(
    db: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["traces", "--db", db.format(missing=tmp_path / "none.db")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert SECRET not in err


def test_cli_db_accepts_a_sqlite_uri(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @sessiontrace.trace
    def hello() -> str:
        return "hi"

    hello()
    sessiontrace.flush()
    assert main(["traces", "--db", f"sqlite:///{store_path}", "--json"]) == 0
    assert '"name": "hello"' in capsys.readouterr().out


# -- sessiontrace ui ----------------------------------------------------------------------


def _ui_args(**kwargs: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {"host": "127.0.0.1", "port": 5000, "token": None}
    return argparse.Namespace(**{**defaults, **kwargs})


def test_ui_serves_a_postgres_uri(
    fake_postgres: type[FakePostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("starlette")
    import sessiontrace.server
    from sessiontrace.server._cli import run_ui

    served: list[Any] = []
    monkeypatch.setattr(sessiontrace.server, "serve", lambda **kw: served.append(kw["db"]))
    assert run_ui(_ui_args(db=PG_URI)) == 0
    assert run_ui(_ui_args(tracking_uri=PG_URI)) == 0
    assert served == [PG_URI, PG_URI]


def test_ui_without_psycopg_says_what_to_install(
    no_psycopg: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("starlette")
    import sessiontrace.server
    from sessiontrace.server._cli import run_ui

    monkeypatch.setattr(sessiontrace.server, "serve", lambda **kw: pytest.fail("served"))
    assert run_ui(_ui_args(db=PG_URI)) == 2
    err = capsys.readouterr().err
    assert "pip install 'sessiontrace[postgres]'" in err
    assert SECRET not in err
