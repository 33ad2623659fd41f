"""Opaque page tokens and the ``Page`` every paginated call returns.

A token is URL-safe base64 of a small JSON object: where the next page starts
(the sort values of the last row, or an offset) and a fingerprint of the query,
so a token is refused when it is used with a different filter or order.
Tokens are not signed: they carry nothing a caller could not ask for directly.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Page", "decode_token", "encode_token", "fingerprint"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results; pass ``next_page_token`` back for the next (``None``: last page).

    >>> page = sessiontrace.list_sessions()
    >>> while True:
    ...     for session in page: ...
    ...     if page.next_page_token is None: break
    ...     page = sessiontrace.list_sessions(page_token=page.next_page_token)
    """

    items: tuple[T, ...]
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [_as_dict(item) for item in self.items],
            "next_page_token": self.next_page_token,
        }


def _as_dict(item: Any) -> Any:
    to_dict = getattr(item, "to_dict", None)
    return to_dict() if callable(to_dict) else item


def fingerprint(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_token(query: str, **state: Any) -> str:
    payload = json.dumps({"q": query, **state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, query: str) -> dict[str, Any]:
    """The state stored in ``token``; ``ValueError`` if it is malformed or for another query."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise ValueError("invalid page_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("invalid page_token") from None
    if not isinstance(state, dict):
        raise ValueError("invalid page_token")
    if state.get("q") != query:
        raise ValueError(
            "page_token belongs to a different query: pass the same filter and order as "
            "the call that returned it"
        )
    return state


def check_offset(state: dict[str, Any]) -> int:
    offset = state.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("invalid page_token")
    return offset


def check_values(state: dict[str, Any], types: Sequence[type]) -> list[Any]:
    values = state.get("k")
    if not isinstance(values, list) or len(values) != len(types):
        raise ValueError("invalid page_token")
    for value, typ in zip(values, types, strict=True):
        if isinstance(value, bool) or not isinstance(value, typ):
            raise ValueError("invalid page_token")
    return values
