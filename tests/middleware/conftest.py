from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessiontrace.middleware import _config


@pytest.fixture(autouse=True)
def fresh_warning_budget() -> Iterator[None]:
    """Each test sees the first bad-header warning of each kind (they are rate-limited)."""
    _config._warn_budget._state.clear()
    yield
