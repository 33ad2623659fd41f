"""Who may talk to the server, and what a page may do once loaded.

- **Host check.** On a loopback bind only ``localhost`` / ``127.0.0.1`` / ``[::1]``
  Host headers are served, so a web page cannot reach the UI by DNS rebinding.
- **Token.** With a token (required for any non-loopback bind) every request but
  ``/login`` and ``/static`` must carry ``Authorization: Bearer <token>`` (scripts,
  the HTTP exporter) or the session cookie a one-time login link set (browsers).
  The cookie is HttpOnly and SameSite=Strict; link codes are single-use and expire.
- **Cross-site writes.** A state-changing request that is not bearer-authenticated
  must come from our own pages: its ``X-CSRF-Token`` header must equal the
  ``sessiontrace_csrf`` cookie (double submit) and any ``Origin`` must be ours.
  Ingest from the exporter on an open loopback server needs neither, but must be
  ``application/json`` (which no cross-site form can send without a preflight
  this server never grants); OTLP at ``/v1/traces`` likewise, as
  ``application/json`` or ``application/x-protobuf``.
- **Content.** Trace content is untrusted (LLM output is full of HTML). Pages only
  ever insert it as text; the Content-Security-Policy below forbids inline script
  and any other origin as a second line of defence.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "LOOPBACK_HOSTS",
    "SESSION_COOKIE",
    "Auth",
    "SecurityMiddleware",
    "is_loopback",
]

SESSION_COOKIE = "sessiontrace_session"
CSRF_COOKIE = "sessiontrace_csrf"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PREFIXES = ("/static/", "/login")


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    return host.startswith("127.") and host.replace(".", "").isdigit()


def _digest(value: str) -> str:
    # Secrets are kept and looked up by hash, so lookups leak nothing useful by timing.
    return hashlib.sha256(value.encode()).hexdigest()


class Auth:
    """The server's token, its one-time login codes and the browser sessions they opened."""

    def __init__(
        self,
        token: str | None,
        *,
        code_ttl_seconds: float = 24 * 3600,
        max_sessions: int = 1000,
    ) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("the token must be at least 16 characters long")
        self.token = token
        self._code_ttl = code_ttl_seconds
        self._codes: dict[str, float] = {}
        self._sessions: OrderedDict[str, None] = OrderedDict()
        self._max_sessions = max_sessions
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return self.token is not None

    def check_bearer(self, header: str | None) -> bool:
        if self.token is None or not header:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    def new_login_code(self) -> str:
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._codes = {k: t for k, t in self._codes.items() if t > now}
            self._codes[_digest(code)] = now + self._code_ttl
        return code

    def redeem(self, code: str) -> str | None:
        """Consume a login code; a new session id, or ``None`` if unknown/used/expired."""
        with self._lock:
            expires = self._codes.pop(_digest(code), None)
            if expires is None or expires < time.monotonic():
                return None
            session = secrets.token_urlsafe(32)
            self._sessions[_digest(session)] = None
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        return session

    def check_session(self, value: str | None) -> bool:
        if not value:
            return False
        with self._lock:
            return _digest(value) in self._sessions


_WANTED = frozenset(
    {b"host", b"authorization", b"cookie", b"origin", b"sec-fetch-site", b"content-type"}
    | {CSRF_HEADER.encode()}
)


def _request_headers(scope: Scope) -> tuple[dict[str, str], dict[str, str]]:
    """The headers the checks read (first of each name) and the cookies, in one pass."""
    found: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        if name not in _WANTED:
            continue
        value = raw_value.decode("latin-1")
        if name == b"cookie":
            for part in value.split(";"):
                key, sep, val = part.strip().partition("=")
                if sep:
                    cookies.setdefault(key, val)
        else:
            found.setdefault(name.decode(), value)
    return found, cookies


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class SecurityMiddleware:
    """Pure ASGI: host check, authentication, cross-site write guard, security headers.

    Everything that does not depend on the request is built once, here; a request
    costs one pass over its headers.
    """

    def __init__(
        self, app: ASGIApp, *, auth: Auth, allowed_hosts: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.auth = auth
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers, cookies = _request_headers(scope)
        refusal = self._refusal(scope, headers, cookies)
        set_csrf = CSRF_COOKIE not in cookies

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = [*message.get("headers", ()), *_SECURITY_HEADERS]
                if set_csrf and _is_html(raw):
                    cookie = f"{CSRF_COOKIE}={secrets.token_urlsafe(24)}; Path=/; SameSite=Strict"
                    raw.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": raw}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(
        self, scope: Scope, headers: dict[str, str], cookies: dict[str, str]
    ) -> Response | None:
        path: str = scope["path"]
        host = _host_name(headers.get("host", "")).lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return PlainTextResponse("Invalid Host header", status_code=400)
        bearer = self.auth.check_bearer(headers.get("authorization"))
        if (
            self.auth.required
            and not bearer
            and not path.startswith(_PUBLIC_PREFIXES)
            and not self.auth.check_session(cookies.get(SESSION_COOKIE))
        ):
            return _unauthorized(path)
        if scope["method"] in _UNSAFE_METHODS and not bearer:
            return _cross_site_refusal(path, headers, cookies)
        return None


def _cross_site_refusal(
    path: str, headers: dict[str, str], cookies: dict[str, str]
) -> Response | None:
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return _forbidden("cross-origin request refused")
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return _forbidden("cross-site request refused")
    if path == "/api/ingest":
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return JSONResponse({"error": "ingest needs Content-Type: application/json"}, 415)
        return None
    if path == "/v1/traces":
        # OTLP's two types: neither can be sent cross-site without a preflight
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/x-protobuf"):
            return JSONResponse({"code": 3, "message": "unsupported Content-Type"}, 415)
        return None
    sent = headers.get(CSRF_HEADER, "")
    expected = cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _forbidden("missing or wrong CSRF token; reload the page")
    return None


def _forbidden(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=403)


def _unauthorized(path: str) -> Response:
    if path.startswith(("/api/", "/v1/")):
        return JSONResponse(
            {"error": "authentication required: send Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return PlainTextResponse(
        "This sessiontrace server needs a login. Open the one-time login link that "
        "`sessiontrace ui` printed, or ask for a new one with:\n"
        "  curl -X POST -H 'Authorization: Bearer <token>' <server>/api/login-links\n",
        status_code=401,
    )


def _is_html(raw: list[Any]) -> bool:
    for name, value in raw:
        if name.lower() == b"content-type":
            return bool(value.startswith(b"text/html"))
    return False
