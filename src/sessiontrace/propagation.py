"""Forward the request's user and session to the services the app calls (opt-in).

Nothing is forwarded unless the app asks, client by client. The next service's
sessiontrace middleware then continues the same user and session:

>>> client = httpx.Client(event_hooks=sessiontrace.propagation.httpx_event_hooks(
...     hosts=["billing.internal"]))
>>> sessiontrace.propagation.mount_requests(session, hosts=["billing.internal"])
>>> headers = sessiontrace.propagation.outgoing_headers()   # any other client

.. warning:: These headers are analytics labels, not credentials: the receiving
   service must not authorize on them (anyone can send any ``X-User-ID``). Send them
   only to your own services: ``hosts`` limits a client to those hosts, so a call to
   a third-party API does not hand it your users' ids. The value forwarded is the one
   in context, i.e. already hashed when the middleware hashes user ids
   (``user_id_hmac_key``); do not hash again downstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._context import _user_session

__all__ = ["httpx_event_hooks", "mount_requests", "outgoing_headers"]


def outgoing_headers(
    *, user_header: str = "X-User-ID", session_header: str = "X-Session-ID"
) -> dict[str, str]:
    """The headers that carry the ids in force here (empty outside a request)."""
    current = _user_session.get()
    headers: dict[str, str] = {}
    if current.user_id is not None:
        headers[user_header] = current.user_id
    if current.session_id is not None:
        headers[session_header] = current.session_id
    return headers


def _host_filter(hosts: Iterable[str] | None) -> Callable[[str | None], bool]:
    if hosts is None:
        return lambda host: True
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names, not a single str")
    allowed = frozenset(h.lower() for h in hosts)
    return lambda host: host is not None and host.lower() in allowed


def _add(headers: Any, user_header: str, session_header: str) -> None:
    # What the app set on the request itself wins.
    for name, value in outgoing_headers(
        user_header=user_header, session_header=session_header
    ).items():
        if name not in headers:
            headers[name] = value


def httpx_event_hooks(
    *,
    hosts: Iterable[str] | None = None,
    async_client: bool = False,
    user_header: str = "X-User-ID",
    session_header: str = "X-Session-ID",
) -> dict[str, list[Callable[..., Any]]]:
    """``event_hooks`` for ``httpx.Client`` (``async_client=True``: ``AsyncClient``)
    that add the ids to each request to one of ``hosts`` (``None``: every host)."""
    wanted = _host_filter(hosts)

    def hook(request: Any) -> None:
        if wanted(request.url.host):
            _add(request.headers, user_header, session_header)

    async def async_hook(request: Any) -> None:
        hook(request)

    return {"request": [async_hook if async_client else hook]}


def mount_requests(
    session: Any,
    *,
    hosts: Iterable[str] | None = None,
    user_header: str = "X-User-ID",
    session_header: str = "X-Session-ID",
) -> Any:
    """Mount adapters on a ``requests.Session`` that add the ids to each request to
    one of ``hosts`` (``None``: every host); returns the session."""
    from urllib.parse import urlsplit

    from requests.adapters import HTTPAdapter

    wanted = _host_filter(hosts)

    class PropagatingAdapter(HTTPAdapter):
        def add_headers(self, request: Any, **kwargs: Any) -> None:
            super().add_headers(request, **kwargs)
            if wanted(urlsplit(request.url).hostname):
                _add(request.headers, user_header, session_header)

    session.mount("http://", PropagatingAdapter())
    session.mount("https://", PropagatingAdapter())
    return session
