"""The whitelist of searchable fields: what a name in a filter may refer to.

A name is split on its first dot into an entity (``trace.``, ``attributes.``,
``tag.``/``tags.``, ``metadata.``/``request_metadata.``, ``span.``, ``feedback.``,
``expectation.``) and a key; a name without a dot is a trace attribute. Nothing
outside these tables ever reaches SQL: attributes map to fixed column names, and
tag, metadata and span attribute keys and assessment names are bound as parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from .._entities import METADATA_SESSION, METADATA_USER

__all__ = [
    "ASSESSMENT_OPS",
    "ATTRIBUTES",
    "ENTITIES",
    "NUMERIC_OPS",
    "SET_OPS",
    "STRING_OPS",
    "Attribute",
    "Field",
]

FieldKind = Literal[
    "column", "tag", "metadata", "span", "span_attribute", "feedback", "expectation"
]

NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "RLIKE", "IN", "NOT IN"})
SET_OPS = frozenset({"IS NULL", "IS NOT NULL"})
# MLflow's VALID_ASSESSMENT_COMPARATORS, in the order its messages are shown here.
ASSESSMENT_OP_ORDER = (
    "!=",
    "=",
    ">",
    ">=",
    "<",
    "<=",
    "LIKE",
    "ILIKE",
    "RLIKE",
    "IS NULL",
    "IS NOT NULL",
)
ASSESSMENT_OPS = frozenset(ASSESSMENT_OP_ORDER)
NUMERIC_ASSESSMENT_OPS = frozenset({">", ">=", "<", "<="})


@dataclasses.dataclass(frozen=True)
class Attribute:
    """A trace attribute: a real column of ``traces``."""

    column: str
    numeric: bool = False
    nullable: bool = False  # IS [NOT] NULL is allowed on nullable columns
    indexed_eq: bool = False  # "column = ?" is answered from an index
    null_is_zero: bool = False  # NULL means 0 (token counts of traces without LLM calls)


# Attribute names as MLflow spells them (plus our own), to columns of ``traces``.
ATTRIBUTES: dict[str, Attribute] = {
    "timestamp": Attribute("request_time", numeric=True),
    "timestamp_ms": Attribute("request_time", numeric=True),
    "execution_time": Attribute("execution_time_ms", numeric=True),
    "execution_time_ms": Attribute("execution_time_ms", numeric=True),
    "end_time": Attribute("end_time", numeric=True),
    "end_time_ms": Attribute("end_time", numeric=True),
    "status": Attribute("state"),
    "state": Attribute("state"),
    "name": Attribute("name", nullable=True),
    "request_id": Attribute("trace_id", indexed_eq=True),
    "trace_id": Attribute("trace_id", indexed_eq=True),
    "client_request_id": Attribute("client_request_id", nullable=True, indexed_eq=True),
    "user": Attribute("user_id", nullable=True, indexed_eq=True),
    "session": Attribute("session_id", nullable=True, indexed_eq=True),
    # LLM totals: a trace without LLM calls has 0 tokens and calls, and no cost
    # (cost is NULL, too, when none of the calls was priced).
    "input_tokens": Attribute("input_tokens", numeric=True, null_is_zero=True),
    "output_tokens": Attribute("output_tokens", numeric=True, null_is_zero=True),
    "total_tokens": Attribute("total_tokens", numeric=True, null_is_zero=True),
    "llm_calls": Attribute("llm_calls", numeric=True, null_is_zero=True),
    "unpriced_calls": Attribute("unpriced_calls", numeric=True, null_is_zero=True),
    "cost": Attribute("cost", numeric=True, nullable=True),
}

# MLflow's run_id is a metadata key.
ATTRIBUTE_TO_METADATA = {"run_id": "mlflow.sourceRun"}

# User and session live in indexed columns, not in the metadata table.
METADATA_COLUMNS = {METADATA_USER: ATTRIBUTES["user"], METADATA_SESSION: ATTRIBUTES["session"]}

ENTITIES: dict[str, str] = {
    "trace": "attribute",
    "attribute": "attribute",
    "attributes": "attribute",
    "tag": "tag",
    "tags": "tag",
    "metadata": "metadata",
    "request_metadata": "metadata",
    "span": "span",
    # a valid (not overridden) assessment of that name: feedback.<name>, expectation.<name>
    "feedback": "feedback",
    "expectation": "expectation",
}

SPAN_COLUMNS = {
    "name": "name",
    "type": "span_type",
    "status": "status",
    "model": "model",  # an LLM call's mlflow.llm.model
    "provider": "provider",
}
# An LLM call's numbers (spans that are not LLM calls never match).
SPAN_NUMERIC_COLUMNS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "cost": "cost",
}


@dataclasses.dataclass(frozen=True)
class Field:
    """What a name in a filter refers to, resolved against the whitelist."""

    kind: FieldKind
    key: str  # column name for "column"/"span"; the key for tags/metadata/span attributes
    display: str  # the name as the user wrote it, for messages
    numeric: bool = False
    nullable: bool = False
    indexed_eq: bool = False
    null_is_zero: bool = False

    @property
    def ops(self) -> frozenset[str]:
        if self.kind in ("feedback", "expectation"):
            return ASSESSMENT_OPS
        if self.numeric:
            return NUMERIC_OPS | SET_OPS if self.nullable else NUMERIC_OPS
        if self.kind in ("tag", "metadata") or self.nullable:
            return STRING_OPS | SET_OPS
        return STRING_OPS

    @staticmethod
    def column(attr: Attribute, display: str) -> Field:
        return Field(
            "column",
            attr.column,
            display,
            numeric=attr.numeric,
            nullable=attr.nullable,
            indexed_eq=attr.indexed_eq,
            null_is_zero=attr.null_is_zero,
        )
