"""Openlayer: our ids as its request-scoped user and session, set and reset by token.

Openlayer reads its user and session when a trace's root step *ends*, from two
ContextVars that its ``set_user_session_context`` sets without a token (and its
``clear_user_session_context`` wipes, outer value included). The bridge sets those
two ContextVars for the request and resets them by token, around the whole request
including a streamed body, so an outer value comes back and the next request starts
clean (both are set, to a value or ``None``). They are module-private names: the
bridge checks they are ContextVars at ``enable()`` and otherwise refuses clearly.
"""

from __future__ import annotations

import contextvars
from typing import Any

from ._base import Bridge

__all__ = ["OpenlayerBridge"]


class OpenlayerBridge(Bridge):
    name = "openlayer"
    per_request = True

    def __init__(self) -> None:
        self._user: contextvars.ContextVar[Any] | None = None
        self._session: contextvars.ContextVar[Any] | None = None

    def install(self, **options: Any) -> None:
        try:
            from openlayer.lib.tracing import context
        except ImportError as exc:
            raise ImportError(
                "the openlayer bridge needs openlayer: pip install 'sessiontrace[openlayer]'"
            ) from exc
        user = getattr(context, "_user_id_context", None)
        session = getattr(context, "_session_id_context", None)
        if not isinstance(user, contextvars.ContextVar) or not isinstance(
            session, contextvars.ContextVar
        ):
            raise RuntimeError(
                "this openlayer version keeps its user/session context elsewhere; "
                "the openlayer bridge supports openlayer 0.36"
            )
        self._user, self._session = user, session

    def enter(self, user_id: str | None, session_id: str | None) -> Any:
        # Both, a value or None: a request without ids never inherits another's.
        assert self._user is not None and self._session is not None
        return self._user.set(user_id), self._session.set(session_id)

    def exit(self, token: Any) -> None:
        user_token, session_token = token
        assert self._user is not None and self._session is not None
        self._session.reset(session_token)
        self._user.reset(user_token)
