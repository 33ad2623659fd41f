"""Filter strings to a small syntax tree, validated against the field whitelist.

Grammar (keywords in any case)::

    filter     := or_expr END
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := unary ("AND" unary)*
    unary      := "NOT" unary | "(" or_expr ")" | comparison
    comparison := field op value
                | field ["NOT"] "IN" "(" string ("," string)* ")"
                | field "IS" ["NOT"] "NULL"
    field      := part ("." part)*          part := word | `quoted` | "quoted"
    value      := 'string' | "string" | number

MLflow accepts the AND-only subset; OR, NOT, parentheses, IN on tags and
metadata, ``trace.state`` and the ``user``/``session`` shorthands are ours.

``feedback.<name>`` and ``expectation.<name>`` take MLflow's comparators and values:
a quoted string with ``=``, ``!=``, ``LIKE``, ``ILIKE``, ``RLIKE``; a number with
``>``, ``>=``, ``<``, ``<=``; ``IS [NOT] NULL``; and ``true``/``false`` (unquoted)
with ``=`` and ``!=`` only. Misuses MLflow rejects get MLflow's messages.
"""

from __future__ import annotations

import dataclasses
import re

from ._errors import FilterSyntaxError
from ._fields import (
    ASSESSMENT_OP_ORDER,
    ATTRIBUTE_TO_METADATA,
    ATTRIBUTES,
    ENTITIES,
    METADATA_COLUMNS,
    NUMERIC_ASSESSMENT_OPS,
    SPAN_COLUMNS,
    SPAN_NUMERIC_COLUMNS,
    Field,
)
from ._lexer import Kind, Token, tokenize

__all__ = [
    "BoolOp",
    "Compare",
    "Node",
    "Not",
    "OrderKey",
    "parse_filter",
    "parse_order_by",
]

MAX_DEPTH = 64
MAX_COMPARISONS = 200
MAX_IN_VALUES = 1000
_INT64 = 2**63 - 1

Value = str | bool | int | float | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class Compare:
    field: Field
    op: str  # "=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "RLIKE", "IN", ...
    value: Value
    pos: int
    value_pos: int = -1  # where the value starts (its opening quote), for errors


@dataclasses.dataclass(frozen=True)
class BoolOp:
    op: str  # "AND" or "OR"
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | BoolOp | Not

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "RLIKE"})
_OPERATORS_HINT = "=, !=, <, <=, >, >=, LIKE, ILIKE, RLIKE, IN, NOT IN, IS NULL, IS NOT NULL"
_FIELDS_HINT = (
    "use trace.<attribute> (timestamp_ms, execution_time_ms, end_time_ms, status, state, "
    "name, request_id, client_request_id, total_tokens, input_tokens, output_tokens, cost, "
    "llm_calls, unpriced_calls), tag.<key>, metadata.<key>, span.name, span.type, "
    "span.status, span.model, span.provider, span.total_tokens, span.cost, "
    "span.attributes.<key>, feedback.<name>, expectation.<name>, user or session"
)
_ASSESSMENT_OPS_TEXT = "{" + ", ".join(repr(o) for o in ASSESSMENT_OP_ORDER) + "}"


def parse_filter(text: str | None) -> Node | None:
    """Parse a filter string; ``None`` for an empty one. Raises ``FilterSyntaxError``."""
    if text is None or not text.strip():
        return None
    if not isinstance(text, str):
        raise TypeError(f"filter_string must be a str, not {type(text).__name__}")
    return _Parser(text).parse()


@dataclasses.dataclass(frozen=True)
class OrderKey:
    field: Field
    ascending: bool


