"""Where the SQL of search and analytics differs between SQLite and PostgreSQL.

Search and analytics write one SQL text for both stores; the few constructs the
engines spell differently come from the store's ``dialect``. Everything else is
written once in the subset both engines read the same way: ``count(*) FILTER
(WHERE ...)``, row-value keysets, ``LIMIT :n OFFSET :m``, integer day numbers
(``request_time / 86400000``), named ``:name`` parameters (the PostgreSQL store's
connection translates them).

A hook is a template filled with SQL the caller built from whitelisted names and
bind marks, never with a value: values are bound. The compiler fills the
templates once per call, so SQLite pays nothing per row for the indirection.

What the engines still do differently, by design (tests assert each):

- ``LIKE`` is case-sensitive on both (SQLite runs it as ``GLOB``; PostgreSQL as
  ``LIKE ... ESCAPE ''``, so a backslash is an ordinary character on both).
- ``ILIKE`` folds ASCII case on both; non-ASCII case folding (``'É' ILIKE 'é'``)
  happens only on a PostgreSQL database whose ``LC_CTYPE`` knows it (not ``C``).
- ``RLIKE`` is Python's ``re`` on SQLite. On PostgreSQL the pattern is checked and
  rewritten to the engine's ARE flavour before it is bound (``pg_regex``): ``\\b``
  becomes ``\\y``, ``\\B`` ``\\Y``, ``\\xhh`` ``\\u00hh``, ``{,n}`` ``{0,n}``, and
  Python's newline rules are kept (``.`` does not match a newline unless ``(?s)``;
  ``^``/``$`` match at lines only with ``(?m)``). Constructs PostgreSQL cannot read
  (named groups ``(?P<name>...)``, scoped flags ``(?i:...)``, atomic groups and
  possessive quantifiers) are rejected with ``FilterSyntaxError``. ``\\d``, ``\\w``
  and ``(?i)`` follow the database's ``LC_CTYPE`` for non-ASCII characters;
  Python's ``$`` also matches before a final newline, and its ``[^...]`` matches a
  newline without ``(?s)`` where PostgreSQL's does not.
- ``span.attributes.<key>`` compares against the attribute's JSON value as text.
  Strings, integers, ``null`` (no match) and floats written by Python's ``json``
  read the same on both; booleans read ``'1'``/``'0'`` on SQLite and
  ``'true'``/``'false'`` on PostgreSQL, an exponent (``1e+20``) reads ``'1.0e+20'``
  on SQLite and as written on PostgreSQL, and a nested object is minified by
  SQLite and kept as stored by PostgreSQL. A string holding NUL reads up to the NUL
  on SQLite and with U+FFFD in its place on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["POSTGRES", "SQLITE", "Dialect", "RegexError", "like_to_glob", "pg_regex"]


class RegexError(ValueError):
    """A regular expression PostgreSQL would read differently; ``offset`` is where in
    the pattern."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


