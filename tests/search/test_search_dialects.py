"""One filter, two dialects: the SQL and parameters each engine gets.

SQLite's table is test_search_grammar's ACCEPT (pinned byte for byte); this is
PostgreSQL's, for the constructs the engines spell differently, beside SQLite's
spelling of the same filter. Every value stays bound on both.
"""

from __future__ import annotations

import re

import pytest

from sessiontrace import FilterSyntaxError
from sessiontrace._search import compile_filter, compile_search, parse_filter, parse_order_by
from sessiontrace._search._compile import compile_order_by, pattern_errors
from sessiontrace._store._dialect import POSTGRES, SQLITE, RegexError, pg_regex

TAG_IN = "t.trace_id IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0 AND "
SPAN = "EXISTS (SELECT 1 FROM spans _s WHERE _s.trace_id = t.trace_id AND "
FEEDBACK_IN = (
    "t.trace_id IN (SELECT _a.trace_id FROM assessments _a "
    "WHERE _a.kind = :p0 AND _a.name = :p1 AND _a.valid = 1"
)
PG_ATTR = "(replace(_s.attributes, '\\u0000', '\\ufffd')::json ->> :p0)"

# filter -> (SQLite SQL, SQLite params, PostgreSQL SQL, PostgreSQL params)
BOTH: list[tuple[str, str, dict[str, object], str, dict[str, object]]] = [
    ("", "1", {}, "TRUE", {}),
    ("user = 'u'", "t.user_id = :p0", {"p0": "u"}, "t.user_id = :p0", {"p0": "u"}),
    (
        "name LIKE 'chat%'",
        "t.name GLOB :p0",
        {"p0": "chat*"},
        "t.name LIKE :p0 ESCAPE ''",
        {"p0": "chat%"},
    ),
    (
        "name LIKE 'a_b'",
        "t.name GLOB :p0",
        {"p0": "a?b"},
        "t.name LIKE :p0 ESCAPE ''",
        {"p0": "a_b"},
    ),
    # A backslash is an ordinary character on both (PostgreSQL's default escape is '\').
    (
        r"name LIKE 'a\b%'",
        "t.name GLOB :p0",
        {"p0": "a\\b*"},
        "t.name LIKE :p0 ESCAPE ''",
        {"p0": "a\\b%"},
    ),
    # GLOB's metacharacters are made literal on SQLite; they mean nothing to LIKE.
    (
        "name LIKE 'x*y?[z]'",
        "t.name GLOB :p0",
        {"p0": "x[*]y[?][[]z]"},
        "t.name LIKE :p0 ESCAPE ''",
        {"p0": "x*y?[z]"},
    ),
    (
        "name ILIKE 'CHAT%'",
        "t.name LIKE :p0",
        {"p0": "CHAT%"},
        "t.name ILIKE :p0",
        {"p0": "CHAT%"},
    ),
    # RLIKE: Python's re on SQLite; on PostgreSQL with Python's newline rules ((?p)).
    (r"name RLIKE '\d+'", "t.name REGEXP :p0", {"p0": r"\d+"}, "t.name ~ :p0", {"p0": r"(?p)\d+"}),
    (
        "name RLIKE '(?i)^chat'",
        "t.name REGEXP :p0",
        {"p0": "(?i)^chat"},
        "t.name ~ :p0",
        {"p0": "(?ip)^chat"},
    ),
    (
        r"name RLIKE '\bchat\B'",
        "t.name REGEXP :p0",
        {"p0": r"\bchat\B"},
        "t.name ~ :p0",
        {"p0": r"(?p)\ychat\Y"},
    ),
    (
        "NOT user = 'a'",
        "NOT coalesce(t.user_id = :p0, 0)",
        {"p0": "a"},
        "NOT coalesce(t.user_id = :p0, false)",
        {"p0": "a"},
    ),
    (
        "user = 'a' OR NOT status = 'OK'",
        "(t.user_id = :p0 OR NOT coalesce(t.state = :p1, 0))",
        {"p0": "a", "p1": "OK"},
        "(t.user_id = :p0 OR NOT coalesce(t.state = :p1, false))",
        {"p0": "a", "p1": "OK"},
    ),
    # A list is one array parameter on PostgreSQL: one SQL text for any length.
    (
        "status IN ('OK', 'ERROR')",
        "t.state IN (:p0, :p1)",
        {"p0": "OK", "p1": "ERROR"},
        "t.state = ANY(:p0)",
        {"p0": ["OK", "ERROR"]},
    ),
    (
        "status NOT IN ('OK')",
        "t.state NOT IN (:p0)",
        {"p0": "OK"},
        "t.state <> ALL(:p0)",
        {"p0": ["OK"]},
    ),
    (
        "tag.k IN ('a', 'b')",
        f"{TAG_IN}_x.value IN (:p1, :p2))",
        {"p0": "k", "p1": "a", "p2": "b"},
        f"{TAG_IN}_x.value = ANY(:p1))",
        {"p0": "k", "p1": ["a", "b"]},
    ),
    (
        "tag.k IS NULL",
        "t.trace_id NOT IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0)",
        {"p0": "k"},
        "t.trace_id NOT IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0)",
        {"p0": "k"},
    ),
    (
        "span.attributes.model = 'm-1'",
        f"{SPAN}CAST(json_extract(_s.attributes, :p0) AS TEXT) = :p1)",
        {"p0": '$."model"', "p1": "m-1"},
        f"{SPAN}{PG_ATTR} = :p1)",
        {"p0": "model", "p1": "m-1"},
    ),
    (
        "span.attributes.`llm.n` != '7'",
        f"{SPAN}CAST(json_extract(_s.attributes, :p0) AS TEXT) != :p1)",
        {"p0": '$."llm.n"', "p1": "7"},
        f"{SPAN}{PG_ATTR} != :p1)",
        {"p0": "llm.n", "p1": "7"},
    ),
    (
        "span.attributes.model LIKE 'gpt-%'",
        f"{SPAN}CAST(json_extract(_s.attributes, :p0) AS TEXT) GLOB :p1)",
        {"p0": '$."model"', "p1": "gpt-*"},
        f"{SPAN}{PG_ATTR} LIKE :p1 ESCAPE '')",
        {"p0": "model", "p1": "gpt-%"},
    ),
    (
        "feedback.thumbs_up = false",
        f"{FEEDBACK_IN} AND _a.value_bool = :p2)",
        {"p0": "feedback", "p1": "thumbs_up", "p2": 0},
        f"{FEEDBACK_IN} AND _a.value_bool = :p2)",
        {"p0": "feedback", "p1": "thumbs_up", "p2": 0},
    ),
    (
        "expectation.answer LIKE 'Par%'",
        FEEDBACK_IN + " AND coalesce(CASE WHEN substr(_a.value_json, 1, 1) = '\"' "
        "THEN json_extract(_a.value_json, '$') END, _a.value_json) GLOB :p2)",
        {"p0": "expectation", "p1": "answer", "p2": "Par*"},
        f"{FEEDBACK_IN} AND coalesce(CASE WHEN left(_a.value_json, 1) = '\"' "
        "THEN replace(_a.value_json, '\\u0000', '\\ufffd')::json #>> '{}' END, _a.value_json) "
        "LIKE :p2 ESCAPE '')",
        {"p0": "expectation", "p1": "answer", "p2": "Par%"},
    ),
    (
        "feedback.score > 0.5 AND user = 'u'",
        "(EXISTS (SELECT 1 FROM assessments _a WHERE _a.trace_id = t.trace_id AND _a.kind = :p0 "
        "AND _a.name = :p1 AND _a.valid = 1 AND _a.value_bool IS NULL AND _a.value_num > :p2) "
        "AND t.user_id = :p3)",
        {"p0": "feedback", "p1": "score", "p2": 0.5, "p3": "u"},
        "(EXISTS (SELECT 1 FROM assessments _a WHERE _a.trace_id = t.trace_id AND _a.kind = :p0 "
        "AND _a.name = :p1 AND _a.valid = 1 AND _a.value_bool IS NULL AND _a.value_num > :p2) "
        "AND t.user_id = :p3)",
        {"p0": "feedback", "p1": "score", "p2": 0.5, "p3": "u"},
    ),
    (
        "total_tokens < 5",
        "(t.total_tokens < :p0 OR t.total_tokens IS NULL)",
        {"p0": 5},
        "(t.total_tokens < :p0 OR t.total_tokens IS NULL)",
        {"p0": 5},
    ),
]


