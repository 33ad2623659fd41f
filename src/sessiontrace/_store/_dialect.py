"""Where the SQL of search and analytics differs between SQLite and PostgreSQL.

Search and analytics write one SQL text for both stores; the few constructs the
engines spell differently come from the store's ``dialect``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


@dataclasses.dataclass(frozen=True)
class Dialect:
    name: str


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql")
