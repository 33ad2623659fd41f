"""Syntax tree to SQL over the store's tables, with every value a named parameter.

The only text that reaches SQL comes from this module's constants and the column
names of the field whitelist; keys and values are always bound (``:p0``, ``:p1``,
...). Conditions on tags and metadata become ``IN (subquery)`` over the
``(key, value)`` index, or a correlated ``EXISTS`` probe of the primary key when
an indexed equality (user, session, trace id, client request id) already
narrows the traces to a few rows. Span conditions are ``EXISTS`` probes of the
``(trace_id, span_id)`` index.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sqlite3
from typing import Any

from ._fields import Field
from ._parser import BoolOp, Compare, Node, Not, OrderKey

__all__ = ["Compiled", "compile_filter", "compile_order_by", "like_to_glob", "register_functions"]

_TABLES = {"tag": "trace_tags", "metadata": "trace_metadata"}
# Columns never NULL, so usable in keyset pagination (see _api).
NOT_NULL_COLUMNS = frozenset({"request_time", "trace_id", "state"})


@dataclasses.dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict[str, Any]
    uses_regexp: bool = False


class _Builder:
    def __init__(self, alias: str, prefix: str, correlated: bool) -> None:
        self.alias = alias
        self.prefix = prefix
        self.correlated = correlated
        self.params: dict[str, Any] = {}
        self.uses_regexp = False

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def node(self, node: Node) -> str:
        if isinstance(node, BoolOp):
            joiner = f" {node.op} "
            return "(" + joiner.join(self.node(item) for item in node.items) + ")"
        if isinstance(node, Not):
            # The complement: a trace with no user is in "NOT user = 'a'" (SQL's NULL
            # would leave it out). "user != 'a'" keeps MLflow's meaning: has a user, not 'a'.
            return f"NOT coalesce({self.node(node.item)}, 0)"
        return self.compare(node)

    def predicate(self, expr: str, c: Compare) -> str:
        """``expr <op> <bound value>`` for one comparison (no IS NULL here)."""
        op, value = c.op, c.value
        if op in ("IN", "NOT IN"):
            assert isinstance(value, tuple)
            marks = ", ".join(self.bind(v) for v in value)
            return f"{expr} {op} ({marks})"
        if op == "LIKE":  # case-sensitive, as in MLflow: SQLite's LIKE is not
            assert isinstance(value, str)
            return f"{expr} GLOB {self.bind(like_to_glob(value))}"
        if op == "ILIKE":
            return f"{expr} LIKE {self.bind(value)}"
        if op == "RLIKE":
            self.uses_regexp = True
            return f"{expr} REGEXP {self.bind(value)}"
        return f"{expr} {op} {self.bind(value)}"

    def compare(self, c: Compare) -> str:
        f = c.field
        a = self.alias
        if f.kind == "column":
            expr = f"{a}.{f.key}"
            if c.op == "IS NULL":
                return f"{expr} IS NULL"
            if c.op == "IS NOT NULL":
                return f"{expr} IS NOT NULL"
            if f.null_is_zero and _holds_for_zero(c.op, c.value):
                # NULL counts as 0 (a trace without LLM calls has 0 tokens); written
                # as an OR only when 0 matches, so "total_tokens > ?" keeps its index.
                return f"({self.predicate(expr, c)} OR {expr} IS NULL)"
            return self.predicate(expr, c)
        if f.kind in _TABLES:
            table = _TABLES[f.kind]
            key = self.bind(f.key)
            if c.op in ("IS NULL", "IS NOT NULL"):
                cond = f"_x.key = {key}"
                negate = c.op == "IS NULL"
            else:
                cond = f"_x.key = {key} AND " + self.predicate("_x.value", c)
                negate = False
            if self.correlated:
                exists = (
                    f"EXISTS (SELECT 1 FROM {table} _x WHERE _x.trace_id = {a}.trace_id AND {cond})"  # noqa: S608
                )
                return f"NOT {exists}" if negate else exists
            member = "NOT IN" if negate else "IN"
            return f"{a}.trace_id {member} (SELECT _x.trace_id FROM {table} _x WHERE {cond})"  # noqa: S608
        # spans: probe the (trace_id, span_id) index of this trace's few spans
        if f.kind == "span":
            cond = self.predicate(f"_s.{f.key}", c)
        else:
            path = self.bind('$."' + f.key + '"')
            cond = self.predicate(f"CAST(json_extract(_s.attributes, {path}) AS TEXT)", c)
        return f"EXISTS (SELECT 1 FROM spans _s WHERE _s.trace_id = {a}.trace_id AND {cond})"  # noqa: S608


def _holds_for_zero(op: str, value: Any) -> bool:
    """Whether ``0 <op> value``: does a NULL-as-zero row match?"""
    zero_vs_value = (value < 0) - (value > 0)  # cmp(0, value): -1, 0 or 1
    holds: bool = {
        "=": zero_vs_value == 0,
        "!=": zero_vs_value != 0,
        "<": zero_vs_value < 0,
        "<=": zero_vs_value <= 0,
        ">": zero_vs_value > 0,
        ">=": zero_vs_value >= 0,
    }[op]
    return holds


def _narrowed_by_index(node: Node) -> bool:
    items = node.items if isinstance(node, BoolOp) and node.op == "AND" else (node,)
    return any(isinstance(c, Compare) and c.field.indexed_eq and c.op in ("=", "IN") for c in items)


def compile_filter(node: Node | None, *, alias: str = "t", prefix: str = "p") -> Compiled:
    """SQL for a WHERE clause over ``traces AS <alias>`` (``1`` for no filter)."""
    if node is None:
        return Compiled("1", {})
    b = _Builder(alias, prefix, correlated=_narrowed_by_index(node))
    sql = b.node(node)
    return Compiled(sql, b.params, b.uses_regexp)


def order_expression(field: Field, alias: str, bind: Any) -> str:
    if field.kind == "column":
        return f"{alias}.{field.key}"
    table = _TABLES[field.kind]
    return (
        f"(SELECT _o.value FROM {table} _o WHERE _o.trace_id = {alias}.trace_id "  # noqa: S608
        f"AND _o.key = {bind(field.key)})"
    )


def compile_order_by(
    keys: list[OrderKey], *, alias: str = "t", prefix: str = "o"
) -> tuple[list[tuple[str, bool]], dict[str, Any]]:
    """(expression, ascending) pairs with tie-breakers appended, and their parameters."""
    params: dict[str, Any] = {}

    def bind(value: Any) -> str:
        name = f"{prefix}{len(params)}"
        params[name] = value
        return f":{name}"

    out = [(order_expression(k.field, alias, bind), k.ascending) for k in keys]
    directions = dict(out)
    time_expr, id_expr = f"{alias}.request_time", f"{alias}.trace_id"
    if time_expr not in directions:
        out.append((time_expr, False))
        directions[time_expr] = False
    if id_expr not in directions:
        # Trace ids grow with start time, so ties in the millisecond keep their order.
        out.append((id_expr, directions[time_expr]))
    return out, params


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern as a GLOB pattern: ``%`` -> ``*``, ``_`` -> ``?``, GLOB's own
    metacharacters made literal."""
    out: list[str] = []
    for ch in pattern:
        if ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str | None, value: Any) -> bool:
    if pattern is None or value is None:
        return False
    return _regex(pattern).search(str(value)) is not None


def register_functions(conn: sqlite3.Connection) -> None:
    """Give ``conn`` the ``REGEXP`` operator used by RLIKE."""
    conn.create_function("regexp", 2, _regexp, deterministic=True)
