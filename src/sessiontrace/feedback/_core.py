"""What the ASGI and WSGI feedback apps share: options, validation, authorization, store.

One request goes ``precheck`` (method, path, headers: answered before any body is
read) -> ``parse_post`` / ``parse_query`` (the JSON body or the query string) ->
``Handler.post`` / ``delete`` / ``get`` (who may, then the store). Every step
returns either what the next step needs or a ``Reply``: the apps only move bytes.

The client's text (ids, comments, values) is never logged: logs carry an error code,
a length, an exception's type, nothing else.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs

from .. import _runtime, _tracing
from .._assessments import Assessment, AssessmentNotFoundError, AssessmentSource, Feedback

__all__ = [
    "DEFAULT_NAMES",
    "FeedbackOptions",
    "Handler",
    "Query",
    "Reply",
    "Submission",
    "parse_post",
    "parse_query",
    "precheck",
    "warn_unmounted",
]

logger = logging.getLogger("sessiontrace.feedback")

#: ``thumbs_up``: true / false; ``rating``: an integer from 1 to 5.
DEFAULT_NAMES: Final[Mapping[str, Any]] = {"thumbs_up": bool, "rating": range(1, 6)}

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_FIELDS: Final = frozenset({"trace_id", "name", "value", "comment", "span_id"})
_MAX_QUERY = 2048
_MARKER: Final = "sessiontrace.feedback_app"  # metadata key: written by this endpoint


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}


def reason(status: int) -> str:
    return _REASONS.get(status, "")


def _json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return Reply(status, body, headers)


def error(status: int, code: str, message: str, *headers: tuple[str, str]) -> Reply:
    """A JSON error: ``{"error": code, "message": ...}``; never any of the client's text."""
    return _json_reply(status, {"error": code, "message": message}, headers)


# -- what a name accepts -------------------------------------------------------------


