"""What the ASGI and WSGI middleware share: options, header validation, ids.

Everything that can be decided once is decided in ``IdPolicy.__init__``; the
per-request methods do a dict lookup per header, a regex match per accepted
value and nothing else unless an option asks for more.

Security: the ids are read from client headers (or an app resolver). They are
labels for analytics. Anyone can send any ``X-User-ID``; never use them for
authorization. Invalid values are dropped (or rejected) by length, characters
and multiplicity, and are never written to logs.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Final

from .. import _runtime, _tracing
from .._context import UserSession, _user_session

__all__ = [
    "DEFAULT_ALLOWED_CHARS",
    "REQUEST_KEY",
    "IdPolicy",
    "TRACE_ID_HEADER",
    "RequestNode",
    "Resolved",
    "logger",
    "outside_requests",
    "reserve_trace_id",
    "serving",
]

logger = logging.getLogger("sessiontrace.middleware")


class _WarningBudget:
    """At most one warning per key every ``interval`` seconds; counts the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def take(self, key: tuple[str, str]) -> int | None:
        """``None``: stay quiet. Otherwise log now, mentioning this many held back."""
        now = time.monotonic()
        with self._lock:
            last, held = self._state.get(key, (-1e18, 0))
            if now - last < self.interval:
                self._state[key] = (last, held + 1)
                return None
            self._state[key] = (now, 0)
            return held


_warn_budget = _WarningBudget()

#: Letters, digits and ``- _ . : @ + = / ~``: UUIDs, emails, prefixed ids, base64url.
DEFAULT_ALLOWED_CHARS: Final = string.ascii_letters + string.digits + "-_.:@+=/~"

_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Why a value was dropped. The value itself is never logged or echoed.
TOO_LONG: Final = "too long"
BAD_CHARS: Final = "disallowed characters"
MULTIPLE: Final = "multiple values"
RESOLVER: Final = "resolver returned a non-string"

Resolver = Callable[[Any], Any]


