"""Every test gets its own SQLite file and fresh process-wide state; PostgreSQL on request.

A test that takes ``postgres_uri`` gets an empty PostgreSQL database (the store
creates its tables on first use). The server is ``$SESSIONTRACE_TEST_PG_URI`` when set
(``make pytest`` starts one for the whole run with ``scripts/pg_throwaway.py run``),
otherwise a throwaway one started here for the session. Without PostgreSQL such tests
are skipped, except under ``CI=true``, where they fail: CI must never pass by skipping.
Those tests carry the ``postgres`` marker, so ``-m postgres`` / ``-m "not postgres"``
select them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

import sessiontrace
from sessiontrace import _runtime

ROOT = Path(__file__).resolve().parents[1]


# Store-facing test modules set ``pytestmark = pytest.mark.backends``: each of their
# tests runs twice, on the embedded SQLite file and on an empty PostgreSQL database,
# through the same public API (the SDK writes to, and search/analytics read from,
# the store that ``configure(tracking_uri=...)`` selects).
BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("backends") and "backend" in metafunc.fixturenames:
        # A test about one engine's own files (a migration, say) names it: it runs
        # there only, rather than being skipped on the other.
        only = metafunc.definition.get_closest_marker("only_backend")
        metafunc.parametrize("backend", only.args if only else BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store this test runs on: ``sqlite`` unless its module runs on both."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(autouse=True)
def store_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest
) -> Iterator[Path]:
    for name in _runtime.ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "traces.db"
    uri = f"sqlite:///{path}"
    if backend == "postgresql":
        uri = request.getfixturevalue("postgres_uri")
    sessiontrace.configure(tracking_uri=uri, flush_interval=0.01)
    yield path
    _runtime.reset_for_tests()  # writes what is queued (bounded by shutdown_timeout)


@pytest.fixture
def store(store_path: Path) -> Any:
    """The store the SDK writes to in this test (SQLite or PostgreSQL, see ``backend``)."""
    return _runtime.get_store()


@pytest.fixture
def tracking_uri(store_path: Path) -> str:
    """The tracking URI of this test's store: ``sqlite:///<store_path>`` or PostgreSQL's."""
    return _runtime.settings().tracking_uri


@pytest.fixture
def db(store_path: Path, backend: str, tracking_uri: str) -> str:
    """What ``--db`` and ``create_app(db=...)`` take for this test's store: the SQLite
    file's path, or the PostgreSQL URI."""
    return str(store_path) if backend == "sqlite" else tracking_uri


# -- PostgreSQL ---------------------------------------------------------------------------

POSTGRES_FIXTURES = {"postgres_server", "postgres_uri", "throwaway_postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_postgres or POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def unavailable(message: str) -> NoReturn:
    """Skip locally; fail under CI=true (the rule of the browser tests)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def load_pg_throwaway() -> ModuleType:
    """``scripts/pg_throwaway.py``, imported by path: scripts/ is not a package."""
    name = "pg_throwaway"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "pg_throwaway.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def pg_throwaway() -> ModuleType:
    return load_pg_throwaway()


@pytest.fixture
def throwaway_postgres(pg_throwaway: ModuleType) -> Any:
    """The ``ThrowawayPostgres`` class, for tests that start servers of their own."""
    try:
        pg_throwaway.find_tools()
    except pg_throwaway.PostgresUnavailable as exc:
        problem = str(exc)
    else:
        return pg_throwaway.ThrowawayPostgres
    unavailable(problem)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        psycopg = None
    if psycopg is None:
        unavailable("PostgreSQL tests need psycopg: pip install -e '.[test]'")
    return psycopg


@pytest.fixture(scope="session")
def postgres_server(pg_throwaway: ModuleType) -> Iterator[str]:
    """The URI of a PostgreSQL server's test database, for the whole session."""
    uri = os.environ.get(pg_throwaway.ENV_URI)
    if uri:
        yield uri
        return
    server = pg_throwaway.ThrowawayPostgres()
    try:
        uri = server.start()
    except pg_throwaway.PostgresUnavailable as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        unavailable(f"PostgreSQL tests need a server: {problem}")
    try:
        yield uri
    finally:
        server.stop()


def with_database(uri: str, database: str) -> str:
    """``uri`` naming another database on the same server (a URI stays a URI)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def _postgres_database(postgres_server: str) -> str:
    """This process's database: the server's own, or one per xdist worker.

    Parallel test processes must not wipe each other's tables, so each worker
    (``PYTEST_XDIST_WORKER``) gets a database of its own, created once.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return postgres_server
    psycopg = _psycopg()
    from psycopg import sql

    base = urlsplit(postgres_server).path.lstrip("/") or "sessiontrace_test"
    database = f"{base}_{worker}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another worker's
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(postgres_server, database)


@pytest.fixture
def postgres_uri(_postgres_database: str) -> str:
    """A URI to an empty PostgreSQL database: every schema of the last test is dropped.

    Dropping schemas rather than truncating known tables keeps this independent of
    the store's schema (about 9 ms a test, research/postgres.md section 1). The
    database is wiped: never point ``SESSIONTRACE_TEST_PG_URI`` at data you keep.
    """
    psycopg = _psycopg()
    from psycopg import sql

    with psycopg.connect(_postgres_database, autocommit=True) as conn:
        # A store of an earlier test left open inside a transaction would make DROP
        # wait forever; fail with the culprit instead.
        conn.execute("SET lock_timeout = '10s'")
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace"
                " WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'"
            )
        ]
        try:
            with conn.transaction():
                for schema in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
                conn.execute("CREATE SCHEMA public")
        except psycopg.errors.LockNotAvailable:
            others = conn.execute(
                "SELECT pid, state, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            pytest.fail(f"an earlier test's connection holds the tables: {others}")
    return _postgres_database
