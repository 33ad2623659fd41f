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
from collections.abc import Callable, Sequence
from typing import Any, cast

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
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break the traced call
        return f"<unrepresentable {type(value).__name__}>"


_json_dumps = json.JSONEncoder(
    default=_default, ensure_ascii=False, separators=(",", ":"), check_circular=True
).encode


class InexactJSON(str):
    """JSON text from the stdlib encoder, which may hold what orjson reads back
    differently (integers beyond 64 bits as floats; NaN and Infinity it refuses).
    orjson's own output never does: it refuses such integers, and writes NaN as null.
    The store marks span arrays built from such text (see ``loads_marked``)."""

    __slots__ = ()


def _stdlib_dumps(value: Any) -> str:
    try:
        return InexactJSON(_json_dumps(value))
    except (ValueError, TypeError, RecursionError):  # circular, odd keys, too deep
        return InexactJSON(_json_dumps(_sanitize(value, set(), 0)))


_MAX_DEPTH = 64


def _sanitize(value: Any, path: set[int], depth: int) -> Any:
    """Degrade only the offending parts: cycles and excess depth become markers."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    if id(value) in path:
        return "<circular reference>"
    if isinstance(value, dict):
        path.add(id(value))
        try:
            return {str(k): _sanitize(v, path, depth + 1) for k, v in value.items()}
        finally:
            path.discard(id(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        path.add(id(value))
        try:
            return [_sanitize(v, path, depth + 1) for v in value]
        finally:
            path.discard(id(value))
    try:
        converted = _default(value)
    except Exception:  # a failing __repr__ or model_dump
        return f"<unserializable {type(value).__name__}>"
    if isinstance(converted, str):
        return converted
    path.add(id(value))
    try:
        return _sanitize(converted, path, depth + 1)
    finally:
        path.discard(id(value))


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


# orjson reads integers from -2**63 to 2**64 - 1 exactly and anything beyond as a
# float: a run of 20 digits, or 19 after a minus sign, may be such an integer (rare:
# also long digit runs inside strings), and such text takes json. Nanosecond times
# (19 digits, positive) stay with orjson. The scan maps every byte to "0" (an ASCII
# digit), "-" or " " and looks for those runs: a regex costs about 15 ns a character,
# this about 1.5 (UTF-8 continuation bytes are never ASCII digits or "-", and JSON
# numbers are ASCII).
_DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2D if b == 0x2D else 0x20 for b in range(256))
_LONG_RUN = b"0" * 20
_NEGATIVE_RUN = b"-" + b"0" * 19


def _long_digits(text: str) -> bool:
    mapped = text.encode("utf-8", "surrogatepass").translate(_DIGIT_MAP)
    return _LONG_RUN in mapped or _NEGATIVE_RUN in mapped


def _load_orjson_loads() -> Callable[[str], Any] | None:
    try:
        import orjson
    except ImportError:
        return None
    decode, error, slow = orjson.loads, orjson.JSONDecodeError, json.loads
    long_digits = _long_digits

    def orjson_loads(text: str) -> Any:
        # The stdlib reader decides whenever orjson would differ: NaN and Infinity (the
        # stdlib encoder writes them), lone surrogates, integers beyond 64 bits.
        if not long_digits(text):
            try:
                return decode(text)
            except error:
                pass
        return slow(text)

    return orjson_loads


_loads: Callable[[str], Any] = _load_orjson_loads() or json.loads


def loads(text: str | None) -> Any:
    """Decode stored JSON text; ``None`` stays ``None``."""
    if text is None:
        return None
    return _loads(text)


def _load_strings_loader() -> Callable[[str], Any]:
    try:
        import orjson
    except ImportError:
        return json.loads
    decode, error, slow = orjson.loads, orjson.JSONDecodeError, json.loads

    def loads_strings(text: str) -> Any:
        try:
            return decode(text)
        except error:
            return slow(text)

    return loads_strings


loads_strings: Callable[[str], Any] = _load_strings_loader()
"""Decode JSON text holding no numbers, such as a ``{str: str}`` object (metadata,
tags): no check for integers beyond 64 bits, which only numbers can be."""

INEXACT_MARK = " "
"""Leads stored JSON text that may hold numbers orjson cannot read exactly (JSON
allows the space; every reader skips it)."""


def loads_marked(text: str) -> Any:
    """Decode stored JSON text that carries ``INEXACT_MARK`` when it needs the careful
    reader: unmarked text was built from orjson's output only, and skips the scan for
    long integers."""
    if text[:1] == INEXACT_MARK:
        return _loads(text)
    return loads_strings(text)


def dumps_marked_array(texts: list[str]) -> str:
    """The JSON array of JSON ``texts``, marked with ``INEXACT_MARK`` when one of them
    is ``InexactJSON``; read it with ``loads_marked``."""
    array = "[" + ",".join(texts) + "]"
    if any(type(text) is InexactJSON for text in texts):
        return INEXACT_MARK + array
    return array


def loads_marked_many(texts: Sequence[str]) -> list[Any]:
    """``[loads_marked(t) for t in texts]`` in one parse (the texts joined as one array),
    scanned for long integers only when one of them is marked."""
    joined = "[" + ",".join(texts) + "]"
    if any(text[:1] == INEXACT_MARK for text in texts):
        return cast("list[Any]", _loads(joined))
    return cast("list[Any]", loads_strings(joined))
