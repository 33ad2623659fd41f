"""Assessments: feedback and expectations attached to a trace, in MLflow 3's shapes.

``Feedback`` is a verdict on a trace or one of its spans (a user's thumbs up, an LLM
judge's score, a check in code); ``Expectation`` the answer that was expected. Both
are ``Assessment``s: a name, a value (bool, finite number, str, or a JSON-able list or
dict), where it came from (``AssessmentSource``), an optional rationale, metadata and
span id, timestamps, and ``valid``/``overrides`` for a feedback another one replaced
(``override_feedback``). Names, attributes and ``to_dictionary()`` follow
``mlflow.entities`` (mlflow-tracing 3.x), so code written for one reads the other.

This module imports nothing from the package: the records, the stores and the
public API all use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_FEEDBACK_NAME",
    "Assessment",
    "AssessmentError",
    "AssessmentNotFoundError",
    "AssessmentSource",
    "AssessmentSourceType",
    "Expectation",
    "Feedback",
    "new_assessment_id",
]

DEFAULT_FEEDBACK_NAME = "feedback"
MAX_NAME_LENGTH = 256
_STACK_TRACE_LIMIT = 10000
_STACK_TRACE_PREFIX = "[Stack trace is truncated]\n...\n"


class AssessmentNotFoundError(KeyError):
    """No assessment with that id on that trace."""


def new_assessment_id() -> str:
    """An id in MLflow's form: ``a-`` and 32 hex digits."""
    return "a-" + uuid.uuid4().hex


class AssessmentSourceType:
    """Who made an assessment: ``HUMAN``, ``LLM_JUDGE`` or ``CODE`` (any case given is
    upper-cased; MLflow's deprecated ``AI_JUDGE`` reads as ``LLM_JUDGE``)."""

    SOURCE_TYPE_UNSPECIFIED = "SOURCE_TYPE_UNSPECIFIED"
    LLM_JUDGE = "LLM_JUDGE"
    AI_JUDGE = "AI_JUDGE"
    HUMAN = "HUMAN"
    CODE = "CODE"
    _SOURCE_TYPES: ClassVar[list[str]] = [SOURCE_TYPE_UNSPECIFIED, LLM_JUDGE, HUMAN, CODE]

    def __init__(self, source_type: str) -> None:
        self._source_type = AssessmentSourceType._parse(source_type)

    @staticmethod
    def _parse(source_type: Any) -> str:
        if not isinstance(source_type, str):
            raise ValueError(
                f"Invalid assessment source type: {source_type!r}. "
                f"Valid source types: {AssessmentSourceType._SOURCE_TYPES}"
            )
        upper: str = source_type.upper()
        if upper == AssessmentSourceType.AI_JUDGE:
            upper = AssessmentSourceType.LLM_JUDGE
        if upper not in AssessmentSourceType._SOURCE_TYPES:
            raise ValueError(
                f"Invalid assessment source type: {upper}. "
                f"Valid source types: {AssessmentSourceType._SOURCE_TYPES}"
            )
        return upper

    def __str__(self) -> str:
        return self._source_type

    @staticmethod
    def _standardize(source_type: str) -> str:
        return str(AssessmentSourceType(source_type))


@dataclasses.dataclass
class AssessmentSource:
    """Where an assessment came from: ``source_type`` (``AssessmentSourceType``) and
    an id such as a user id or a judge's model name (``"default"`` when not given)."""

    source_type: str
    source_id: str | None = "default"

    def __post_init__(self) -> None:
        self.source_type = AssessmentSourceType._standardize(self.source_type)
        if self.source_id is not None and not isinstance(self.source_id, str):
            raise ValueError(f"source_id must be a str or None, got {type(self.source_id)}")

    def to_dictionary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dictionary(cls, d: dict[str, Any]) -> AssessmentSource:
        return cls(**d)


@dataclasses.dataclass
class AssessmentError:
    """Why a feedback has no value (a judge that timed out, say)."""

    error_code: str
    error_message: str | None = None
    stack_trace: str | None = None

    def to_dictionary(self) -> dict[str, Any]:
        stack = self.stack_trace
        if stack and len(stack) > _STACK_TRACE_LIMIT:
            stack = _STACK_TRACE_PREFIX + stack[-(_STACK_TRACE_LIMIT - len(_STACK_TRACE_PREFIX)) :]
        return {
            "error_code": self.error_code,
            "error_message": self.error_message,
            "stack_trace": stack,
        }

    @classmethod
    def from_dictionary(cls, d: dict[str, Any]) -> AssessmentError:
        return cls(**d)