class _Kind:
    """One feedback name's accepted values, from the ``names=`` spec."""

    __slots__ = ("choices", "describe", "high", "integral", "kind", "low", "max_length")

    def __init__(self, spec: Any, max_value_length: int) -> None:
        self.low: float | None = None
        self.high: float | None = None
        self.choices: frozenset[str] | None = None
        self.integral = False
        self.max_length = max_value_length
        if spec is bool:
            self.kind, self.describe = "bool", "true or false"
        elif spec is int or spec is float:
            self.kind, self.integral = "number", spec is int
            self.describe = "an integer" if self.integral else "a number"
        elif spec is str:
            self.kind, self.describe = "str", f"a string of at most {max_value_length} characters"
        elif isinstance(spec, range):
            if spec.step != 1 or len(spec) == 0:
                raise ValueError(f"a range in names must have step 1 and not be empty: {spec!r}")
            self.kind, self.integral = "number", True
            self.low, self.high = spec.start, spec.stop - 1
            self.describe = f"an integer from {self.low} to {self.high}"
        elif (
            isinstance(spec, tuple)
            and len(spec) == 2
            and all(_is_number(x) and math.isfinite(x) for x in spec)
        ):
            if spec[0] > spec[1]:
                raise ValueError(f"a (low, high) range in names must have low <= high: {spec!r}")
            self.kind = "number"
            self.low, self.high = spec
            self.describe = f"a number from {self.low} to {self.high}"
        elif (
            isinstance(spec, Collection)
            and not isinstance(spec, (str, bytes, Mapping))
            and spec
            and all(isinstance(x, str) and x for x in spec)
        ):
            self.kind = "choice"
            self.choices = frozenset(spec)
            self.describe = "one of " + ", ".join(sorted(self.choices))
        else:
            raise TypeError(
                "each names= value must be bool, int, float, str, a range, a (low, high) "
                f"pair of numbers or a collection of strings, not {spec!r}"
            )

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is acceptable, else what it should be."""
        kind = self.kind
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "number":
            ok = (
                _is_number(value)
                and _representable(value)
                and (not self.integral or isinstance(value, int) or value.is_integer())
                and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high)
            )
        elif kind == "str":
            ok = isinstance(value, str) and 0 < len(value) <= self.max_length and _clean(value)
        else:
            assert self.choices is not None
            ok = isinstance(value, str) and value in self.choices
        return None if ok else f"value must be {self.describe}"

    def normal(self, value: Any) -> Any:
        if self.kind == "number" and self.integral and isinstance(value, float):
            return int(value)
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_MAX_EXACT_INT: Final = 2**53  # JSON numbers beyond this lose digits in most readers


def _representable(value: int | float) -> bool:
    """Finite, and (for an int) exact as a double: the store keeps numbers as REAL too."""
    if isinstance(value, int):
        return -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT
    return math.isfinite(value)


def _clean(text: str) -> bool:
    """No NUL (PostgreSQL text cannot hold it) and no lone surrogates (not UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- options ------------------------------------------------------------------------


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")
    return value


def _flag(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{option} must be a bool, not {type(value).__name__}")
    return value


class FeedbackOptions:
    """The validated options of one feedback app (see :func:`feedback_app`)."""

    def __init__(
        self,
        *,
        names: Mapping[str, Any] = DEFAULT_NAMES,
        max_body_bytes: int = 16 * 1024,
        max_comment_length: int = 2000,
        max_value_length: int = 200,
        require_user: bool = True,
        check_session: bool = True,
        allow_unowned_traces: bool = False,
        flush_timeout: float = 2.0,
    ) -> None:
        if not isinstance(names, Mapping) or not names:
            raise TypeError("names must be a non-empty mapping of name -> accepted values")
        self.max_value_length = _positive_int("max_value_length", max_value_length)
        kinds: dict[str, _Kind] = {}
        for name, spec in names.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(
                    "feedback names must be 1-64 letters, digits, '_', '.' or '-' "
                    f"(not starting with '.' or '-'): {name!r}"
                )
            kinds[name] = _Kind(spec, self.max_value_length)
        self.kinds = kinds
        self.allowed = ", ".join(sorted(kinds))
        self.max_body_bytes = _positive_int("max_body_bytes", max_body_bytes)
        self.max_comment_length = _positive_int("max_comment_length", max_comment_length)
        self.require_user = _flag("require_user", require_user)
        self.check_session = _flag("check_session", check_session)
        self.allow_unowned_traces = _flag("allow_unowned_traces", allow_unowned_traces)
        if isinstance(flush_timeout, bool) or not isinstance(flush_timeout, (int, float)):
            raise TypeError(f"flush_timeout must be a number, not {type(flush_timeout).__name__}")
        if not 0 <= flush_timeout <= 30:
            raise ValueError(f"flush_timeout must be between 0 and 30 seconds, got {flush_timeout}")
        self.flush_timeout = float(flush_timeout)


# -- before the body ------------------------------------------------------------------

_ALLOW: Final = ("Allow", "GET, POST, DELETE")


def precheck(
    options: FeedbackOptions,
    method: str,
    path: str,
    content_type: str | None,
    content_length: str | None,
    chunked: bool,
) -> Reply | None:
    """Refuse what can be refused from the request line and headers alone.

    ``chunked``: the body's end is known without a length (ASGI always; WSGI when the
    server sets ``wsgi.input_terminated``). A POST without either gets 411.
    """
    if path not in ("", "/"):
        return error(404, "not_found", "post feedback to the mount point itself")
    if method not in ("POST", "GET", "DELETE"):
        return error(405, "method_not_allowed", "use POST, GET or DELETE", _ALLOW)
    if method != "POST":
        return None
    if content_length is not None:
        try:
            length = int(content_length)
        except ValueError:
            return error(400, "invalid_request", "the Content-Length header is not a number")
        if length < 0:
            return error(400, "invalid_request", "the Content-Length header is not a number")
        if length > options.max_body_bytes:
            return error(
                413, "payload_too_large", f"the body must be at most {options.max_body_bytes} bytes"
            )
    elif not chunked:
        return error(411, "length_required", "send a Content-Length header")
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        return error(415, "unsupported_media_type", "send Content-Type: application/json")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return error(415, "unsupported_media_type", "the body must be UTF-8 JSON")
    return None


def too_large(options: FeedbackOptions) -> Reply:
    return error(
        413, "payload_too_large", f"the body must be at most {options.max_body_bytes} bytes"
    )


# -- the body and the query -------------------------------------------------------------


class Submission(NamedTuple):
    trace_id: str
    name: str
    value: Any
    comment: str | None
    span_id: str | None


class Query(NamedTuple):
    trace_id: str
    name: str | None


def _reject_constant(text: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _invalid(message: str) -> Reply:
    return error(422, "invalid_feedback", message)


def parse_post(options: FeedbackOptions, body: bytes) -> Submission | Reply:
    if len(body) > options.max_body_bytes:
        return too_large(options)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "invalid_json", "the body is not UTF-8")
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        return error(400, "invalid_json", "the body is nested too deeply")
    except ValueError:  # JSONDecodeError, NaN, duplicate keys, an int of 4300+ digits
        return error(400, "invalid_json", "the body is not a JSON object of the feedback")
    if not isinstance(data, dict):
        return _invalid("the body must be a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        return _invalid("unknown field; the fields are trace_id, name, value, comment, span_id")
    trace_id = data.get("trace_id")
    if not isinstance(trace_id, str) or not _ID.fullmatch(trace_id):
        return _invalid("trace_id must be a trace id (the X-Trace-ID response header)")
    name = data.get("name")
    kind = options.kinds.get(name) if isinstance(name, str) else None
    if kind is None or not isinstance(name, str):
        return _invalid(f"name must be one of: {options.allowed}")
    if "value" not in data:
        return _invalid(f"value is required: {kind.describe}")
    value = data["value"]
    problem = kind.problem(value)
    if problem is not None:
        return _invalid(problem)
    comment = data.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            return _invalid("comment must be a string or null")
        if len(comment) > options.max_comment_length:
            return _invalid(f"comment must be at most {options.max_comment_length} characters")
        if not _clean(comment):
            return _invalid("comment must not contain NUL or unpaired surrogates")
        comment = comment or None
    span_id = data.get("span_id")
    if span_id is not None and (not isinstance(span_id, str) or not _ID.fullmatch(span_id)):
        return _invalid("span_id must be a span id")
    return Submission(trace_id, name, kind.normal(value), comment, span_id)


def parse_query(options: FeedbackOptions, method: str, query: bytes) -> Query | Reply:
    if len(query) > _MAX_QUERY:
        return error(400, "invalid_request", "the query string is too long")
    try:
        fields = parse_qs(
            query.decode("utf-8"), keep_blank_values=True, max_num_fields=4, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return error(400, "invalid_request", "the query string is not valid")
    if set(fields) - {"trace_id", "name"} or any(len(v) != 1 for v in fields.values()):
        return error(400, "invalid_request", "the query takes trace_id and name, once each")
    trace_id = fields.get("trace_id", [""])[0]
    if not _ID.fullmatch(trace_id):
        return _invalid("trace_id must be a trace id (the X-Trace-ID response header)")
    name = fields.get("name", [None])[0]
    if name is not None and name not in options.kinds:
        return _invalid(f"name must be one of: {options.allowed}")
    if method == "DELETE" and name is None:
        return _invalid("DELETE needs ?trace_id=...&name=...")
    return Query(trace_id, name)


# -- who may, and the store -------------------------------------------------------------


class _Unavailable(Exception):
    """The store cannot be used: 503."""


class _LogBudget:
    """At most one warning per code every ``interval`` seconds."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def allow(self, code: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(code, -1e18) < self.interval:
                return False
            self._last[code] = now
            return True


_log_budget = _LogBudget()

_RETRY: Final = ("Retry-After", "1")


def warn_unmounted() -> None:
    """The app was reached without the middleware: nobody is signed in (401s follow)."""
    if _log_budget.allow("unmounted"):
        logger.warning(
            "sessiontrace: the feedback app is not behind ASGIMiddleware/WSGIMiddleware; "
            "its requests carry no user or session"
        )


def _failure(what: str, exc: Exception) -> _Unavailable:
    """A store call failed: counted, logged by the exception's type only (a driver's
    message may quote the row: ids, comments), and answered 503."""
    _runtime.count_internal_error(f"feedback_{what}")
    if _log_budget.allow(what):
        logger.warning(
            "sessiontrace: feedback %s failed (%s); answered 503", what, type(exc).__name__
        )
    return _Unavailable()


def _unavailable() -> Reply:
    return error(503, "unavailable", "feedback cannot be stored right now; retry shortly", _RETRY)


class Handler:
    """Authorizes and stores one requester's feedback; synchronous (ASGI runs it in a thread).

    The rule, for a requester with user id ``U`` and session id ``S`` (what the
    middleware set for this request) and a trace whose owner is ``(TU, TS)``:

    - no ``U`` -> 401 when ``require_user`` (the default); no ``U`` and no ``S`` -> 401;
    - no trace with that id, live or stored (after a bounded flush) -> 404;
    - ``TU`` and ``TS`` both unset -> 403, unless ``allow_unowned_traces``;
    - ``TU`` set and not ``U`` -> 403;
    - ``TS`` set and not ``S`` -> 403 (unless ``check_session=False``).
    """

    def __init__(self, options: FeedbackOptions) -> None:
        self.options = options

    # The store calls -- each failure becomes _Unavailable, counted and logged by type.

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _failure(what, exc) from None

    def _store(self) -> Any:
        return self._call("store", _runtime.get_store)

    def _owner(self, trace_id: str) -> tuple[str | None, str | None] | None:
        live = _tracing._live_traces.get(trace_id)
        if live is not None:  # started here, not finished yet: its row is not written
            return live.user_id, live.session_id
        store = self._store()
        owner: tuple[str | None, str | None] | None = self._call(
            "trace_owner", lambda: store.trace_owner(trace_id)
        )
        if owner is None and self.options.flush_timeout > 0:
            # Just finished: it may still be in the pipeline's queue. Bounded wait.
            _runtime.flush(self.options.flush_timeout)
            owner = self._call("trace_owner", lambda: store.trace_owner(trace_id))
        return owner

    def _authorize(self, trace_id: str, user: str | None, session: str | None) -> Reply | None:
        options = self.options
        if user is None and (options.require_user or session is None):
            return error(401, "unauthenticated", "feedback needs a signed-in user")
        owner = self._owner(trace_id)
        if owner is None:
            return error(404, "trace_not_found", "no trace with this id")
        trace_user, trace_session = owner
        if trace_user is None and trace_session is None and not options.allow_unowned_traces:
            return error(403, "forbidden", "this trace belongs to no user or session")
        if trace_user is not None and trace_user != user:
            return error(403, "forbidden", "this trace belongs to another user")
        if options.check_session and trace_session is not None and trace_session != session:
            return error(403, "forbidden", "this trace belongs to another session")
        return None

    @staticmethod
    def dedupe_key(trace_id: str, name: str, user: str | None, session: str | None) -> str:
        # Ids never hold control characters (the middleware's allowed characters), so
        # \x1f separates; a session-only requester has an empty user field.
        if user is not None:
            return f"{trace_id}\x1f{name}\x1f{user}"
        return f"{trace_id}\x1f{name}\x1f\x1f{session}"

    def _mine(
        self, trace_id: str, user: str | None, session: str | None, name: str | None
    ) -> list[Assessment]:
        store = self._store()
        found: dict[str, list[Assessment]] = self._call(
            "assessments_for", lambda: store.assessments_for([trace_id])
        )
        requester = user if user is not None else f"session:{session}"
        return [
            a
            for a in found.get(trace_id, ())
            if (a.metadata or {}).get(_MARKER) == requester
            and a.valid
            and (name is None or a.name == name)
        ]

    def post(self, s: Submission, user: str | None, session: str | None) -> Reply:
        try:
            refused = self._authorize(s.trace_id, user, session)
            if refused is not None:
                return refused
            feedback = Feedback(
                name=s.name,
                value=s.value,
                source=AssessmentSource(source_type="HUMAN", source_id=user),
                rationale=s.comment,
                metadata={_MARKER: user if user is not None else f"session:{session}"},
                span_id=s.span_id,
                trace_id=s.trace_id,
            )
            store = self._store()
            key = self.dedupe_key(s.trace_id, s.name, user, session)
            stored = self._call(
                "put_assessment", lambda: store.put_assessment(feedback, dedupe_key=key)
            )
        except _Unavailable:
            return _unavailable()
        return _json_reply(200, _public(stored))

    def get(self, q: Query, user: str | None, session: str | None) -> Reply:
        try:
            refused = self._authorize(q.trace_id, user, session)
            if refused is not None:
                return refused
            mine = self._mine(q.trace_id, user, session, q.name)
        except _Unavailable:
            return _unavailable()
        return _json_reply(200, {"trace_id": q.trace_id, "feedback": [_public(a) for a in mine]})

    def delete(self, q: Query, user: str | None, session: str | None) -> Reply:
        try:
            refused = self._authorize(q.trace_id, user, session)
            if refused is not None:
                return refused
            mine = self._mine(q.trace_id, user, session, q.name)
            store = self._store()
            deleted = 0
            for a in mine:
                try:
                    store.delete_assessment(q.trace_id, a.assessment_id)
                except AssessmentNotFoundError:  # a concurrent DELETE took it first
                    continue
                except Exception as exc:
                    raise _failure("delete_assessment", exc) from None
                deleted += 1
        except _Unavailable:
            return _unavailable()
        return _json_reply(200, {"trace_id": q.trace_id, "name": q.name, "deleted": deleted})


def _public(a: Assessment) -> dict[str, Any]:
    """What the front end gets back: its own value, never anyone else's ids."""
    return {
        "assessment_id": a.assessment_id,
        "trace_id": a.trace_id,
        "name": a.name,
        "value": getattr(a, "value", None),
        "comment": getattr(a, "rationale", None),
        "span_id": a.span_id,
        "create_time_ms": a.create_time_ms,
        "last_update_time_ms": a.last_update_time_ms,
    }
