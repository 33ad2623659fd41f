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

import logging
import math
from typing import TYPE_CHECKING, Any, cast

from .._entities import Trace

if TYPE_CHECKING:
    import pandas

__all__ = ["frame_from_columns"]

logger = logging.getLogger("sessiontrace")

_OBJECT, _INT, _STR, _INFER = range(4)


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


def _kind(values: list[Any]) -> int:
    """The dtype ``pandas.DataFrame`` would infer, where it is certain without asking."""
    strings = ints = missing = 0
    for v in values:
        t = type(v)
        if t is str:
            strings += 1
        elif t is int:
            ints += 1
        elif t is dict or t is list:
            return _OBJECT  # containers never convert: the column stays object
        elif v is None or (t is float and math.isnan(v)):
            missing += 1
        elif t is bool or t is float:
            return _INFER
        else:
            # Trace objects (the ``trace`` column): pandas leaves unknown classes alone.
            return _OBJECT if isinstance(v, Trace) else _INFER
    if strings and strings + missing == len(values):
        return _STR
    if ints == len(values):
        return _INT if min(values) >= -(2**63) and max(values) < 2**63 else _INFER
    if missing == len(values) and all(v is None for v in values):
        return _OBJECT
    return _INFER


def _from_blocks(pd: Any, build: Any, columns: dict[str, list[Any]]) -> pandas.DataFrame:
    import numpy as np

    n = len(next(iter(columns.values())))
    string_dtype = pd.Series(["x"]).dtype  # str in pandas 3, object in pandas 2
    strings_as_objects = string_dtype == np.dtype(object)
    string_array: Any = None if strings_as_objects else string_dtype.construct_array_type()
    objects: list[list[Any]] = []
    object_at: list[int] = []
    ints: list[list[Any]] = []
    int_at: list[int] = []
    blocks: list[tuple[Any, Any]] = []
    # Aliases (info.trace_id, info.request_id and trace_id) are one list under several
    # names: classified and converted once, each name getting its own copy.
    seen: dict[int, tuple[int, Any]] = {}
    for position, values in enumerate(columns.values()):
        if len(values) != n:
            raise ValueError("columns of different lengths")
        kind, array = seen.get(id(values), (None, None))
        if kind is None:
            kind = _kind(values)
        if kind == _OBJECT or (kind == _STR and strings_as_objects):
            objects.append(values)
            object_at.append(position)
        elif kind == _INT:
            ints.append(values)
            int_at.append(position)
        elif kind == _STR:
            if array is None:
                array = string_array._from_sequence(
                    np.fromiter(values, dtype=object, count=n), dtype=string_dtype
                )
                blocks.append((array, np.array([position])))
            else:  # an alias: the same strings, not the same array
                blocks.append((array.copy(), np.array([position])))
        else:
            series = pd.Series(values)
            array = series.array
            if isinstance(array, pd.arrays.NumpyExtensionArray):
                array = series.to_numpy().reshape(1, n)
            blocks.append((array, np.array([position])))
        seen[id(values)] = (kind, array if kind == _STR else None)
    if objects:
        block = np.empty((len(objects), n), dtype=object)
        for row, values in enumerate(objects):
            # fromiter: a value that is itself a list stays one element
            block[row] = np.fromiter(values, dtype=object, count=n)
        blocks.append((block, np.array(object_at)))
    if ints:
        blocks.append((np.array(ints, dtype=np.int64), np.array(int_at)))
    return cast(
        "pandas.DataFrame", build(blocks, index=pd.RangeIndex(n), columns=pd.Index(list(columns)))
    )
