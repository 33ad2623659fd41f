"""Tokens of the filter language.

Strings are quoted with ``'`` or ``"`` (a doubled quote inside stands for one);
keys with characters other than letters, digits and ``_`` are quoted with
backticks (or double quotes, in the key position). Every token keeps the index
where it starts, so errors can point at it.
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum

from ._errors import FilterSyntaxError

__all__ = ["Kind", "Token", "tokenize"]

MAX_FILTER_LENGTH = 20_000


class Kind(Enum):
    WORD = "word"  # bare identifier or keyword (AND, OR, NOT, IN, LIKE, ...)
    BACKTICK = "backtick"  # `quoted key`
    STRING = "string"  # 'single quoted'
    DQSTRING = "dqstring"  # "double quoted": a value, or a key right after a dot
    NUMBER = "number"
    OP = "op"  # = != < <= > >= (and == <>, rejected later with a hint)
    DOT = "."
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end"


@dataclasses.dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # the value: unquoted string, keyword as written, number text
    pos: int
    end: int  # index just past the token

    @property
    def upper(self) -> str:
        return self.text.upper()


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DIGITS = frozenset("0123456789")  # str.isdigit() is also true for "²" and "٣"
_OPS = ("!=", "<=", ">=", "==", "<>", "=", "<", ">")


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            f"filter is too long ({len(text)} characters; at most {MAX_FILTER_LENGTH})",
            text[:200],
            0,
        )
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"`":
            value, end = _quoted(text, i)
            kind = {"'": Kind.STRING, '"': Kind.DQSTRING, "`": Kind.BACKTICK}[c]
            tokens.append(Token(kind, value, i, end))
            i = end
            continue
        if c in _DIGITS or (c in "-." and i + 1 < n and text[i + 1] in _DIGITS):
            # "-5" and ".5" are numbers; a "." before a digit after a word is a key dot.
            prev = tokens[-1] if tokens else None
            if not (c == "." and prev is not None and prev.end == i and prev.kind != Kind.OP):
                m = _NUMBER.match(text, i)
                assert m is not None
                tokens.append(Token(Kind.NUMBER, m.group(), i, m.end()))
                i = m.end()
                continue
        m = _WORD.match(text, i)
        if m:
            tokens.append(Token(Kind.WORD, m.group(), i, m.end()))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(Token(Kind.OP, op, i, i + len(op)))
                i += len(op)
                break
        else:
            single = {".": Kind.DOT, "(": Kind.LPAREN, ")": Kind.RPAREN, ",": Kind.COMMA}
            if c in single:
                tokens.append(Token(single[c], c, i, i + 1))
                i += 1
            elif c == ";":
                raise FilterSyntaxError(
                    "';' is not allowed: a filter is one expression; join comparisons with AND",
                    text,
                    i,
                )
            else:
                raise FilterSyntaxError(
                    f"unexpected character {c!r} (quote keys with special characters in "
                    "backticks, e.g. tag.`my-key`)",
                    text,
                    i,
                )
    tokens.append(Token(Kind.END, "", n, n))
    return tokens


def _quoted(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    while True:
        j = text.find(quote, i)
        if j < 0:
            what = "key" if quote == "`" else "string"
            raise FilterSyntaxError(f"unterminated {what}: missing closing {quote}", text, start)
        parts.append(text[i:j])
        if text.startswith(quote, j + 1):  # doubled quote: one literal quote character
            parts.append(quote)
            i = j + 2
            continue
        return "".join(parts), j + 1