def _check_value(value: Any, depth: int = 0) -> None:
    """A value an assessment may hold: bool, finite number, str, None, or lists and
    str-keyed dicts of those (JSON, without NaN or infinities)."""
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"assessment values must be finite numbers, got {value!r}")
        return
    if depth > 32:
        raise ValueError("assessment values may nest at most 32 levels deep")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"keys of a dict value must be strings, got {key!r}")
            _check_value(item, depth + 1)
        return
    raise ValueError(
        "assessment values must be a bool, a number, a str, or a JSON-able list or dict; "
        f"got {type(value).__name__}"
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an assessment's name must be a non-empty str, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"an assessment's name is at most {MAX_NAME_LENGTH} characters")
    return name


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"metadata keys must be strings, got {key!r}")
        # MLflow keeps metadata values as strings (its proto's map<string, string>)
        out[key] = value if isinstance(value, str) else str(value)
    return out


def _timestamp(ms: int) -> str:
    """Milliseconds as protobuf's JSON form of a Timestamp (RFC 3339, UTC)."""
    seconds, millis = divmod(int(ms), 1000)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def _from_timestamp(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).replace("Z", "+00:00")
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@dataclasses.dataclass(eq=True)
class Assessment:
    """What ``Feedback`` and ``Expectation`` share. Build one of those, not this."""

    name: str
    source: AssessmentSource
    trace_id: str | None = None
    rationale: str | None = None
    metadata: dict[str, str] | None = None
    span_id: str | None = None
    create_time_ms: int | None = None
    last_update_time_ms: int | None = None
    assessment_id: str | None = None
    error: AssessmentError | None = None
    overrides: str | None = None
    valid: bool | None = None
    value: Any = None

    kind: ClassVar[str] = ""

    def _finish(self) -> None:
        self.name = _check_name(self.name)
        if not isinstance(self.source, AssessmentSource):
            raise ValueError(
                "`source` must be an instance of `AssessmentSource`. "
                f"Got {type(self.source)} instead."
            )
        _check_value(self.value)
        if isinstance(self.value, tuple):
            self.value = list(self.value)
        self.metadata = _check_metadata(self.metadata)
        if self.rationale is not None and not isinstance(self.rationale, str):
            raise ValueError(f"rationale must be a str, got {type(self.rationale).__name__}")
        if self.span_id is not None and not isinstance(self.span_id, str):
            raise ValueError(f"span_id must be a str, got {type(self.span_id).__name__}")
        now = int(time.time() * 1000)
        if self.create_time_ms is None:
            self.create_time_ms = now
        if self.last_update_time_ms is None:
            self.last_update_time_ms = self.create_time_ms

    # -- MLflow's dictionary form ------------------------------------------------------

    def _value_dictionary(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dictionary(self) -> dict[str, Any]:
        """MLflow's ``Assessment.to_dictionary()``: its proto as JSON, unset fields left out."""
        d: dict[str, Any] = {}
        if self.assessment_id is not None:
            d["assessment_id"] = self.assessment_id
        d["assessment_name"] = self.name
        if self.trace_id:
            d["trace_id"] = self.trace_id
        if self.span_id is not None:
            d["span_id"] = self.span_id
        source: dict[str, Any] = {"source_type": self.source.source_type}
        if self.source.source_id:
            source["source_id"] = self.source.source_id
        d["source"] = source
        d["create_time"] = _timestamp(self.create_time_ms or 0)
        d["last_update_time"] = _timestamp(self.last_update_time_ms or 0)
        d[self.kind] = self._value_dictionary()
        if self.rationale is not None:
            d["rationale"] = self.rationale
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        if self.overrides:
            d["overrides"] = self.overrides
        if self.valid is not None:
            d["valid"] = self.valid
        return d

    def to_dict(self) -> dict[str, Any]:
        """``to_dictionary()`` (the name this package's other records use)."""
        return self.to_dictionary()

    @classmethod
    def from_dictionary(cls, d: dict[str, Any]) -> Assessment:
        """An assessment from ``to_dictionary()``'s form (MLflow's too)."""
        if d.get("feedback") is not None:
            return Feedback.from_dictionary(d)
        if d.get("expectation") is not None:
            return Expectation.from_dictionary(d)
        raise ValueError(f"Unknown assessment type: {d.get('assessment_name')}")

    def _common_from(self, d: dict[str, Any]) -> None:
        self.assessment_id = d.get("assessment_id") or None
        self.trace_id = d.get("trace_id") or None
        self.span_id = d.get("span_id") or None
        if "create_time" in d:
            self.create_time_ms = _from_timestamp(d["create_time"])
        if "last_update_time" in d:
            self.last_update_time_ms = _from_timestamp(d["last_update_time"])


@dataclasses.dataclass(eq=True, init=False)
class Feedback(Assessment):
    """A verdict on a trace: ``value`` (bool, number, str, list or dict), or an
    ``error`` saying why there is none. The source defaults to ``CODE``, as MLflow's.

    >>> Feedback(name="thumbs_up", value=True,
    ...          source=AssessmentSource(source_type="HUMAN", source_id="user-123"))
    """

    kind: ClassVar[str] = "feedback"

    def __init__(
        self,
        name: str = DEFAULT_FEEDBACK_NAME,
        value: Any = None,
        error: Exception | AssessmentError | str | None = None,
        source: AssessmentSource | None = None,
        trace_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        span_id: str | None = None,
        create_time_ms: int | None = None,
        last_update_time_ms: int | None = None,
        rationale: str | None = None,
        overrides: str | None = None,
        valid: bool = True,
    ) -> None:
        if source is None:
            source = AssessmentSource(source_type=AssessmentSourceType.CODE)
        if isinstance(error, Exception):
            error = AssessmentError(
                error_message=str(error),
                error_code=type(error).__name__,
                stack_trace="".join(
                    traceback.format_exception(type(error), error, error.__traceback__)
                ),
            )
        elif isinstance(error, str):
            error = AssessmentError(error_message=error, error_code="ASSESSMENT_ERROR")
        elif error is not None and not isinstance(error, AssessmentError):
            raise ValueError(
                f"'error' must be an Exception, AssessmentError, or string. Got: {type(error)}"
            )
        self.name = name
        self.value = value
        self.error = error
        self.source = source
        self.trace_id = trace_id
        self.metadata = metadata
        self.span_id = span_id
        self.create_time_ms = create_time_ms
        self.last_update_time_ms = last_update_time_ms
        self.rationale = rationale
        self.overrides = overrides
        self.valid = valid
        self.assessment_id = None
        self._finish()

    @property
    def error_code(self) -> str | None:
        return self.error.error_code if self.error else None

    @property
    def error_message(self) -> str | None:
        return self.error.error_message if self.error else None

    def _value_dictionary(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value}
        if self.error is not None:
            d["error"] = {k: v for k, v in self.error.to_dictionary().items() if v}
        return d

    @classmethod
    def from_dictionary(cls, d: dict[str, Any]) -> Feedback:
        value = d.get("feedback")
        if not isinstance(value, dict):
            raise ValueError("`feedback` must exist in the dictionary.")
        error = value.get("error")
        feedback = cls(
            name=d["assessment_name"],
            value=value.get("value"),
            error=AssessmentError.from_dictionary(error) if error else None,
            source=AssessmentSource.from_dictionary(d["source"]),
            rationale=d.get("rationale"),
            metadata=d.get("metadata"),
            overrides=d.get("overrides"),
            valid=d.get("valid", True),
        )
        feedback._common_from(d)
        return feedback


@dataclasses.dataclass(eq=True, init=False)
class Expectation(Assessment):
    """The expected outcome (a ground-truth answer); any JSON-able value. The source
    defaults to ``HUMAN``, as MLflow's."""

    kind: ClassVar[str] = "expectation"

    def __init__(
        self,
        name: str,
        value: Any,
        source: AssessmentSource | None = None,
        trace_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        span_id: str | None = None,
        create_time_ms: int | None = None,
        last_update_time_ms: int | None = None,
    ) -> None:
        if source is None:
            source = AssessmentSource(source_type=AssessmentSourceType.HUMAN)
        if value is None:
            raise ValueError("The `value` field must be specified.")
        self.name = name
        self.value = value
        self.source = source
        self.trace_id = trace_id
        self.metadata = metadata
        self.span_id = span_id
        self.create_time_ms = create_time_ms
        self.last_update_time_ms = last_update_time_ms
        self.rationale = None
        self.error = None
        self.overrides = None
        self.valid = True
        self.assessment_id = None
        self._finish()

    def _value_dictionary(self) -> dict[str, Any]:
        if isinstance(self.value, (bool, int, float, str)):
            return {"value": self.value}
        return {
            "serialized_value": {
                "serialization_format": "JSON_FORMAT",
                "value": json.dumps(self.value),
            }
        }

    @classmethod
    def from_dictionary(cls, d: dict[str, Any]) -> Expectation:
        value = d.get("expectation")
        if not isinstance(value, dict):
            raise ValueError("`expectation` must exist in the dictionary.")
        if "value" in value:
            parsed = value["value"]
        elif "serialized_value" in value:
            parsed = json.loads(value["serialized_value"]["value"])
        else:
            raise ValueError(
                "Either 'value' or 'serialized_value' must be present in the dictionary "
                "representation of an Expectation."
            )
        expectation = cls(
            name=d["assessment_name"],
            value=parsed,
            source=AssessmentSource.from_dictionary(d["source"]),
            metadata=d.get("metadata"),
        )
        expectation._common_from(d)
        if "valid" in d:
            expectation.valid = d["valid"]
        expectation.overrides = d.get("overrides")
        return expectation


# -- the row form both stores write ----------------------------------------------------

_new = object.__new__

ASSESSMENT_COLUMNS = (
    "assessment_id, trace_id, kind, name, value_json, value_num, value_bool, rationale, "
    "metadata_json, error_json, source_type, source_id, span_id, create_time_ms, "
    "last_update_time_ms, valid, overrides"
)


def value_columns(value: Any) -> tuple[str | None, float | None, int | None]:
    """``value_json``, ``value_num``, ``value_bool`` for a value (see the schema)."""
    if value is None:
        return None, None, None
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if isinstance(value, bool):
        return text, 1.0 if value else 0.0, 1 if value else 0
    if isinstance(value, (int, float)):
        number = float(value)
        return text, number if math.isfinite(number) else None, None
    return text, None, None


def _storable(value: Any) -> Any:
    """Text both stores can hold: a lone surrogate (half an emoji from a cut byte
    stream) becomes ``?``, a NUL (PostgreSQL's text cannot hold one) U+FFFD, as
    trace rows are cleaned. JSON text has its NULs escaped already."""
    if isinstance(value, str):
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
    return value


def assessment_row(a: Assessment) -> tuple[Any, ...]:
    """The row of ``a`` in ``ASSESSMENT_COLUMNS`` order (``a`` has its id and trace id)."""
    return tuple([_storable(v) for v in _row(a)])


def _row(a: Assessment) -> tuple[Any, ...]:
    value_json, value_num, value_bool = value_columns(a.value)
    return (
        a.assessment_id,
        a.trace_id,
        a.kind,
        a.name,
        value_json,
        value_num,
        value_bool,
        a.rationale,
        None if not a.metadata else json.dumps(a.metadata, ensure_ascii=False),
        None if a.error is None else json.dumps(a.error.to_dictionary(), ensure_ascii=False),
        a.source.source_type,
        a.source.source_id,
        a.span_id,
        int(a.create_time_ms or 0),
        int(a.last_update_time_ms or 0),
        1 if a.valid is None or a.valid else 0,
        a.overrides,
    )


def assessment_from_row(row: Any) -> Assessment:
    """An ``Assessment`` from a row in ``ASSESSMENT_COLUMNS`` order."""
    (
        assessment_id,
        trace_id,
        kind,
        name,
        value_json,
        _num,
        _bool,
        rationale,
        metadata_json,
        error_json,
        source_type,
        source_id,
        span_id,
        create_ms,
        update_ms,
        valid,
        overrides,
    ) = row[:17]
    # Rows were checked when written: built without the constructors' checks (a
    # page of search results reads many).
    source = _new(AssessmentSource)
    source.__dict__.update(source_type=source_type, source_id=source_id)
    a = _new(Expectation if kind == "expectation" else Feedback)
    a.__dict__.update(
        name=name,
        source=source,
        trace_id=trace_id,
        rationale=rationale,
        metadata=None if metadata_json is None else json.loads(metadata_json),
        span_id=span_id,
        create_time_ms=int(create_ms),
        last_update_time_ms=int(update_ms),
        assessment_id=assessment_id,
        error=None if error_json is None else AssessmentError(**json.loads(error_json)),
        overrides=overrides,
        valid=bool(valid),
        value=None if value_json is None else json.loads(value_json),
    )
    return a