@pytest.mark.parametrize(
    ("text", "sqlite_sql", "sqlite_params", "pg_sql", "pg_params"),
    BOTH,
    ids=[b[0] or "<empty>" for b in BOTH],
)
def test_filter_compiles_for_each_dialect(
    text: str,
    sqlite_sql: str,
    sqlite_params: dict[str, object],
    pg_sql: str,
    pg_params: dict[str, object],
) -> None:
    node = parse_filter(text)
    lite = compile_filter(node, dialect=SQLITE)
    pg = compile_filter(node, dialect=POSTGRES)
    assert (lite.sql, lite.params) == (sqlite_sql, sqlite_params)
    assert (pg.sql, pg.params) == (pg_sql, pg_params)


def test_text_columns_sort_by_code_point_on_postgresql() -> None:
    # SQLite's BINARY order, whatever the PostgreSQL database's collation.
    keys = [parse_order_by("trace.name"), parse_order_by("status DESC")]
    lite, _ = compile_order_by(keys, dialect=SQLITE)
    pg, _ = compile_order_by(keys, dialect=POSTGRES)
    assert lite[:2] == [("t.name", True), ("t.state", False)]
    assert pg[:2] == [('t.name COLLATE "C"', True), ('t.state COLLATE "C"', False)]
    # Columns declared COLLATE "C" (and numbers) are left as they are: their index serves.
    ids, _ = compile_order_by([parse_order_by("user")], dialect=POSTGRES)
    assert ids == [("t.user_id", True), ("t.request_time", False), ("t.trace_id", False)]