# eq=False: compared and hashed by identity (there are two), which keeps the
# search's compile cache, keyed on the dialect, as cheap as before.
@dataclasses.dataclass(frozen=True, eq=False)
class Dialect:
    """How one engine spells the constructs the engines disagree on.

    Templates take ``{expr}`` (a column or expression of ours) and ``{value}`` (a
    bind mark such as ``:p0``); ``*_value`` functions turn the user's value into
    what is bound.
    """

    name: str
    true: str  # the WHERE clause of "no filter"
    false: str  # coalesce()'s default for a NULL condition
    like: str  # case-sensitive LIKE
    like_value: Callable[[str], str]
    ilike: str
    regex: str
    regex_value: Callable[[str], str]  # raises RegexError
    json_text: str  # {expr}: a JSON object's text; {value}: the bound key
    json_key: Callable[[str], str]
    json_string: str  # {expr}: JSON text; the string it holds, NULL when not a string
    # {expr} over the group's rows where {where}, as JSON text (NULL over no rows on
    # PostgreSQL, '[]' on SQLite)
    json_array_agg: str
    json_object_agg: str  # {key}, {value}: a group's rows as one JSON object's text
    # A list of values: one array parameter (PostgreSQL: one SQL text for any
    # length, and an empty list matches nothing) or a parameter each (SQLite).
    array_params: bool
    order_text: str  # {expr}: a text column sorted by code point, as SQLite's BINARY
    # Whether ORDER BY must say where NULLs go: SQLite sorts them low (first in ASC,
    # last in DESC), PostgreSQL high.
    nulls_high: bool

    def in_list(
        self, expr: str, values: Sequence[Any], bind: Callable[[Any], str], *, negate: bool = False
    ) -> str:
        """``expr [NOT] IN values`` with every value bound through ``bind``."""
        if self.array_params:
            op = "<> ALL" if negate else "= ANY"
            return f"{expr} {op}({bind(list(values))})"
        marks = ", ".join(bind(v) for v in values)
        return f"{expr} {'NOT IN' if negate else 'IN'} ({marks})"

    def order_term(self, expr: str, ascending: bool, *, nullable: bool = True) -> str:
        """``expr ASC``/``DESC`` with NULLs low, as SQLite sorts them. (A NOT NULL
        column goes without ``NULLS ...``: PostgreSQL would not read its index for it.)"""
        if not ascending:
            return f"{expr} DESC NULLS LAST" if self.nulls_high and nullable else f"{expr} DESC"
        return f"{expr} ASC NULLS FIRST" if self.nulls_high and nullable else f"{expr} ASC"

    # A trace's metadata and tags as JSON text, for a query on ``traces t``: the
    # copies in its row, or, where one is NULL (a trace written by schema 1, or tags
    # changed since), its key/value rows gathered. NULL for no rows on PostgreSQL.
    @functools.cached_property
    def metadata_json(self) -> str:
        gathered = self.json_object_agg.format(key="m.key", value="m.value")
        return (
            f"coalesce(t.metadata, (SELECT {gathered} FROM trace_metadata m "  # noqa: S608
            "WHERE m.trace_id = t.trace_id))"
        )

    @functools.cached_property
    def tags_json(self) -> str:
        gathered = self.json_object_agg.format(key="g.key", value="g.value")
        return (
            f"coalesce(t.tags, (SELECT {gathered} FROM trace_tags g "  # noqa: S608
            "WHERE g.trace_id = t.trace_id))"
        )


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


def _same(value: str) -> str:
    return value


def _sqlite_json_path(key: str) -> str:
    # The parser refuses '"' and '\' in span attribute keys, so quoting is enough.
    return '$."' + key + '"'


_PY_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_HEX = "0123456789abcdefABCDEF"


