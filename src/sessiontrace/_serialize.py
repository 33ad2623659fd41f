"""JSON encoding of span inputs, outputs and attributes.

Values are encoded when they are captured, on the caller's thread: chat apps
commonly append to the ``messages`` list they just passed in, and a trace must
show what the function saw, not what the list became later. Anything JSON cannot
encode falls back to pydantic's ``model_dump``, a dataclass's fields, or ``repr``,
so an odd value never fails the traced call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # fall through to repr
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


_json_dumps = json.JSONEncoder(
    default=_default, ensure_ascii=False, separators=(",", ":"), check_circular=True
).encode


def _stdlib_dumps(value: Any) -> str:
    try:
        return _json_dumps(value)
    except (ValueError, TypeError, RecursionError):  # circular, NaN keys, odd dict keys
        return json.dumps(repr(value), ensure_ascii=False)


def _load_orjson() -> Callable[[Any], str] | None:
    try:
        import orjson
    except ImportError:
        return None
    opts = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    encode = orjson.dumps

    def orjson_dumps(value: Any) -> str:
        try:
            return encode(value, default=_default, option=opts).decode()
        except (TypeError, orjson.JSONEncodeError):
            return _stdlib_dumps(value)

    return orjson_dumps


dumps: Callable[[Any], str] = _load_orjson() or _stdlib_dumps
"""Encode ``value`` as compact JSON text; never raises."""


def loads(text: str | None) -> Any:
    """Decode stored JSON text; ``None`` stays ``None``."""
    if text is None:
        return None
    return json.loads(text)
