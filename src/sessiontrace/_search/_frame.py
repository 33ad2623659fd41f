"""Traces as a pandas DataFrame, built from blocks when pandas allows it.

``pandas.DataFrame(dict_of_lists)`` infers every column's dtype, one column at a
time: about 10 us a column, 30 columns, whatever the number of rows. Most of our
columns have a type known in advance (ids are strings, times are integers, the
``trace`` column holds objects), so where pandas offers
``pandas.api.internals.create_dataframe_from_blocks`` (pandas 3) the frame is
assembled from a handful of blocks instead: one 2-D object array, one 2-D int64
array, one string array per string column. Any column whose type is not certain
goes through pandas' own inference, one column at a time.

The result must be the frame the plain constructor would build, dtypes included,
under pandas 2 and 3 and with or without pandas' string inference; the tests compare
the two on varied traces. If the low-level call is missing or fails, the plain
constructor is used.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Any, cast

from .._entities import Trace

if TYPE_CHECKING:
    import pandas

__all__ = ["frame_from_columns"]

logger = logging.getLogger("sessiontrace")

_OBJECT, _INT, _STR, _INFER, _FLOAT = range(5)

# What pandas' options make of strings (str or object dtype, which storage), and the
# column indexes built under them: asking pandas costs about 20 us a frame. Without
# pandas' option table (a private name) nothing is cached.
_string_dtypes: dict[Any, Any] = {}
_column_indexes: dict[Any, Any] = {}


@functools.cache
def _option_table() -> Any:
    try:
        from pandas._config.config import _global_config  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _global_config


def _options_key() -> Any:
    table = _option_table()
    try:
        return (table["future"]["infer_string"], table["mode"]["string_storage"])
    except (KeyError, TypeError):  # another pandas: ask every time
        return None


def _string_dtype(pd: Any, key: Any) -> Any:
    dtype = _string_dtypes.get(key) if key is not None else None
    if dtype is None:
        dtype = pd.Series(["x"]).dtype  # str in pandas 3, object in pandas 2
        if key is not None:
            _string_dtypes[key] = dtype
    return dtype


def _column_index(pd: Any, names: list[str], key: Any) -> Any:
    """``pandas.Index(names)``: a view of a cached one (a view's name is its own)."""
    if key is None:
        return pd.Index(names)
    cache_key = (key, *names)
    index = _column_indexes.get(cache_key)
    if index is None:
        if len(_column_indexes) >= 64:
            _column_indexes.clear()
        index = _column_indexes[cache_key] = pd.Index(names)
    return index.view()


def frame_from_columns(columns: dict[str, list[Any]]) -> pandas.DataFrame:
    """``pandas.DataFrame(columns)``, faster; ``columns`` are lists of equal length."""
    import pandas as pd

    build = getattr(getattr(pd.api, "internals", None), "create_dataframe_from_blocks", None)
    if build is None or not columns:
        return cast("pandas.DataFrame", pd.DataFrame(columns))
    try:
        return _from_blocks(pd, build, columns)
    except Exception:  # e.g. an int beyond int64, or a pandas internals change
        logger.debug("sessiontrace: DataFrame from blocks failed; using pandas'", exc_info=True)
        return cast("pandas.DataFrame", pd.DataFrame(columns))


def _kind(values: list[Any]) -> tuple[int, bool]:
    """The dtype ``pandas.DataFrame`` would infer, where it is certain without asking,
    and whether a value is missing (None or NaN)."""
    strings = ints = floats = missing = nans = 0
    for v in values:
        t = type(v)
        if t is str:
            strings += 1
        elif t is int:
            ints += 1
        elif t is dict or t is list:
            return _OBJECT, False  # containers never convert: the column stays object
        elif t is float:
            if math.isnan(v):
                missing += 1
                nans += 1
            else:
                floats += 1
        elif v is None:
            missing += 1
        elif t is bool:
            return _INFER, False
        else:
            # Trace objects (the ``trace`` column): pandas leaves unknown classes alone.
            return (_OBJECT if isinstance(v, Trace) else _INFER), False
    if strings and strings + missing == len(values):
        return _STR, missing > 0
    if (floats or nans) and floats + nans == len(values):
        return _FLOAT, False  # float64 (NaN for the missing ones, all NaN too)
    if ints == len(values):
        return (_INT if min(values) >= -(2**63) and max(values) < 2**63 else _INFER), False
    if missing == len(values) and all(v is None for v in values):
        return _OBJECT, False
    return _INFER, False


def _from_blocks(pd: Any, build: Any, columns: dict[str, list[Any]]) -> pandas.DataFrame:
    import numpy as np

    n = len(next(iter(columns.values())))
    key = _options_key()
    string_dtype = _string_dtype(pd, key)
    strings_as_objects = string_dtype == np.dtype(object)
    string_array: Any = None if strings_as_objects else string_dtype.construct_array_type()
    # pandas' own strings (not pyarrow's) wrap an object array of str and the dtype's
    # missing value: built directly, skipping a check of every value we made already.
    own_strings = (
        not strings_as_objects
        and getattr(string_dtype, "storage", None) == "python"
        and hasattr(string_array, "_simple_new")
    )
    make_blocks = own_strings  # ourselves (_block_maker), unless a column needs pandas
    objects: list[list[Any]] = []
    object_at: list[int] = []
    ints: list[list[Any]] = []
    int_at: list[int] = []
    floats: list[list[Any]] = []
    float_at: list[int] = []
    blocks: list[tuple[Any, Any]] = []
    # Aliases (info.trace_id, info.request_id and trace_id) are one list under several
    # names: classified and converted once, each name getting its own copy.
    seen: dict[int, tuple[int, Any]] = {}
    places = np.arange(len(columns))  # a block's columns; one each for most
    for position, values in enumerate(columns.values()):
        if len(values) != n:
            raise ValueError("columns of different lengths")
        kind, array = seen.get(id(values), (None, None))
        missing = False
        if kind is None:
            kind, missing = _kind(values)
        if kind == _OBJECT or (kind == _STR and strings_as_objects):
            objects.append(values)
            object_at.append(position)
        elif kind == _INT:
            ints.append(values)
            int_at.append(position)
        elif kind == _FLOAT:
            floats.append(values)
            float_at.append(position)
        elif kind == _STR:
            if array is None:
                # Only str, None and NaN here: np.array makes the flat array it is
                # given (faster than fromiter for so few values).
                if not own_strings:
                    strings = np.array(values, dtype=object)
                    array = string_array._from_sequence(strings, dtype=string_dtype)
                else:
                    na = string_dtype.na_value
                    present = [v if type(v) is str else na for v in values] if missing else values
                    strings = np.array(present, dtype=object)
                    array = string_array._simple_new(strings, string_dtype)
                blocks.append((array, places[position : position + 1]))
            else:  # an alias: the same strings, not the same array
                blocks.append((array.copy(), places[position : position + 1]))
        else:
            series = pd.Series(values)
            array = series.array
            if isinstance(array, pd.arrays.NumpyExtensionArray):
                array = series.to_numpy().reshape(1, n)
            else:  # e.g. datetimes: pandas knows their block type, we do not
                make_blocks = False
            blocks.append((array, places[position : position + 1]))
        seen[id(values)] = (kind, array if kind == _STR else None)
    if objects:
        flat = [v for values in objects for v in values]
        # fromiter: a value that is itself a list stays one element
        block = np.fromiter(flat, dtype=object, count=len(flat)).reshape(len(objects), n)
        blocks.append((block, np.array(object_at)))
    if ints:
        blocks.append((np.array(ints, dtype=np.int64), np.array(int_at)))
    if floats:
        blocks.append((np.array(floats, dtype=np.float64), np.array(float_at)))
    index, names = pd.RangeIndex(n), _column_index(pd, list(columns), key)
    if make_blocks and (make := _block_maker(pd)) is not None:
        return cast("pandas.DataFrame", make(blocks, index, names))
    return cast("pandas.DataFrame", build(blocks, index=index, columns=names))


@functools.cache
def _block_maker(pd: Any) -> Any:
    """On pandas 3, a function doing what ``create_dataframe_from_blocks`` does for our
    blocks (pandas' own strings, and 2-D object or int64 arrays) without its checks,
    which cost about 25 us a frame; ``None`` elsewhere."""
    if pd.__version__.split(".")[0] != "3":
        return None
    try:
        return _make_block_maker(pd)
    except Exception:  # internals moved: use the public call
        logger.debug("sessiontrace: no direct block maker", exc_info=True)
        return None


def _make_block_maker(pd: Any) -> Any:
    # pandas' internals have no type stubs.
    from pandas._libs.internals import BlockPlacement  # type: ignore[import-not-found]
    from pandas.core.internals.blocks import (  # type: ignore[import-not-found]
        ExtensionBlock,
        NumpyBlock,
    )
    from pandas.core.internals.managers import BlockManager  # type: ignore[import-not-found]

    from_mgr = pd.DataFrame._from_mgr

    def make(blocks: list[tuple[Any, Any]], index: Any, columns: Any) -> pandas.DataFrame:
        made = [
            (NumpyBlock if values.ndim == 2 else ExtensionBlock)(
                values, ndim=2, placement=BlockPlacement(place)
            )
            for values, place in blocks
        ]
        manager = BlockManager(made, [columns, index], verify_integrity=False)
        return cast("pandas.DataFrame", from_mgr(manager, manager.axes))

    return make