def pg_regex(pattern: str) -> str:
    """A Python ``re`` pattern (already compiled by the parser) as a PostgreSQL ARE
    with the same matches, or ``RegexError`` for a construct PostgreSQL reads
    differently and that has no rewrite. See the module docstring."""
    flags = ""
    i = 0
    while m := _PY_FLAGS.match(pattern, i):  # Python's global flags lead the pattern
        flags += m.group(1)
        i = m.end()
    # Python's newline rules as ARE options: p ('.' and '^'/'$' stop at newlines...
    # at no line but the string's ends), n with (?m), w with (?ms), none with (?s).
    multiline, dotall = "m" in flags, "s" in flags
    mode = {(False, False): "p", (True, False): "n", (True, True): "w", (False, True): ""}
    options = ("i" if "i" in flags else "") + ("x" if "x" in flags else "")
    options += mode[(multiline, dotall)]
    out = [f"(?{options})" if options else ""]
    in_class = False
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt == "b":
                out.append("\\y")
            elif not in_class and nxt == "B":
                out.append("\\Y")
            elif nxt == "x" and all(h in _HEX for h in pattern[i + 2 : i + 4]) and i + 3 < n:
                out.append("\\u00" + pattern[i + 2 : i + 4])  # PG's \x takes any number
                i += 4
                continue
            elif nxt == "N":
                raise RegexError("PostgreSQL regular expressions have no \\N{...} escapes", i)
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' (or '^]') right after '[' is a literal in both flavours.
            for lead in ("^]", "]", "^"):
                if pattern.startswith(lead, i):
                    out.append(lead)
                    i += len(lead)
                    break
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 : i + 3]
            if rest == "P":
                raise RegexError(
                    "PostgreSQL regular expressions have no named groups (?P<name>...): "
                    "use a plain group (...)",
                    i,
                )
            if rest == ">":
                raise RegexError("PostgreSQL regular expressions have no atomic groups (?>...)", i)
            if rest == "(":
                raise RegexError("PostgreSQL regular expressions have no conditionals (?(...)", i)
            if rest and rest in "aiLmsux-":  # global flags at the start were taken above
                raise RegexError(
                    "PostgreSQL regular expressions have no scoped flags (?i:...): "
                    "put the flags at the start of the pattern, as (?i)",
                    i,
                )
        if pattern.startswith("+", i + 1) and _is_quantifier(pattern, i):
            raise RegexError(
                "PostgreSQL regular expressions have no possessive quantifiers (*+, ++, ?+)", i + 1
            )
        if c == "{" and pattern.startswith("{,", i):
            m = re.match(r"\{,(\d+)\}", pattern[i:])
            if m:
                out.append("{0," + m.group(1) + "}")
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


_BRACE_QUANTIFIER = re.compile(r"\{\d*,?\d*\}$")


def _is_quantifier(pattern: str, i: int) -> bool:
    """Whether ``pattern[i]`` (outside a class, not escaped) ends a quantifier; then a
    ``+`` after it makes it possessive (Python 3.11+)."""
    c = pattern[i]
    if c in "*+?":
        return True
    return c == "}" and _BRACE_QUANTIFIER.search(pattern, 0, i + 1) is not None


SQLITE = Dialect(
    name="sqlite",
    true="1",
    false="0",
    # SQLite's LIKE folds ASCII case; GLOB is its case-sensitive match.
    like="{expr} GLOB {value}",
    like_value=like_to_glob,
    ilike="{expr} LIKE {value}",
    regex="{expr} REGEXP {value}",  # Python's re, registered on every connection
    regex_value=_same,
    json_text="CAST(json_extract({expr}, {value}) AS TEXT)",
    json_key=_sqlite_json_path,
    json_string="CASE WHEN substr({expr}, 1, 1) = '\"' THEN json_extract({expr}, '$') END",
    json_array_agg="json_group_array({expr}) FILTER (WHERE {where})",
    json_object_agg="json_group_object({key}, {value})",
    array_params=False,
    order_text="{expr}",
    nulls_high=False,
)
POSTGRES = Dialect(
    name="postgresql",
    true="TRUE",
    false="false",
    # ESCAPE '': a backslash is a character, as in SQLite's GLOB (PG's default
    # escape is '\').
    like="{expr} LIKE {value} ESCAPE ''",
    like_value=_same,
    ilike="{expr} ILIKE {value}",
    regex="{expr} ~ {value}",
    regex_value=pg_regex,
    # json, not jsonb: parses less, and keeps a number's text as written. PostgreSQL
    # refuses to read any field of an object holding an escaped NUL ("\u0000", which
    # text cannot hold): it becomes U+FFFD first, so such a span cannot fail a search.
    json_text="(replace({expr}, '\\u0000', '\\ufffd')::json ->> {value})",
    json_key=_same,
    json_string=(
        "CASE WHEN left({expr}, 1) = '\"' "
        "THEN replace({expr}, '\\u0000', '\\ufffd')::json #>> '{{}}' END"
    ),
    json_array_agg="json_agg({expr}) FILTER (WHERE {where})::text",
    # keys in order, as SQLite's scan of the (trace_id, key) primary key gives them
    json_object_agg="json_object_agg({key}, {value} ORDER BY {key})::text",
    array_params=True,
    order_text='{expr} COLLATE "C"',
    nulls_high=True,
)
