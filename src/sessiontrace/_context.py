"""Request-scoped user/session defaults (the Openlayer pattern) and thread propagation.

One ContextVar holds an immutable ``UserSession`` node. Each ``set`` pushes a node
whose ``parent`` is the enclosing value, so ``clear_user_session_context()``
restores what was there before instead of wiping it, and because ContextVars are
copied per asyncio task / per ``Context.run``, concurrent requests never see each
other's values.

The ids are analytics labels. They usually come from client headers and must
never be used for authorization.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Final, ParamSpec, TypeVar

__all__ = [
    "UNSET",
    "ContextThreadPoolExecutor",
    "UserSession",
    "clear_user_session_context",
    "get_user_session_context",
    "set_user_session_context",
    "user_session",
    "wrap_with_context",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Unset:
    """Sentinel for "argument not given" where ``None`` is a meaningful value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final[Any] = _Unset()


class UserSession:
    """The user and session defaults in force; immutable."""

    __slots__ = ("parent", "request_id", "reserved_trace_id", "session_id", "user_id")

    def __init__(
        self,
        user_id: str | None,
        session_id: str | None,
        parent: UserSession | None = None,
        request_id: str | None = None,
        reserved_trace_id: list[str] | None = None,
    ) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.parent = parent
        # The client's request id (X-Request-ID), set only by the middleware; it
        # becomes ``client_request_id`` of every trace started in the request.
        self.request_id = request_id
        # ``echo_trace_id=True``: the id the middleware announced in ``X-Trace-ID``,
        # in a one-item list shared by every node set below the request's (and every
        # copy of its context: background tasks, threads). The first root trace
        # started under it pops it and takes it as its id; later roots find it empty.
        self.reserved_trace_id = reserved_trace_id

    def __repr__(self) -> str:
        return f"UserSession(user_id={self.user_id!r}, session_id={self.session_id!r})"


_EMPTY: Final = UserSession(None, None)
_user_session: contextvars.ContextVar[UserSession] = contextvars.ContextVar(
    "sessiontrace_user_session", default=_EMPTY
)


def _check_id(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


def set_user_session_context(user_id: str | None = UNSET, session_id: str | None = UNSET) -> None:
    """Set the default user and session for every trace started from here on.

    An argument left out keeps the enclosing value; an explicit ``None`` unsets it.
    Pair every call with :func:`clear_user_session_context`, which restores the
    value that was in force before, or use :func:`user_session` instead.

    >>> set_user_session_context(user_id="user-456", session_id="session-123")
    """
    current = _user_session.get()
    user = current.user_id if user_id is UNSET else _check_id("user_id", user_id)
    session = current.session_id if session_id is UNSET else _check_id("session_id", session_id)
    _user_session.set(
        UserSession(user, session, current, current.request_id, current.reserved_trace_id)
    )


def clear_user_session_context() -> None:
    """Undo the latest :func:`set_user_session_context`, restoring the enclosing value.

    Clearing when nothing was set is a no-op.
    """
    current = _user_session.get()
    if current.parent is not None:
        _user_session.set(current.parent)


def get_user_session_context() -> tuple[str | None, str | None]:
    """Return ``(user_id, session_id)`` as new traces would see them now."""
    current = _user_session.get()
    return current.user_id, current.session_id


@contextmanager
def user_session(user_id: str | None = UNSET, session_id: str | None = UNSET) -> Iterator[None]:
    """Set user/session defaults for the ``with`` block; restored on exit, even on error.

    >>> with user_session(user_id="user-1", session_id="s-1"):
    ...     my_app("hello")
    """
    current = _user_session.get()
    user = current.user_id if user_id is UNSET else _check_id("user_id", user_id)
    session = current.session_id if session_id is UNSET else _check_id("session_id", session_id)
    token = _user_session.set(
        UserSession(user, session, current, current.request_id, current.reserved_trace_id)
    )
    try:
        yield
    finally:
        _user_session.reset(token)


def _set_request_context(
    user_id: str | None, session_id: str | None, request_id: str | None = None
) -> contextvars.Token[UserSession]:
    """Middleware entry: set both ids (value or None); undo with ``_reset_request_context``."""
    return _user_session.set(UserSession(user_id, session_id, _user_session.get(), request_id))


def _reset_request_context(token: contextvars.Token[UserSession]) -> None:
    _user_session.reset(token)


# -- carrying the context into threads ------------------------------------------------
#
# ThreadPoolExecutor.submit, threading.Thread and loop.run_in_executor run the target
# in the thread's own context, so neither the user/session default nor the current
# span reaches it. These helpers run the target in a copy of the caller's context.


def wrap_with_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Return ``fn`` bound to a copy of the current context (user, session, span).

    >>> threading.Thread(target=wrap_with_context(work)).start()
    >>> executor.submit(wrap_with_context(work), arg)
    >>> await loop.run_in_executor(None, wrap_with_context(work))
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in a copy of the submitter's context."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)