# Python pattern -> the PostgreSQL ARE bound in its place
REGEX: list[tuple[str, str]] = [
    ("abc", "(?p)abc"),
    (r"\d{2}-\w+", r"(?p)\d{2}-\w+"),
    (r"\bword\b", r"(?p)\yword\y"),
    (r"in\Bside", r"(?p)in\Yside"),
    (r"[\b]", r"(?p)[\b]"),  # backspace inside a class in both flavours
    (r"\\b", r"(?p)\\b"),  # an escaped backslash, then a letter
    ("(?i)abc", "(?ip)abc"),
    ("(?s)a.b", "a.b"),
    ("(?m)^b$", "(?n)^b$"),
    ("(?ms)^b.", "(?w)^b."),
    ("(?x) a b  # spaced", "(?xp) a b  # spaced"),
    (r"\x41B", r"(?p)\u0041B"),  # PostgreSQL's \x would read all of 41B
    ("a{,3}", "(?p)a{0,3}"),
    ("(?:a|b)+?(?=c)(?<!d)", "(?p)(?:a|b)+?(?=c)(?<!d)"),
    ("[]a]", "(?p)[]a]"),
    ("[^]a]", "(?p)[^]a]"),
    ("x}+", "(?p)x}+"),  # a literal '}', then '+'
]


@pytest.mark.parametrize(("pattern", "are"), REGEX)
def test_python_regex_to_postgresql(pattern: str, are: str) -> None:
    re.compile(pattern)  # the parser checks this first
    assert pg_regex(pattern) == are


@pytest.mark.parametrize(
    ("pattern", "offset", "message"),
    [
        ("(?P<name>a)", 0, "no named groups"),
        ("a(?P=name)", 1, "no named groups"),
        ("x(?i:a)", 1, "no scoped flags"),
        ("(?>a)", 0, "no atomic groups"),
        ("a*+", 2, "no possessive quantifiers"),
        ("a{2}+", 4, "no possessive quantifiers"),
        (r"\N{DIGIT ONE}", 0, r"no \N{...}"),
    ],
)
def test_python_regex_postgresql_cannot_read(pattern: str, offset: int, message: str) -> None:
    with pytest.raises(RegexError) as info:
        pg_regex(pattern)
    assert message in str(info.value)
    assert info.value.offset == offset


def test_rejected_pattern_is_a_filter_syntax_error_at_the_pattern() -> None:
    text = "tag.k = 'it''s' AND name RLIKE 'it''s (?P<n>x)'"
    with pytest.raises(FilterSyntaxError) as info:
        compile_search(text, dialect=POSTGRES)
    assert "no named groups" in info.value.message
    assert info.value.text == text
    assert text[info.value.position :].startswith("(?P<n>")
    # SQLite runs Python's re, which reads it.
    assert compile_search(text, dialect=SQLITE).params["p2"] == "it's (?P<n>x)"
    # Compiled without its source, the error points into the pattern.
    with pytest.raises(FilterSyntaxError) as bare:
        compile_filter(parse_filter("name RLIKE '(?P<n>x)'"), dialect=POSTGRES)
    assert (bare.value.text, bare.value.position) == ("(?P<n>x)", 0)


class _InvalidRegularExpression(Exception):
    sqlstate = "2201B"  # what psycopg.errors.InvalidRegularExpression carries


def test_engine_regex_error_becomes_filter_syntax_error() -> None:
    text = "user = 'u' AND name RLIKE 'a[b]'"
    where = compile_search(text, dialect=POSTGRES)
    with pytest.raises(FilterSyntaxError) as info, pattern_errors(where):
        raise _InvalidRegularExpression("invalid regular expression: invalid character class")
    assert info.value.text == text
    assert info.value.position == text.index("'a[b]")
    assert "invalid character class" in info.value.message
    # Other errors, and filters without a pattern, pass through unchanged.
    with pytest.raises(ZeroDivisionError), pattern_errors(where):
        raise ZeroDivisionError
    plain = compile_search("user = 'u'", dialect=POSTGRES)
    with pytest.raises(_InvalidRegularExpression), pattern_errors(plain):
        raise _InvalidRegularExpression("invalid regular expression")


def test_tags_and_metadata_json_for_each_dialect() -> None:
    # SQLite's is the text the store has always read; PostgreSQL's orders the keys
    # as SQLite's primary-key scan does.
    assert SQLITE.tags_json == (
        "coalesce(t.tags, (SELECT json_group_object(g.key, g.value) FROM trace_tags g "
        "WHERE g.trace_id = t.trace_id))"
    )
    assert SQLITE.metadata_json == (
        "coalesce(t.metadata, (SELECT json_group_object(m.key, m.value) FROM trace_metadata m "
        "WHERE m.trace_id = t.trace_id))"
    )
    assert POSTGRES.tags_json == (
        "coalesce(t.tags, (SELECT json_object_agg(g.key, g.value ORDER BY g.key)::text "
        "FROM trace_tags g WHERE g.trace_id = t.trace_id))"
    )
