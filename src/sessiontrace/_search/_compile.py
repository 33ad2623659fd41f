"""Syntax tree to SQL over the store's tables, with every value a named parameter.

The only text that reaches SQL comes from this module's constants, the store
dialect's templates and the column names of the field whitelist; keys and values
are always bound (``:p0``, ``:p1``, ...). Conditions on tags and metadata become
``IN (subquery)`` over the ``(key, value)`` index, or a correlated ``EXISTS``
probe of the primary key when an indexed equality (user, session, trace id,
client request id) already narrows the traces to a few rows. Span conditions are
``EXISTS`` probes of the ``(trace_id, span_id)`` index.

The same tree compiles for SQLite and PostgreSQL (``dialect``); SQLite's text is
what it always was.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sqlite3
from typing import Any

from .._store._dialect import Dialect, RegexError, like_to_glob
from ._errors import FilterSyntaxError
from ._fields import Field
from ._parser import BoolOp, Compare, Node, Not, OrderKey, parse_filter

__all__ = [
    "Compiled",
    "compile_filter",
    "compile_order_by",
    "compile_search",
    "like_to_glob",
    "pattern_errors",
    "register_functions",
]

_TABLES = {"tag": "trace_tags", "metadata": "trace_metadata"}
# Columns never NULL, so usable in keyset pagination (see _api).
NOT_NULL_COLUMNS = frozenset({"request_time", "trace_id", "state"})
# Text columns the PostgreSQL schema leaves in the database's collation (ids, keys and
# values are COLLATE "C"): ordered by code point there too, as SQLite's BINARY does.
_FREE_TEXT = frozenset({"name", "state"})
# PostgreSQL's SQLSTATE for a regular expression it cannot compile.
_INVALID_REGULAR_EXPRESSION = "2201B"


@dataclasses.dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict[str, Any]
    # For an error the engine raises on an RLIKE pattern: the filter, and where in
    # it the first pattern is (None: no RLIKE).
    text: str | None = None
    regex_at: int | None = None


class _Builder:
    def __init__(
        self, dialect: Dialect, alias: str, prefix: str, correlated: bool, text: str | None
    ) -> None:
        self.d = dialect
        self.alias = alias
        self.prefix = prefix
        self.correlated = correlated
        self.text = text
        self.params: dict[str, Any] = {}
        self.regex_at: int | None = None

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
            return f"NOT coalesce({self.node(node.item)}, {self.d.false})"
        return self.compare(node)

    def predicate(self, expr: str, c: Compare) -> str:
        """``expr <op> <bound value>`` for one comparison (no IS NULL here)."""
        op, value, d = c.op, c.value, self.d
        if op in ("IN", "NOT IN"):
            assert isinstance(value, tuple)
            return d.in_list(expr, value, self.bind, negate=op == "NOT IN")
        if op == "LIKE":  # case-sensitive, as in MLflow (SQLite's own LIKE is not)
            assert isinstance(value, str)
            return d.like.format(expr=expr, value=self.bind(d.like_value(value)))
        if op == "ILIKE":
            return d.ilike.format(expr=expr, value=self.bind(value))
        if op == "RLIKE":
            assert isinstance(value, str)
            if self.regex_at is None:
                self.regex_at = c.value_pos
            return d.regex.format(expr=expr, value=self.bind(self.pattern(value, c)))
        return f"{expr} {op} {self.bind(value)}"

    def pattern(self, value: str, c: Compare) -> str:
        try:
            return self.d.regex_value(value)
        except RegexError as exc:
            if self.text is None:  # compiled without its source: point into the pattern
                raise FilterSyntaxError(str(exc), value, exc.offset) from None
            at = _source_offset(self.text, c.value_pos, exc.offset)
            raise FilterSyntaxError(str(exc), self.text, at) from None

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
        if f.kind in ("feedback", "expectation"):
            return self.assessment(c)
        # spans: probe the (trace_id, span_id) index of this trace's few spans
        if f.kind == "span":
            cond = self.predicate(f"_s.{f.key}", c)
        else:
            key = self.bind(self.d.json_key(f.key))
            cond = self.predicate(self.d.json_text.format(expr="_s.attributes", value=key), c)
        return f"EXISTS (SELECT 1 FROM spans _s WHERE _s.trace_id = {a}.trace_id AND {cond})"  # noqa: S608

    def assessment(self, c: Compare) -> str:
        """A valid (not overridden) assessment of the field's kind and name exists
        (whose value compares); ``IS NULL``: none does. By the (kind, name, valid)
        index, or per trace when an indexed equality narrows the traces."""
        f, a = c.field, self.alias
        cond = f"_a.kind = {self.bind(f.kind)} AND _a.name = {self.bind(f.key)} AND _a.valid = 1"
        if c.op not in ("IS NULL", "IS NOT NULL"):
            cond += " AND " + self.assessment_value(c)
        negate = c.op == "IS NULL"
        if self.correlated:
            exists = (
                f"EXISTS (SELECT 1 FROM assessments _a WHERE _a.trace_id = {a}.trace_id AND {cond})"  # noqa: S608
            )
            return f"NOT {exists}" if negate else exists
        member = "NOT IN" if negate else "IN"
        return f"{a}.trace_id {member} (SELECT _a.trace_id FROM assessments _a WHERE {cond})"  # noqa: S608

    def assessment_value(self, c: Compare) -> str:
        """How an assessment's value compares: a boolean by ``value_bool``, a number
        (``>`` ...) by ``value_num`` (booleans excluded), a string against the string
        value, or the JSON text of any other value (``= 'true'``, ``= '4'``)."""
        op, value = c.op, c.value
        if isinstance(value, bool):
            flag = self.bind(1 if value else 0)
            if op == "=":
                return f"_a.value_bool = {flag}"
            return (
                f"_a.value_json IS NOT NULL AND (_a.value_bool IS NULL OR _a.value_bool <> {flag})"
            )
        if op in (">", ">=", "<", "<="):
            return f"_a.value_bool IS NULL AND _a.value_num {op} {self.bind(value)}"
        text = f"coalesce({self.d.json_string.format(expr='_a.value_json')}, _a.value_json)"
        return self.predicate(text, c)


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


def compile_filter(
    node: Node | None,
    *,
    dialect: Dialect,
    alias: str = "t",
    prefix: str = "p",
    text: str | None = None,
) -> Compiled:
    """SQL for a WHERE clause over ``traces AS <alias>`` (``dialect.true`` for no
    filter). ``text`` is the filter ``node`` was parsed from, for errors that point
    into it (an RLIKE pattern PostgreSQL cannot read)."""
    if node is None:
        return Compiled(dialect.true, {})
    b = _Builder(dialect, alias, prefix, _narrowed_by_index(node), text)
    sql = b.node(node)
    return Compiled(sql, b.params, text, b.regex_at)


def compile_search(
    filter_string: str | None, *, dialect: Dialect, alias: str = "t", prefix: str = "p"
) -> Compiled:
    """``compile_filter(parse_filter(filter_string))``, errors pointing into the string."""
    node = parse_filter(filter_string)
    return compile_filter(node, dialect=dialect, alias=alias, prefix=prefix, text=filter_string)


def _source_offset(text: str, start: int, offset: int) -> int:
    """Where character ``offset`` of the string token at ``text[start]`` is in ``text``
    (a doubled quote is one character of the value)."""
    quote = text[start]
    at = start + 1
    for _ in range(offset):
        at += 2 if text.startswith(quote * 2, at) else 1
    return at


class pattern_errors:  # a context manager, named like contextlib's
    """Turns the engine's error for an RLIKE pattern it cannot compile (PostgreSQL's
    ``invalid_regular_expression``) into a ``FilterSyntaxError`` at the pattern.

    The patterns were checked when compiled; this catches what a check cannot
    foresee, e.g. a class escape PostgreSQL refuses (``[\\W]``)."""

    __slots__ = ("compiled",)

    def __init__(self, *compiled: Compiled) -> None:
        self.compiled = compiled

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if exc is None or getattr(exc, "sqlstate", None) != _INVALID_REGULAR_EXPRESSION:
            return
        for c in self.compiled:
            if c.regex_at is not None and c.text is not None:
                message = str(exc).splitlines()[0] if str(exc) else "invalid regular expression"
                raise FilterSyntaxError(
                    f"PostgreSQL cannot read this RLIKE pattern: {message}", c.text, c.regex_at
                ) from exc


def order_expression(field: Field, alias: str, bind: Any, dialect: Dialect) -> str:
    if field.kind == "column":
        expr = f"{alias}.{field.key}"
        return dialect.order_text.format(expr=expr) if field.key in _FREE_TEXT else expr
    table = _TABLES[field.kind]
    return (
        f"(SELECT _o.value FROM {table} _o WHERE _o.trace_id = {alias}.trace_id "  # noqa: S608
        f"AND _o.key = {bind(field.key)})"
    )


def compile_order_by(
    keys: list[OrderKey], *, dialect: Dialect, alias: str = "t", prefix: str = "o"
) -> tuple[list[tuple[str, bool]], dict[str, Any]]:
    """(expression, ascending) pairs with tie-breakers appended, and their parameters."""
    params: dict[str, Any] = {}

    def bind(value: Any) -> str:
        name = f"{prefix}{len(params)}"
        params[name] = value
        return f":{name}"

    out = [(order_expression(k.field, alias, bind, dialect), k.ascending) for k in keys]
    directions = dict(out)
    time_expr, id_expr = f"{alias}.request_time", f"{alias}.trace_id"
    if time_expr not in directions:
        out.append((time_expr, False))
        directions[time_expr] = False
    if id_expr not in directions:
        # Trace ids grow with start time, so ties in the millisecond keep their order.
        out.append((id_expr, directions[time_expr]))
    return out, params


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str | None, value: Any) -> bool:
    if pattern is None or value is None:
        return False
    return _regex(pattern).search(str(value)) is not None


def register_functions(conn: sqlite3.Connection) -> None:
    """Give ``conn`` the ``REGEXP`` operator used by RLIKE (the SQLite store does, for
    every connection it opens)."""
    conn.create_function("regexp", 2, _regexp, deterministic=True)
