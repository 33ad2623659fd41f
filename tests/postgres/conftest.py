"""PostgreSQL for these tests: ``SESSIONTRACE_TEST_PG_URI`` names a server.

Temporary: the shared ``postgres_uri`` fixture of tests/conftest.py replaces this
one at merge. Without the variable the tests skip, except under ``CI=true``, where a
missing PostgreSQL fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sessiontrace import _runtime


@pytest.fixture
def postgres_uri() -> str:
    uri = os.environ.get("SESSIONTRACE_TEST_PG_URI")
    if not uri:
        if os.environ.get("CI") == "true":
            pytest.fail("SESSIONTRACE_TEST_PG_URI is not set (PostgreSQL is required in CI)")
        pytest.skip("SESSIONTRACE_TEST_PG_URI is not set")
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return uri


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """What traced code hands to the pipeline (finished traces, late spans, tag
    changes), kept instead of written: ``take()`` returns the items so far, priced
    as the writer would, and starts a new list."""
    from sessiontrace.llm._pricing import price_items

    items: list[Any] = []
    monkeypatch.setattr(_runtime, "submit", items.append)

    def take() -> list[Any]:
        taken = list(items)
        items.clear()
        price_items(taken)
        return taken

    yield take
