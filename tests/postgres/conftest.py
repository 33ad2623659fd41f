"""A PostgreSQL for the tests here: ``SESSIONTRACE_TEST_PG_URI``, cleaned per test.

Temporary (issue 12): the shared fixture in tests/conftest.py replaces this one at
the merge. Without the variable the tests skip, except under ``CI=true``, where a
missing PostgreSQL is a failure.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def postgres_uri() -> str:
    uri = os.environ.get("SESSIONTRACE_TEST_PG_URI")
    if not uri:
        if os.environ.get("CI") == "true":
            pytest.fail("SESSIONTRACE_TEST_PG_URI is not set: CI runs the PostgreSQL tests")
        pytest.skip("no PostgreSQL: set SESSIONTRACE_TEST_PG_URI")
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return uri