def parse_order_by(text: str) -> OrderKey:
    """Parse one ``order_by`` entry: ``"<field> [ASC|DESC]"``."""
    if not isinstance(text, str):
        raise TypeError(f"order_by entries must be str, not {type(text).__name__}")
    p = _Parser(text)
    if p.peek.kind == Kind.END:
        raise FilterSyntaxError("empty order_by entry; write e.g. 'timestamp_ms DESC'", text, 0)
    field = p.field()
    if field.kind in ("span", "span_attribute"):
        raise FilterSyntaxError(f"cannot order by {field.display}: a trace has many spans", text, 0)
    if field.kind in ("feedback", "expectation"):
        raise FilterSyntaxError(
            f"cannot order by {field.display}: a trace has many assessments", text, 0
        )
    ascending = True
    tok = p.peek
    if tok.kind == Kind.WORD and tok.upper in ("ASC", "DESC"):
        ascending = tok.upper == "ASC"
        p.advance()
    tok = p.peek
    if tok.kind != Kind.END:
        raise FilterSyntaxError(
            f"expected ASC, DESC or the end of the order_by entry, found {_describe(tok)}",
            text,
            tok.pos,
        )
    return OrderKey(field, ascending)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.comparisons = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != Kind.END:
            self.i += 1
        return tok

    def error(self, message: str, pos: int) -> FilterSyntaxError:
        return FilterSyntaxError(message, self.text, pos)

    def at_word(self, *words: str) -> bool:
        tok = self.peek
        return tok.kind == Kind.WORD and tok.upper in words

    # -- boolean structure -----------------------------------------------------------

    def parse(self) -> Node:
        node = self.or_expr()
        tok = self.peek
        if tok.kind == Kind.RPAREN:
            raise self.error("unbalanced ')': no '(' to close", tok.pos)
        if tok.kind != Kind.END:
            raise self.error(
                f"expected AND, OR or the end of the filter, found {_describe(tok)}", tok.pos
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_word("OR"):
            self.advance()
            items.append(self.and_expr())
        return _combine("OR", items)

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.at_word("AND"):
            self.advance()
            items.append(self.unary())
        return _combine("AND", items)

    def unary(self) -> Node:
        tok = self.peek
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.error(f"filter is nested too deeply (more than {MAX_DEPTH})", tok.pos)
            if tok.kind == Kind.WORD and tok.upper == "NOT":
                self.advance()
                return Not(self.unary())
            if tok.kind == Kind.LPAREN:
                self.advance()
                node = self.or_expr()
                close = self.peek
                if close.kind != Kind.RPAREN:
                    raise self.error(
                        f"expected ')' to close the '(' at {tok.pos}, found {_describe(close)}",
                        close.pos,
                    )
                self.advance()
                return node
            return self.comparison()
        finally:
            self.depth -= 1

    # -- comparisons -------------------------------------------------------------------

    def comparison(self) -> Compare:
        start = self.peek
        if start.kind == Kind.END:
            prev = self.tokens[self.i - 1] if self.i else None
            after = f" after {prev.text.upper()}" if prev is not None else ""
            raise self.error(
                f"expected a comparison{after}, found the end of the filter", start.pos
            )
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise self.error(f"too many comparisons (at most {MAX_COMPARISONS})", start.pos)
        field = self.field()
        op_tok = self.peek
        op = self.operator(field)
        if field.kind in ("feedback", "expectation"):
            return self.assessment_comparison(field, op, op_tok, start)
        if op not in field.ops:
            kind = "numeric" if field.numeric else "string"
            allowed = ", ".join(o for o in _OPERATOR_ORDER if o in field.ops)
            raise self.error(
                f"{op} does not apply to {field.display} (a {kind} field); use one of {allowed}",
                op_tok.pos,
            )
        if op in ("IS NULL", "IS NOT NULL"):
            return Compare(field, op, None, start.pos)
        at = self.peek.pos
        if op in ("IN", "NOT IN"):
            return Compare(field, op, self.string_list(field), start.pos, at)
        return Compare(field, op, self.scalar(field, op), start.pos, at)

    def assessment_comparison(self, field: Field, op: str, op_tok: Token, start: Token) -> Compare:
        """A ``feedback.<name>``/``expectation.<name>`` comparison, checked as MLflow's
        ``SearchTraceUtils`` checks it (its messages)."""
        if op not in field.ops:
            raise self.error(
                f"assessment.{field.key} comparator '{op}' not one of '{_ASSESSMENT_OPS_TEXT}'",
                op_tok.pos,
            )
        if op in ("IS NULL", "IS NOT NULL"):
            return Compare(field, op, None, start.pos)
        tok = self.peek
        numeric_op = op in NUMERIC_ASSESSMENT_OPS
        got = "the end of the filter" if tok.kind == Kind.END else self.text[tok.pos : tok.end]
        if tok.kind == Kind.NUMBER and numeric_op:
            self.advance()
            return Compare(field, op, self.number(tok), start.pos, tok.pos)
        if tok.kind in (Kind.STRING, Kind.DQSTRING) and not numeric_op:
            return Compare(field, op, self.scalar(field, op), start.pos, tok.pos)
        if tok.kind == Kind.WORD and tok.upper in ("TRUE", "FALSE") and op in ("=", "!="):
            self.advance()  # ours: a boolean, compared as one
            return Compare(field, op, tok.upper == "TRUE", start.pos, tok.pos)
        if numeric_op:
            message = (
                f"Expected a numeric value for {field.kind} when using comparator '{op}'. "
                f"Got value {got}"
            )
        else:
            message = (
                f"Expected a quoted string value for {field.kind} (e.g. 'my-value'). "
                f"Got value {got}"
            )
        raise self.error(message, tok.pos)

    def field(self) -> Field:
        first = self.peek
        parts: list[Token] = []
        if first.kind not in (Kind.WORD, Kind.BACKTICK, Kind.DQSTRING):
            raise self.error(f"expected a field name, found {_describe(first)}", first.pos)
        if first.kind == Kind.WORD and first.upper in _KEYWORDS:
            raise self.error(f"expected a field name, found the keyword {first.text}", first.pos)
        parts.append(self.advance())
        while self.peek.kind == Kind.DOT:
            dot = self.advance()
            part = self.peek
            if part.kind not in (Kind.WORD, Kind.BACKTICK, Kind.DQSTRING):
                hint = " (quote keys with special characters in backticks, e.g. tag.`my-key`)"
                raise self.error(
                    f"expected a key after '.', found {_describe(part)}{hint}", dot.end
                )
            parts.append(self.advance())
        display = self.text[first.pos : parts[-1].end]
        return self.resolve(parts, display)

    def resolve(self, parts: list[Token], display: str) -> Field:
        head = parts[0]
        if len(parts) == 1:
            return self.attribute(head, display)
        entity = ENTITIES.get(head.text) if head.kind != Kind.DQSTRING else None
        if entity is None:
            raise self.error(
                f"unknown field {display!r}: {head.text!r} is not one of "
                "trace, attributes, tag, tags, metadata, request_metadata, span, feedback, "
                "expectation; " + _FIELDS_HINT,
                head.pos,
            )
        rest = parts[1:]
        key = ".".join(p.text for p in rest)
        if entity in ("feedback", "expectation"):
            if not key.strip("."):
                raise self.error("Assessment field name cannot be empty", rest[0].pos)
            return Field("feedback" if entity == "feedback" else "expectation", key, display)
        if key == "" or any(p.text == "" for p in rest):
            raise self.error(f"empty key in {display!r}", rest[0].pos)
        if entity == "attribute":
            if len(rest) > 1:
                raise self.error(f"unknown attribute {key!r}; {_FIELDS_HINT}", rest[0].pos)
            return self.attribute(rest[0], display)
        if entity == "tag":
            return Field("tag", key, display)
        if entity == "metadata":
            column = METADATA_COLUMNS.get(key)
            return (
                Field("metadata", key, display) if column is None else Field.column(column, display)
            )
        # span
        name = rest[0].text
        if len(rest) == 1 and name in SPAN_COLUMNS:
            return Field("span", SPAN_COLUMNS[name], display)
        if len(rest) == 1 and name in SPAN_NUMERIC_COLUMNS:
            return Field("span", SPAN_NUMERIC_COLUMNS[name], display, numeric=True)
        if name == "attributes" and len(rest) > 1:
            attr = ".".join(p.text for p in rest[1:])
            if '"' in attr or "\\" in attr:
                raise self.error("span attribute keys cannot contain '\"' or '\\'", rest[1].pos)
            return Field("span_attribute", attr, display)
        raise self.error(
            f"unknown span field {display!r}; use span.name, span.type, span.status, "
            "span.model, span.provider, span.input_tokens, span.output_tokens, "
            "span.total_tokens, span.cost or span.attributes.<key>",
            rest[0].pos,
        )

    def attribute(self, tok: Token, display: str) -> Field:
        attr = ATTRIBUTES.get(tok.text)
        if attr is not None:
            return Field.column(attr, display)
        if tok.text in ATTRIBUTE_TO_METADATA:
            return Field("metadata", ATTRIBUTE_TO_METADATA[tok.text], display)
        raise self.error(f"unknown field {display!r}; {_FIELDS_HINT}", tok.pos)

    def operator(self, field: Field) -> str:
        tok = self.peek
        if tok.kind == Kind.OP:
            self.advance()
            if tok.text == "==":
                raise self.error("use '=' to compare, not '=='", tok.pos)
            if tok.text == "<>":
                raise self.error("use '!=' for 'not equal', not '<>'", tok.pos)
            return tok.text
        if tok.kind == Kind.WORD:
            word = tok.upper
            if word in ("LIKE", "ILIKE", "RLIKE", "IN"):
                self.advance()
                return word
            if word == "NOT":
                self.advance()
                if self.at_word("IN"):
                    self.advance()
                    return "NOT IN"
                raise self.error(
                    f"expected IN after NOT, found {_describe(self.peek)}", self.peek.pos
                )
            if word == "IS":
                self.advance()
                negated = self.at_word("NOT")
                if negated:
                    self.advance()
                if not self.at_word("NULL"):
                    raise self.error(
                        f"expected NULL after IS{' NOT' if negated else ''}, "
                        f"found {_describe(self.peek)}",
                        self.peek.pos,
                    )
                self.advance()
                return "IS NOT NULL" if negated else "IS NULL"
        raise self.error(
            f"expected a comparison operator after {field.display} ({_OPERATORS_HINT}), "
            f"found {_describe(tok)}",
            tok.pos,
        )

    def scalar(self, field: Field, op: str) -> str | int | float:
        tok = self.peek
        if field.numeric:
            if tok.kind != Kind.NUMBER:
                raise self.error(
                    f"{field.display} is compared with a number, e.g. {field.display} > 1000; "
                    f"found {_describe(tok)}",
                    tok.pos,
                )
            self.advance()
            return self.number(tok)
        if tok.kind in (Kind.STRING, Kind.DQSTRING):
            self.advance()
            if op == "RLIKE":
                try:
                    re.compile(tok.text)
                except (re.error, RecursionError, OverflowError) as exc:
                    raise self.error(f"invalid regular expression: {exc}", tok.pos) from None
            return tok.text
        if tok.kind == Kind.NUMBER:
            raise self.error(
                f"{field.display} holds strings: quote the value, e.g. '{tok.text}'", tok.pos
            )
        if tok.kind in (Kind.WORD, Kind.BACKTICK):
            raise self.error(
                f"unquoted value {tok.text!r}: quote strings with ' or \", e.g. '{tok.text}'",
                tok.pos,
            )
        raise self.error(f"expected a quoted string, found {_describe(tok)}", tok.pos)

    def number(self, tok: Token) -> int | float:
        text = tok.text
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
            if abs(value) > _INT64:
                raise self.error("number out of range", tok.pos)
            return value
        return float(text)

    def string_list(self, field: Field) -> tuple[str, ...]:
        open_ = self.peek
        if open_.kind != Kind.LPAREN:
            raise self.error(
                f"expected '(' and a list of quoted strings after IN, found {_describe(open_)}",
                open_.pos,
            )
        self.advance()
        values: list[str] = []
        while True:
            tok = self.peek
            if tok.kind in (Kind.STRING, Kind.DQSTRING):
                values.append(tok.text)
                self.advance()
            elif tok.kind == Kind.RPAREN and not values:
                raise self.error("IN needs at least one value", tok.pos)
            else:
                raise self.error(
                    f"expected a quoted string in the IN list of {field.display}, "
                    f"found {_describe(tok)}",
                    tok.pos,
                )
            if len(values) > MAX_IN_VALUES:
                raise self.error(f"too many values in IN (at most {MAX_IN_VALUES})", tok.pos)
            sep = self.peek
            if sep.kind == Kind.COMMA:
                self.advance()
                continue
            if sep.kind == Kind.RPAREN:
                self.advance()
                return tuple(values)
            raise self.error(f"expected ',' or ')' in the IN list, found {_describe(sep)}", sep.pos)


_OPERATOR_ORDER = (
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "LIKE",
    "ILIKE",
    "RLIKE",
    "IN",
    "NOT IN",
    "IS NULL",
    "IS NOT NULL",
)


def _combine(op: str, items: list[Node]) -> Node:
    if len(items) == 1:
        return items[0]
    flat: list[Node] = []
    for item in items:
        if isinstance(item, BoolOp) and item.op == op:
            flat.extend(item.items)
        else:
            flat.append(item)
    return BoolOp(op, tuple(flat))


def _describe(tok: Token) -> str:
    if tok.kind == Kind.END:
        return "the end of the filter"
    if tok.kind == Kind.STRING:
        return f"the string '{tok.text}'"
    if tok.kind == Kind.DQSTRING:
        return f'the string "{tok.text}"'
    if tok.kind == Kind.BACKTICK:
        return f"`{tok.text}`"
    return repr(tok.text)