def _header_name(option: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{option} must be a str or None, not {type(value).__name__}")
    if not _HEADER_TOKEN.fullmatch(value):
        raise ValueError(f"{option} is not a valid HTTP header name: {value!r}")
    return value


class RequestNode(UserSession):
    """The context node a middleware sets for a request.

    Which request it belongs to is never decided from the context: servers do not keep
    it clean. uvicorn, for one, starts a keep-alive connection's next request in a copy
    of the context its previous request left behind (a read resumed, or a pipelined
    request parsed, from inside that request's task; uvicorn issue 2167). The request
    itself says whether a middleware of ours already acts for it: the outer instance
    puts its node in the ASGI scope or WSGI environ under :data:`REQUEST_KEY`, and a
    sub-app's copy of the scope carries it.
    """

    __slots__ = ()


#: The scope / environ key under which the acting middleware leaves its node.
REQUEST_KEY: Final = "sessiontrace.request"


def serving(marked: UserSession | None) -> bool:
    """Whether an outer instance serves this request: ``marked`` (the node it left under
    :data:`REQUEST_KEY`) is in force here, at the top or below what the app set.

    An inner instance (mounted twice, on a sub-app) then passes the request on. A mark
    whose node is no longer in force (the app called again with the same scope, after
    the outer instance returned) does not count.
    """
    current: UserSession | None = _user_session.get() if marked is not None else None
    while current is not None:
        if current is marked:
            return True
        current = current.parent
    return False


def outside_requests(node: UserSession) -> UserSession:
    """The value in force outside every request: what a new request's node stands on.

    In a clean context that is ``node`` itself. In one copied from an earlier request
    it is what stood below that request's node, so neither the earlier ids nor what
    its app set on top of them reach the new request.
    """
    base = node
    current: UserSession | None = node
    while current is not None:
        if type(current) is RequestNode:
            base = current.parent or base
        current = current.parent
    return base


#: The response header naming the trace a request produced (``echo_trace_id=True``).
TRACE_ID_HEADER: Final = "X-Trace-ID"


def reserve_trace_id() -> list[str]:
    """A fresh trace id for the request's first root trace, as its one-item holder.

    Same format as every trace id (``_tracing.ids``, which tests may replace); the
    node keeps the list, and ``_tracing._open_span`` pops it at most once.
    """
    return [_tracing.ids["trace"]()]


def _new_session_id() -> str:
    return secrets.token_hex(16)


class Resolved:
    """The ids accepted for one request, after validation and the options."""

    __slots__ = ("echo_session", "error", "request_id", "session_id", "user_id")

    def __init__(
        self,
        user_id: str | None,
        session_id: str | None,
        request_id: str | None,
        echo_session: bool,
        error: str | None,
    ) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.request_id = request_id
        self.echo_session = echo_session
        #: In strict mode, the reason to answer 400 (no client value in it).
        self.error = error

    def __repr__(self) -> str:
        return (
            f"Resolved(user_id={self.user_id!r}, session_id={self.session_id!r}, "
            f"request_id={self.request_id!r})"
        )


class IdPolicy:
    """The validated options of one middleware instance."""

    def __init__(
        self,
        *,
        user_header: str | None,
        session_header: str | None,
        request_id_header: str | None,
        resolver: Resolver | None,
        max_length: int,
        allowed_chars: str,
        strict: bool,
        echo_session_id: bool,
        generate_session_id: bool | Callable[[], str],
        user_id_hmac_key: bytes | str | None,
        exclude_paths: Iterable[str],
        trace_requests: bool,
        max_body_bytes: int,
        echo_trace_id: bool = False,
    ) -> None:
        self.user_header = _header_name("user_header", user_header)
        self.session_header = _header_name("session_header", session_header)
        self.request_id_header = _header_name("request_id_header", request_id_header)
        if resolver is not None and not callable(resolver):
            raise TypeError(f"resolver must be callable, not {type(resolver).__name__}")
        self.resolver = resolver
        self.resolver_is_async = resolver is not None and (
            inspect.iscoroutinefunction(resolver)
            or inspect.iscoroutinefunction(type(resolver).__call__)
        )
        names = [
            n.lower() for n in (self.user_header, self.session_header, self.request_id_header) if n
        ]
        if len(set(names)) != len(names):
            raise ValueError("user_header, session_header and request_id_header must differ")
        if self.user_header is None and self.session_header is None and resolver is None:
            raise ValueError("nothing to read: set user_header, session_header or resolver")
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length must be an int, not {type(max_length).__name__}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        if not isinstance(allowed_chars, str):
            raise TypeError(f"allowed_chars must be a str, not {type(allowed_chars).__name__}")
        if not allowed_chars:
            raise ValueError("allowed_chars must not be empty")
        bad = sorted({c for c in allowed_chars if not c.isprintable() or c.isspace()})
        if bad:
            raise ValueError(f"allowed_chars must not contain whitespace or controls: {bad!r}")
        self.comma_allowed = "," in allowed_chars
        # For the ASGI fast path: ``value.translate(byte_table)`` maps each allowed
        # byte to "a" and any other to "0", so ``.isalpha()`` checks a raw header
        # value in two C passes without a Python-level loop (header bytes decode as
        # latin-1).
        try:
            allowed_bytes = frozenset(allowed_chars.encode("latin-1"))
        except UnicodeEncodeError:
            self.byte_table: bytes | None = None
        else:
            self.byte_table = bytes(b"a"[0] if b in allowed_bytes else b"0"[0] for b in range(256))
        # Accepted bytes then decode the same as UTF-8 (faster) or need latin-1.
        self.header_encoding = "utf-8" if allowed_chars.isascii() else "latin-1"
        self._valid = re.compile(f"[{re.escape(allowed_chars)}]+").fullmatch
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, not {type(strict).__name__}")
        self.strict = strict
        if not isinstance(echo_session_id, bool):
            raise TypeError(f"echo_session_id must be a bool, not {type(echo_session_id).__name__}")
        self.echo_session_id = echo_session_id
        self.echo_header = (self.session_header or "X-Session-ID").lower().encode("latin-1")
        if generate_session_id is True:
            self.generate: Callable[[], str] | None = _new_session_id
        elif generate_session_id is False:
            self.generate = None
        elif callable(generate_session_id):
            self.generate = generate_session_id
        else:
            raise TypeError(
                "generate_session_id must be a bool or a callable returning a str, "
                f"not {type(generate_session_id).__name__}"
            )
        self.pseudonymize = _make_pseudonymizer(user_id_hmac_key)
        if isinstance(exclude_paths, str):
            raise TypeError("exclude_paths must be an iterable of paths, not a single str")
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in exclude_paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"exclude_paths entries must be paths starting with '/': {path!r}")
            if path.endswith("*"):
                prefixes.append(path[:-1])
            else:
                exact.add(path)
        self.exclude_exact = frozenset(exact)
        self.exclude_prefixes = tuple(prefixes)
        self.excludes = bool(exact or prefixes)
        if not isinstance(trace_requests, bool):
            raise TypeError(f"trace_requests must be a bool, not {type(trace_requests).__name__}")
        self.trace_requests = trace_requests
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise TypeError(f"max_body_bytes must be an int, not {type(max_body_bytes).__name__}")
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        if not isinstance(echo_trace_id, bool):
            raise TypeError(f"echo_trace_id must be a bool, not {type(echo_trace_id).__name__}")
        self.echo_trace_id = echo_trace_id
        # Nothing but the two ids and no option: the hot path can skip all the rest.
        self.plain = not (
            resolver
            or self.generate
            or echo_session_id
            or self.pseudonymize
            or strict
            or echo_trace_id
        )

    def excluded(self, path: str) -> bool:
        return path in self.exclude_exact or path.startswith(self.exclude_prefixes)

    # -- one value ------------------------------------------------------------------

    def check(self, raw: str, header: str, multiple: bool = False) -> tuple[str | None, str | None]:
        """``(value, None)`` when valid, ``(None, reason)`` when not, ``(None, None)`` if empty."""
        value = raw.strip()
        if not value:
            return None, None
        if multiple or ("," in value and not self.comma_allowed):
            reason = MULTIPLE
        elif len(value) > self.max_length:
            reason = TOO_LONG
        elif self._valid(value) is None:
            reason = BAD_CHARS
        else:
            return value, None
        # Length only: the value is client input and may be crafted for log injection.
        # Rate-limited per header and reason, so one client cannot flood the logs.
        held_back = _warn_budget.take((header, reason))
        if held_back is not None:
            logger.warning(
                "sessiontrace: ignored the %s header (%s, %d characters)%s%s",
                header,
                reason,
                len(raw),
                "; answering 400" if self.strict else "",
                f"; {held_back} more like it since the last warning" if held_back else "",
            )
        return None, reason

    # -- the whole request ----------------------------------------------------------

    def finish(
        self,
        user_raw: str | None,
        session_raw: str | None,
        request_raw: str | None,
        user_multi: bool,
        session_multi: bool,
        resolved: Any,
    ) -> Resolved:
        """Validate what the headers (and resolver) gave; apply the options."""
        error: str | None = None
        user = session = None
        r_user = r_session = None
        if resolved is not None:
            r_user, r_session = self._from_resolver(resolved)
        if r_user is not None:
            user = r_user
        elif user_raw is not None and self.user_header is not None:
            user, reason = self.check(user_raw, self.user_header, user_multi)
            if reason is not None:
                error = f"invalid {self.user_header} header: {reason}"
        if r_session is not None:
            session = r_session
        elif session_raw is not None and self.session_header is not None:
            session, reason = self.check(session_raw, self.session_header, session_multi)
            if reason is not None and error is None:
                error = f"invalid {self.session_header} header: {reason}"
        request_id = None
        if request_raw is not None and self.request_id_header is not None:
            request_id, reason = self.check(request_raw, self.request_id_header)
            if reason is not None and error is None:
                error = f"invalid {self.request_id_header} header: {reason}"
        echo = self.echo_session_id and session is not None
        if session is None and self.generate is not None:
            session = self._generated()
            echo = session is not None
        if user is not None and self.pseudonymize is not None:
            user = self.pseudonymize(user)
        return Resolved(user, session, request_id, echo, error if self.strict else None)

    def _from_resolver(self, resolved: Any) -> tuple[str | None, str | None]:
        try:
            user, session = resolved
        except (TypeError, ValueError):
            logger.warning(
                "sessiontrace: the resolver must return (user_id, session_id) or None, "
                "not a %s; using the headers",
                type(resolved).__name__,
            )
            _runtime.count_internal_error("middleware_resolver")
            return None, None
        out: list[str | None] = []
        for label, value in (("user id", user), ("session id", session)):
            if value is None:
                out.append(None)
            elif not isinstance(value, str):
                logger.warning(
                    "sessiontrace: the resolver returned a %s %s; ignored",
                    type(value).__name__,
                    label,
                )
                out.append(None)
            else:
                # The app's own value: same rules, never a 400 (not the client's fault).
                checked, _ = self.check(value, f"resolver {label}")
                out.append(checked)
        return out[0], out[1]

    def _generated(self) -> str | None:
        assert self.generate is not None
        try:
            value = self.generate()
        except Exception:
            logger.exception("sessiontrace: generate_session_id failed; no session id")
            _runtime.count_internal_error("middleware_generate_session_id")
            return None
        if not isinstance(value, str) or not value:
            logger.warning("sessiontrace: generate_session_id must return a non-empty str")
            _runtime.count_internal_error("middleware_generate_session_id")
            return None
        return value

    def call_resolver(self, request: Any) -> Any:
        """The resolver's answer, or ``None`` when it failed (the app is not affected)."""
        assert self.resolver is not None
        try:
            return self.resolver(request)
        except Exception:
            logger.exception("sessiontrace: the id resolver failed; using the headers")
            _runtime.count_internal_error("middleware_resolver")
            return None


def _make_pseudonymizer(key: bytes | str | None) -> Callable[[str], str] | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes):
        raise TypeError(f"user_id_hmac_key must be bytes, str or None, not {type(key).__name__}")
    if len(key) < 16:
        raise ValueError("user_id_hmac_key must be at least 16 bytes (use secrets.token_bytes(32))")
    digest = hashlib.sha256

    # Cached because the same users come back; it lives in memory only, never logged.
    @lru_cache(maxsize=4096)
    def pseudonymize(user_id: str) -> str:
        mac = hmac.new(key, user_id.encode("utf-8"), digest).hexdigest()
        return f"u-{mac[:32]}"

    return pseudonymize
