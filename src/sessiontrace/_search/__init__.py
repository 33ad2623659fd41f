"""Search: the filter language, its compiler to SQL, and ``search_traces``.

Layout: ``_lexer`` (tokens) -> ``_parser`` (syntax tree, fields checked against
``_fields``' whitelist) -> ``_compile`` (SQL with named parameters, in the store's
dialect) -> ``_api``
(``search_traces`` and pagination, ``_paging``). Errors are ``FilterSyntaxError``.
"""

from ._api import FRAME_COLUMNS, TraceList, search_traces, traces_to_frame
from ._compile import Compiled, compile_filter, compile_order_by, compile_search, register_functions
from ._errors import FilterSyntaxError
from ._paging import Page
from ._parser import BoolOp, Compare, Node, Not, OrderKey, parse_filter, parse_order_by

__all__ = [
    "FRAME_COLUMNS",
    "BoolOp",
    "Compare",
    "Compiled",
    "FilterSyntaxError",
    "Node",
    "Not",
    "OrderKey",
    "Page",
    "TraceList",
    "compile_filter",
    "compile_order_by",
    "compile_search",
    "parse_filter",
    "parse_order_by",
    "register_functions",
    "search_traces",
    "traces_to_frame",
]
