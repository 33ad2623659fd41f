"""The filter grammar: accepted filters and their SQL, rejected ones and where they break."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessiontrace import FilterSyntaxError
from sessiontrace._search import compile_filter, parse_filter, parse_order_by
from sessiontrace._search._compile import compile_order_by, like_to_glob
from sessiontrace._store._dialect import SQLITE

TAG_IN = "t.trace_id IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0 AND "
MD_IN = "t.trace_id IN (SELECT _x.trace_id FROM trace_metadata _x WHERE _x.key = :p0 AND "
SPAN = "EXISTS (SELECT 1 FROM spans _s WHERE _s.trace_id = t.trace_id AND "

# filter -> (SQL, parameters). MLflow's documented examples first, then ours.
ACCEPT: list[tuple[str, str, dict[str, object]]] = [
    (
        "metadata.`mlflow.trace.session` = 'session_abc'",
        "t.session_id = :p0",
        {"p0": "session_abc"},
    ),
    ("metadata.`mlflow.trace.user` = 'user-123'", "t.user_id = :p0", {"p0": "user-123"}),
    ("metadata.mlflow.trace.user = 'u'", "t.user_id = :p0", {"p0": "u"}),
    ('request_metadata."mlflow.trace.user" != "u"', "t.user_id != :p0", {"p0": "u"}),
    (
        "metadata.`mlflow.trace.user` = 'user-123' AND trace.timestamp_ms > 1765560000000",
        "(t.user_id = :p0 AND t.request_time > :p1)",
        {"p0": "user-123", "p1": 1765560000000},
    ),
    (
        "tags.fruit = 'apple' and tags.color != 'red'",
        f"({TAG_IN}_x.value = :p1) AND t.trace_id IN (SELECT _x.trace_id FROM trace_tags _x "
        "WHERE _x.key = :p2 AND _x.value != :p3))",
        {"p0": "fruit", "p1": "apple", "p2": "color", "p3": "red"},
    ),
    (
        "`timestamp` >= 1 AND execution_time < 10",
        "(t.request_time >= :p0 AND t.execution_time_ms < :p1)",
        {"p0": 1, "p1": 10},
    ),
    (
        'span.type IN ("LLM", "RETRIEVER")',
        f"{SPAN}_s.span_type IN (:p0, :p1))",
        {"p0": "LLM", "p1": "RETRIEVER"},
    ),
    ("trace.status = 'OK'", "t.state = :p0", {"p0": "OK"}),
    ('trace.status = "ERROR"', "t.state = :p0", {"p0": "ERROR"}),
    ("attributes.status != 'OK'", "t.state != :p0", {"p0": "OK"}),
    ("status IN ('OK', 'ERROR')", "t.state IN (:p0, :p1)", {"p0": "OK", "p1": "ERROR"}),
    ("trace.status NOT IN ('OK')", "t.state NOT IN (:p0)", {"p0": "OK"}),
    ("timestamp_ms > -5", "t.request_time > :p0", {"p0": -5}),
    ("trace.execution_time_ms <= 2.5", "t.execution_time_ms <= :p0", {"p0": 2.5}),
    ("execution_time_ms > 1e3", "t.execution_time_ms > :p0", {"p0": 1000.0}),
    ("end_time_ms = 5", "t.end_time = :p0", {"p0": 5}),
    ("end_time != 5", "t.end_time != :p0", {"p0": 5}),
    ("trace.name = 'chat'", "t.name = :p0", {"p0": "chat"}),
    ("name LIKE 'chat%'", "t.name GLOB :p0", {"p0": "chat*"}),
    ("name ILIKE 'CHAT%'", "t.name LIKE :p0", {"p0": "CHAT%"}),
    ("name RLIKE '^ch.t$'", "t.name REGEXP :p0", {"p0": "^ch.t$"}),
    ("trace.request_id = 'tr-1'", "t.trace_id = :p0", {"p0": "tr-1"}),
    ("request_id LIKE 'tr-%'", "t.trace_id GLOB :p0", {"p0": "tr-*"}),
    ("client_request_id = 'req-1'", "t.client_request_id = :p0", {"p0": "req-1"}),
    (
        "tag.x = 'it''s'",
        f"{TAG_IN.replace(':p0', ':p0')}_x.value = :p1)",
        {"p0": "x", "p1": "it's"},
    ),
    ("tags.`a.b` = 'x'", f"{TAG_IN}_x.value = :p1)", {"p0": "a.b", "p1": "x"}),
    ('tags."a.b" = "x"', f"{TAG_IN}_x.value = :p1)", {"p0": "a.b", "p1": "x"}),
    ("tags.a.b = 'x'", f"{TAG_IN}_x.value = :p1)", {"p0": "a.b", "p1": "x"}),
    ("`tags`.x = 'a'", f"{TAG_IN}_x.value = :p1)", {"p0": "x", "p1": "a"}),
    ("tag.session_id = '123'", f"{TAG_IN}_x.value = :p1)", {"p0": "session_id", "p1": "123"}),
    ("tag.x LIKE '%a_'", f"{TAG_IN}_x.value GLOB :p1)", {"p0": "x", "p1": "*a?"}),
    ("tag.x ILIKE '%A%'", f"{TAG_IN}_x.value LIKE :p1)", {"p0": "x", "p1": "%A%"}),
    (
        "tag.x IS NULL",
        "t.trace_id NOT IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0)",
        {"p0": "x"},
    ),
    (
        "tag.x is not null",
        "t.trace_id IN (SELECT _x.trace_id FROM trace_tags _x WHERE _x.key = :p0)",
        {"p0": "x"},
    ),
    (
        "metadata.app_version = '1.0.0'",
        f"{MD_IN}_x.value = :p1)",
        {"p0": "app_version", "p1": "1.0.0"},
    ),
    ("metadata.x RLIKE 'a+'", f"{MD_IN}_x.value REGEXP :p1)", {"p0": "x", "p1": "a+"}),
    ("run_id = 'r1'", f"{MD_IN}_x.value = :p1)", {"p0": "mlflow.sourceRun", "p1": "r1"}),
    ("metadata.`mlflow.trace.user` IS NULL", "t.user_id IS NULL", {}),
    ("span.name = 'retrieve'", f"{SPAN}_s.name = :p0)", {"p0": "retrieve"}),
    ("span.status != 'OK'", f"{SPAN}_s.status != :p0)", {"p0": "OK"}),
    ("span.type NOT IN ('LLM')", f"{SPAN}_s.span_type NOT IN (:p0))", {"p0": "LLM"}),
    (
        "span.attributes.model = 'gpt-4o'",
        f"{SPAN}CAST(json_extract(_s.attributes, :p0) AS TEXT) = :p1)",
        {"p0": '$."model"', "p1": "gpt-4o"},
    ),
    (
        "span.attributes.`llm.model` LIKE 'gpt%'",
        f"{SPAN}CAST(json_extract(_s.attributes, :p0) AS TEXT) GLOB :p1)",
        {"p0": '$."llm.model"', "p1": "gpt*"},
    ),
    # beyond MLflow: OR, NOT, parentheses, IN on tags/metadata, trace.state, shorthands
    ("trace.state = 'ERROR'", "t.state = :p0", {"p0": "ERROR"}),
    ("user = 'u1'", "t.user_id = :p0", {"p0": "u1"}),
    ("session = 's1'", "t.session_id = :p0", {"p0": "s1"}),
    ("user IS NOT NULL", "t.user_id IS NOT NULL", {}),
    ("user = 'a' OR user = 'b'", "(t.user_id = :p0 OR t.user_id = :p1)", {"p0": "a", "p1": "b"}),
    (
        "(status = 'ERROR' OR execution_time_ms > 100) AND session = 's'",
        "((t.state = :p0 OR t.execution_time_ms > :p1) AND t.session_id = :p2)",
        {"p0": "ERROR", "p1": 100, "p2": "s"},
    ),
    ("NOT status = 'OK'", "NOT coalesce(t.state = :p0, 0)", {"p0": "OK"}),
    ("not (user = 'a')", "NOT coalesce(t.user_id = :p0, 0)", {"p0": "a"}),
    (
        "tags.category IN ('chat', 'search')",
        f"{TAG_IN}_x.value IN (:p1, :p2))",
        {"p0": "category", "p1": "chat", "p2": "search"},
    ),
    (
        "metadata.env NOT IN ('dev')",
        f"{MD_IN}_x.value NOT IN (:p1))",
        {"p0": "env", "p1": "dev"},
    ),
    # an indexed equality narrows the rows: tag/metadata checks become PK probes
    (
        "user = 'u' AND tag.x = 'y'",
        "(t.user_id = :p0 AND EXISTS (SELECT 1 FROM trace_tags _x WHERE _x.trace_id = "
        "t.trace_id AND _x.key = :p1 AND _x.value = :p2))",
        {"p0": "u", "p1": "x", "p2": "y"},
    ),
    # values are data, never SQL
    (
        "tag.x = 'a''; DROP TABLE traces; --'",
        f"{TAG_IN}_x.value = :p1)",
        {"p0": "x", "p1": "a'; DROP TABLE traces; --"},
    ),
    ("tag.`k) OR 1=1 --` = 'v'", f"{TAG_IN}_x.value = :p1)", {"p0": "k) OR 1=1 --", "p1": "v"}),
    # LLM totals: NULL (a trace without LLM calls) counts as 0 tokens, so an OR IS NULL
    # appears exactly when 0 matches; cost has no such default (unknown is not free).
    ("trace.total_tokens > 1000", "t.total_tokens > :p0", {"p0": 1000}),
    ("total_tokens >= 0", "(t.total_tokens >= :p0 OR t.total_tokens IS NULL)", {"p0": 0}),
    ("trace.input_tokens < 10", "(t.input_tokens < :p0 OR t.input_tokens IS NULL)", {"p0": 10}),
    ("trace.output_tokens = 0", "(t.output_tokens = :p0 OR t.output_tokens IS NULL)", {"p0": 0}),
    ("trace.output_tokens != 0", "t.output_tokens != :p0", {"p0": 0}),
    ("trace.llm_calls > 0", "t.llm_calls > :p0", {"p0": 0}),
    ("trace.llm_calls <= -1", "t.llm_calls <= :p0", {"p0": -1}),
    ("trace.unpriced_calls > 0", "t.unpriced_calls > :p0", {"p0": 0}),
    ("trace.cost > 0.01", "t.cost > :p0", {"p0": 0.01}),
    ("trace.cost < 0.01", "t.cost < :p0", {"p0": 0.01}),
    ("trace.cost IS NULL", "t.cost IS NULL", {}),
    ("trace.cost IS NOT NULL", "t.cost IS NOT NULL", {}),
    ("span.model = 'gpt-4o-mini'", f"{SPAN}_s.model = :p0)", {"p0": "gpt-4o-mini"}),
    ("span.model LIKE 'claude-%'", f"{SPAN}_s.model GLOB :p0)", {"p0": "claude-*"}),
    (
        "span.provider IN ('openai', 'azure')",
        f"{SPAN}_s.provider IN (:p0, :p1))",
        {"p0": "openai", "p1": "azure"},
    ),
    ("span.total_tokens > 500", f"{SPAN}_s.total_tokens > :p0)", {"p0": 500}),
    ("span.cost >= 0.5", f"{SPAN}_s.cost >= :p0)", {"p0": 0.5}),
    (
        "user = 'u1' AND trace.cost > 1e-3",
        "(t.user_id = :p0 AND t.cost > :p1)",
        {"p0": "u1", "p1": 0.001},
    ),
    ("  ", "1", {}),
    ("", "1", {}),
]


@pytest.mark.parametrize(("text", "sql", "params"), ACCEPT, ids=[a[0] or "<empty>" for a in ACCEPT])
def test_accepted_filter_compiles_to_sql_with_bound_values(
    text: str, sql: str, params: dict[str, object]
) -> None:
    compiled = compile_filter(parse_filter(text), dialect=SQLITE)
    assert (compiled.sql, compiled.params) == (sql, params)


# filter -> (column of the error, words the message must contain)
REJECT: list[tuple[str, int, str]] = [
    ("trace.status < 'OK'", 13, "< does not apply to trace.status"),
    ("tag.x = 5", 8, "quote the value"),
    ("invalid = 'foo'", 0, "unknown field 'invalid'"),
    ("a = '1'; b = '2'", 7, "';' is not allowed"),
    ("foo.bar = 'x'", 0, "'foo' is not one of"),
    ("TRACE.status = 'OK'", 0, "is not one of"),
    ("trace.STATUS = 'OK'", 6, "unknown field"),
    ("trace.timestamp_ms > '5'", 21, "compared with a number"),
    ("timestamp_ms IN (1, 2)", 13, "IN does not apply"),
    ("execution_time LIKE 5", 15, "LIKE does not apply"),
    ("status = OK", 9, "unquoted value 'OK'"),
    ("tag.x = `y`", 8, "unquoted value"),
    ("tag.x == 'a'", 6, "use '='"),
    ("tag.x <> 'a'", 6, "use '!='"),
    ("tag.x > 'a'", 6, "> does not apply"),
    ("tag.x IS 'a'", 9, "expected NULL after IS"),
    ("tag.x IS NOT 'a'", 13, "expected NULL after IS NOT"),
    ("tag.x NOT LIKE 'a'", 10, "expected IN after NOT"),
    ("tag.x IN ()", 10, "at least one value"),
    ("tags.x IN ('a', 5)", 16, "expected a quoted string"),
    ("tags.x IN 'a'", 10, "expected '('"),
    ("tags.x IN ('a' 'b')", 15, "expected ',' or ')'"),
    ("status IS NULL", 7, "IS NULL does not apply"),
    ("span.foo = 'x'", 5, "unknown span field"),
    ("span.name > 'x'", 10, "> does not apply"),
    ("span.attributes = 'x'", 5, "unknown span field"),
    ("tag. = 'a'", 4, "expected a key after '.'"),
    ("tag.`` = 'a'", 4, "empty key"),
    ("tags.my-key = 'a'", 7, "unexpected character '-'"),
    ("tag.x = 'a' tag.y = 'b'", 12, "expected AND, OR"),
    ("timestamp > 5 AND", 17, "expected a comparison after AND"),
    ("timestamp > 5 OR", 16, "expected a comparison after OR"),
    ("AND timestamp > 5", 0, "keyword AND"),
    ("(status = 'OK'", 14, "expected ')'"),
    ("status = 'OK')", 13, "unbalanced ')'"),
    ("()", 1, "expected a field name"),
    ("tag.x = 'abc", 8, "unterminated string"),
    ("tag.`abc = 'x'", 4, "unterminated key"),
    ("tag.x", 5, "expected a comparison operator"),
    ("tag.x = ", 8, "expected a quoted string"),
    ("timestamp > 99999999999999999999", 12, "out of range"),
    ("name RLIKE '('", 11, "invalid regular expression"),
    ("user = 'a' $", 11, "unexpected character '$'"),
    ("text LIKE '%x%'", 0, "unknown field 'text'"),
    ("'abc' = tag.x", 0, "expected a field name"),
    ("(" * 70 + "user = 'a'" + ")" * 70, 64, "nested too deeply"),
    ("trace.total_tokens > '5'", 21, "compared with a number"),
    ("trace.total_tokens IS NULL", 19, "IS NULL does not apply"),
    ("trace.cost LIKE '1%'", 11, "LIKE does not apply"),
    ("span.model > 'a'", 11, "> does not apply"),
    ("span.cost IS NULL", 10, "IS NULL does not apply"),
    ("span.tokens > 5", 5, "unknown span field"),
    ("trace.tokens > 5", 6, "unknown field"),
]


@pytest.mark.parametrize(("text", "position", "message"), REJECT, ids=[r[0][:40] for r in REJECT])
def test_rejected_filter_points_at_the_problem(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    err = info.value
    assert message in err.message
    assert err.position == position
    assert isinstance(err, ValueError)
    # The rendered message shows the filter with a caret under the character.
    lines = str(err).splitlines()
    assert lines[-1].index("^") - 2 == position or len(text) > 120


def test_caret_line_in_the_message() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter("trace.status < 'OK'")
    assert str(info.value).splitlines()[1:] == ["  trace.status < 'OK'", "               ^"]


def test_too_many_comparisons_is_a_clear_error() -> None:
    text = " OR ".join(f"user = 'u{i}'" for i in range(201))
    with pytest.raises(FilterSyntaxError, match="too many comparisons"):
        parse_filter(text)


ORDER = [
    ("timestamp ASC", "t.request_time", True),
    ("trace.timestamp_ms DESC", "t.request_time", False),
    ("`timestamp` desc", "t.request_time", False),
    ("execution_time", "t.execution_time_ms", True),
    ("status desc", "t.state", False),
    ("trace.name", "t.name", True),
    ("request_id", "t.trace_id", True),
    ("user ASC", "t.user_id", True),
]


@pytest.mark.parametrize(("text", "expr", "ascending"), ORDER)
def test_order_by(text: str, expr: str, ascending: bool) -> None:
    keys, params = compile_order_by([parse_order_by(text)], dialect=SQLITE)
    assert keys[0] == (expr, ascending)
    assert params == {}
    # tie-breakers: newest first, then trace id in the time key's direction
    assert [k for k, _ in keys[1:]] == [c for c in ("t.request_time", "t.trace_id") if c != expr]
    if expr == "t.request_time":
        assert keys[1] == ("t.trace_id", ascending)


def test_order_by_metadata_binds_the_key() -> None:
    keys, params = compile_order_by([parse_order_by("metadata.app_version DESC")], dialect=SQLITE)
    assert keys[0] == (
        "(SELECT _o.value FROM trace_metadata _o WHERE _o.trace_id = t.trace_id AND _o.key = :o0)",
        False,
    )
    assert params == {"o0": "app_version"}


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("foo", 0, "unknown field"),
        ("timestamp ASC DESC", 14, "expected ASC, DESC"),
        ("timestamp sideways", 10, "expected ASC, DESC"),
        ("span.name", 0, "cannot order by span.name"),
        ("", 0, "empty order_by"),
    ],
)
def test_bad_order_by(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_order_by(text)
    assert message in info.value.message
    assert info.value.position == position


@pytest.mark.parametrize(
    ("like", "glob"),
    [
        ("a%", "a*"),
        ("_b", "?b"),
        ("x*y", "x[*]y"),
        ("q?", "q[?]"),
        ("[a]", "[[]a]"),
        ("100%", "100*"),
    ],
)
def test_like_patterns_become_case_sensitive_globs(like: str, glob: str) -> None:
    assert like_to_glob(like) == glob


ALPHABET = st.sampled_from(
    [
        *"abcxyz_.`'\"()=!<>-,;% \t\n$1.5e",
        "AND",
        "OR",
        "NOT",
        "IN",
        "IS",
        "NULL",
        "LIKE",
        "tag.",
        "metadata.",
        "span.",
        "trace.",
        "timestamp_ms",
        "status",
        "user",
        "'v'",
        "`k`",
        "\x00",
        "é",
        "(",
        ")",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(ALPHABET, max_size=30).map(" ".join) | st.text(max_size=80))
def test_parser_raises_only_filter_syntax_errors(text: str) -> None:
    try:
        node = parse_filter(text)
    except FilterSyntaxError as err:
        assert 0 <= err.position <= len(text)
        return
    compiled = compile_filter(node, dialect=SQLITE)
    # Whatever parsed compiles to SQL that SQLite accepts, with values bound.
    import sqlite3

    from sessiontrace._search._compile import register_functions
    from sessiontrace._store._sqlite import _SCHEMA

    conn = sqlite3.connect(":memory:")
    conn.executescript(_SCHEMA)
    register_functions(conn)
    conn.execute(f"SELECT count(*) FROM traces t WHERE {compiled.sql}", compiled.params)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_string_value_round_trips_as_a_bound_parameter(value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    compiled = compile_filter(parse_filter(f"tag.k = {quoted}"), dialect=SQLITE)
    assert compiled.params == {"p0": "k", "p1": value}
