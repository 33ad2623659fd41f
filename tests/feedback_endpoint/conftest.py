from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessiontrace.feedback import _core
from sessiontrace.middleware import _config


@pytest.fixture(autouse=True)
def fresh_warning_budgets() -> Iterator[None]:
    """Each test sees the first warning of each kind (they are rate-limited)."""
    _core._log_budget._last.clear()
    _config._warn_budget._state.clear()
    yield
