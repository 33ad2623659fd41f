"""Settings: one table, precedence keyword > environment variable > default.

Nothing here runs at import time; ``Settings.resolve`` is called on first use or by
``sessiontrace.configure``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "ENV_VARS",
    "Settings",
    "StoreLocation",
    "hide_password",
    "parse_tracking_uri",
    "redact_uri",
]

DEFAULT_TRACKING_URI = "sqlite:///sessiontrace.db"

logger = logging.getLogger("sessiontrace")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Param:
    env: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


# The one table of settings. ``configure(name=...)`` beats ``env``, which beats ``default``.
PARAMS: dict[str, _Param] = {
    "tracking_uri": _Param(
        "SESSIONTRACE_TRACKING_URI",
        DEFAULT_TRACKING_URI,
        str,
        "Where traces go: sqlite:///relative.db, sqlite:////absolute.db, a path, "
        "postgresql://user@host/database (sessiontrace[postgres]), or "
        "http(s)://host:port of a sessiontrace server.",
    ),
    "tracking_token": _Param(
        "SESSIONTRACE_TRACKING_TOKEN",
        None,
        str,
        "Bearer token sent to an http(s) tracking server started with --token.",
    ),
    "environment": _Param(
        "SESSIONTRACE_ENVIRONMENT",
        None,
        str,
        "Deployment environment; recorded as mlflow.source.type (e.g. PRODUCTION).",
    ),
    "app_version": _Param(
        "SESSIONTRACE_APP_VERSION",
        None,
        str,
        "Recorded as the app_version metadata key.",
    ),
    "deployment_id": _Param(
        "SESSIONTRACE_DEPLOYMENT_ID",
        None,
        str,
        "Recorded as the deployment_id metadata key.",
    ),
    "max_queue_size": _Param(
        "SESSIONTRACE_MAX_QUEUE_SIZE",
        100_000,
        _positive_int,
        "Finished traces held in memory for the writer before callers are slowed down.",
    ),
    "max_block_seconds": _Param(
        "SESSIONTRACE_MAX_BLOCK_SECONDS",
        5.0,
        _non_negative_float,
        "How long a caller waits for room in a full queue (healthy store) before the "
        "trace is dropped and counted.",
    ),
    "batch_size": _Param(
        "SESSIONTRACE_BATCH_SIZE",
        2_000,
        _positive_int,
        "Most traces written in one transaction.",
    ),
    "flush_interval": _Param(
        "SESSIONTRACE_FLUSH_INTERVAL",
        0.2,
        _positive_float,
        "Seconds between writer wake-ups when the queue is not full.",
    ),
    "shutdown_timeout": _Param(
        "SESSIONTRACE_SHUTDOWN_TIMEOUT",
        10.0,
        _non_negative_float,
        "Seconds the exit hook waits for queued traces to be written.",
    ),
    "otlp_endpoint": _Param(
        "SESSIONTRACE_OTLP_ENDPOINT",
        None,
        str,
        "Also send traces over OTLP/HTTP to this traces URL (.../v1/traces); else "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces "
        "(sessiontrace[otlp]).",
    ),
    "otlp_headers": _Param(
        "SESSIONTRACE_OTLP_HEADERS",
        None,
        str,
        "Headers for otlp_endpoint, k1=v1,k2=v2 (else OTEL_EXPORTER_OTLP_TRACES_HEADERS, "
        "else OTEL_EXPORTER_OTLP_HEADERS); a dict in configure().",
    ),
    "otlp_only": _Param(
        "SESSIONTRACE_OTLP_ONLY",
        None,
        str,
        "true: traces go only to the OTLP targets, not to tracking_uri.",
    ),
    "prices": _Param(
        "SESSIONTRACE_PRICES",
        None,
        str,
        "A JSON or TOML file of model prices (USD per million tokens), checked before "
        "genai-prices.",
    ),
}

ENV_VARS: dict[str, str] = {name: p.env for name, p in PARAMS.items()}


@dataclasses.dataclass(frozen=True)
class Settings:
    tracking_uri: str
    tracking_token: str | None = dataclasses.field(repr=False)  # a secret
    environment: str | None
    app_version: str | None
    deployment_id: str | None
    max_queue_size: int
    max_block_seconds: float
    batch_size: int
    flush_interval: float
    shutdown_timeout: float
    prices: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    otlp_endpoint: str | None = None
    # Header values are often secrets (API keys): never in repr.
    otlp_headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    otlp_targets: tuple[Any, ...] = dataclasses.field(default=(), repr=False)
    otlp_only: bool = False

    @property
    def otlp_target_list(self) -> tuple[Any, ...]:
        """Every OTLP target: ``otlp_endpoint`` (with ``otlp_headers``) and ``otlp_targets``."""
        if not self.otlp_endpoint:
            return self.otlp_targets
        from ._export._otlp import OTLPTarget

        return (OTLPTarget(self.otlp_endpoint, dict(self.otlp_headers)), *self.otlp_targets)

    def __repr__(self) -> str:
        # A PostgreSQL tracking URI may carry a password, and settings get logged.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        values["tracking_uri"] = redact_uri(self.tracking_uri)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in values.items())})"

    @classmethod
    def resolve(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        lenient: bool = False,
    ) -> Settings:
        """Build settings from keyword overrides, then the environment, then defaults.

        Bad values raise ``ValueError``/``TypeError``. With ``lenient`` (used when the
        settings are resolved lazily, inside the app's first traced call), a bad
        environment variable is reported through ``logging`` and its default used
        instead, because tracing must never be what breaks the app.
        """
        overrides = dict(overrides or {})
        environ = os.environ if environ is None else environ
        metadata = overrides.pop("metadata", None) or {}
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        otlp = _otlp_overrides(overrides)
        unknown = set(overrides) - set(PARAMS)
        if unknown:
            raise TypeError(f"configure() got unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, param in PARAMS.items():
            if overrides.get(name) is not None:
                raw: Any = overrides[name]
                if param.parse is not str:
                    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                        raise TypeError(f"{name} must be a number, not {type(raw).__name__}")
                    raw = _parse(param, str(raw), name)
                elif not isinstance(raw, str):
                    raise TypeError(f"{name} must be a str, not {type(raw).__name__}")
                values[name] = raw
            elif param.env in environ:
                try:
                    values[name] = _parse(param, environ[param.env], param.env)
                    if name == "tracking_uri":
                        parse_tracking_uri(values[name])
                except ValueError as exc:
                    if not lenient:
                        raise
                    logger.error("sessiontrace ignores %s; using the default", exc)
                    values[name] = param.default
            else:
                values[name] = param.default
        values.update(_resolve_otlp(values, otlp, environ, lenient=lenient))
        settings = cls(**values, metadata={str(k): str(v) for k, v in metadata.items()})
        parse_tracking_uri(settings.tracking_uri)  # fail at configure time, not at first trace
        return settings


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _otlp_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Take the OTLP keywords whose types PARAMS cannot check (dicts, lists, bools)."""
    out: dict[str, Any] = {}
    headers = overrides.pop("otlp_headers", None)
    if headers is not None:
        if isinstance(headers, str):
            out["headers"] = headers
        elif isinstance(headers, Mapping):
            out["headers"] = {str(k): str(v) for k, v in headers.items()}
        else:
            raise TypeError(f"otlp_headers must be a dict, not {type(headers).__name__}")
    only = overrides.pop("otlp_only", None)
    if only is not None:
        if not isinstance(only, bool):
            raise TypeError(f"otlp_only must be a bool, not {type(only).__name__}")
        out["only"] = only
    targets = overrides.pop("otlp_targets", None)
    if targets is not None:
        from ._export._otlp import OTLPTarget

        if isinstance(targets, (str, bytes)) or not isinstance(targets, (list, tuple)):
            raise TypeError("otlp_targets must be a list of OTLPTarget (or dicts)")
        out["targets"] = tuple(
            t
            if isinstance(t, OTLPTarget)
            else OTLPTarget(**t)
            if isinstance(t, Mapping)
            else _bad(t)
            for t in targets
        )
    return out


def _bad(target: Any) -> Any:
    raise TypeError(f"otlp_targets items must be OTLPTarget or dict, not {type(target).__name__}")


def _resolve_otlp(
    values: dict[str, Any], given: Mapping[str, Any], environ: Mapping[str, str], *, lenient: bool
) -> dict[str, Any]:
    """The OTLP settings: keywords, then SESSIONTRACE_OTLP_*, then the standard OTEL_* vars."""
    from ._export._otlp import OTLPTarget, parse_headers

    endpoint = values.pop("otlp_endpoint")
    raw_headers = values.pop("otlp_headers")
    raw_only = values.pop("otlp_only")
    out: dict[str, Any] = {"otlp_targets": given.get("targets", ())}
    try:
        if endpoint is None:
            if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
                endpoint = environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        headers: Any = given.get("headers", raw_headers)
        if headers is None:
            headers = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
                "OTEL_EXPORTER_OTLP_HEADERS"
            )
        if isinstance(headers, str):
            headers = parse_headers(headers)
        only = given.get("only")
        if only is None:
            text = (raw_only or "").strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError(f"SESSIONTRACE_OTLP_ONLY: expected true or false, got {text!r}")
            only = text in _TRUE
        if endpoint:
            OTLPTarget(endpoint, headers or {})  # a bad URL or header fails here
        if only and not endpoint and not out["otlp_targets"]:
            raise ValueError("otlp_only needs an OTLP endpoint or otlp_targets")
    except (ValueError, TypeError) as exc:
        if not lenient or "targets" in given:
            raise
        logger.error("sessiontrace ignores the OTLP settings: %s", exc)
        return {"otlp_endpoint": None, "otlp_headers": {}, "otlp_only": False, **out}
    out.update(otlp_endpoint=endpoint or None, otlp_headers=headers or {}, otlp_only=only)
    return out


def _parse(param: _Param, raw: str, where: str) -> Any:
    try:
        return param.parse(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# A password in the user info, in ?password=, or in libpq's key=value form; sslpassword
# (a client key's passphrase) too.
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
_KEYWORD_SECRET = re.compile(r"(?i)(\b(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)")


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``: what may be printed or logged.

    >>> redact_uri("postgresql://app:s3cret@db.internal/traces?sslmode=require")
    'postgresql://app:***@db.internal/traces?sslmode=require'

    Covers the user-info password, ``password=`` in the query string and libpq's
    ``key=value`` strings. When unsure where the user info ends (a raw ``/`` in a
    password), it hides too much rather than too little.
    """
    if "://" not in uri:
        return _KEYWORD_SECRET.sub(r"\1***", uri)
    scheme, rest = uri.split("://", 1)
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in head:
        userinfo, hosts = head.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            rest = f"{user}:***@{hosts}{rest[len(head) :]}"
    return scheme + "://" + _QUERY_SECRET.sub(r"\1***", rest)


def hide_password(text: str, uri: str) -> str:
    """``text`` (say, a driver's error about ``uri``) without ``uri``'s password in it.

    Drivers may echo parts of a connection string; this removes the password in
    every spelling the URI gives it (raw and percent-decoded), wherever it appears.
    """
    if not uri:
        return text
    text = text.replace(uri, redact_uri(uri))
    secrets: set[str] = set()
    if "://" in uri:
        parts = urlsplit(uri)
        if parts.password:
            secrets.add(parts.password)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in ("password", "sslpassword") and value:
                secrets.add(value)
    else:
        for match in _KEYWORD_SECRET.finditer(uri):
            secrets.add(match.group(0)[len(match.group(1)) :].strip("'"))
    for secret in sorted(secrets | {unquote(s) for s in secrets}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclasses.dataclass(frozen=True)
class StoreLocation:
    """Where a tracking URI points; ``path`` may hold a password: print ``repr()``."""

    scheme: str  # "sqlite", "postgresql", "http" or "https"
    path: str  # absolute file path for sqlite, the URI for postgresql, the base URL for http(s)

    def __repr__(self) -> str:
        return f"StoreLocation(scheme={self.scheme!r}, path={redact_uri(self.path)!r})"


def parse_tracking_uri(uri: str) -> StoreLocation:
    """Parse a tracking URI the way MLflow and SQLAlchemy write them.

    ``sqlite:///traces.db`` is relative to the working directory at configure time,
    ``sqlite:////data/traces.db`` is absolute; a bare path means a SQLite file;
    ``postgresql://`` (or ``postgres://``) URIs go to PostgreSQL unchanged, in
    libpq's syntax (``postgresql://app@/traces?host=/run/postgresql`` for a socket);
    ``http(s)://host:port`` sends traces to a sessiontrace server. Messages about a
    bad URI never show its password.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("tracking_uri must be a non-empty string")
    uri = uri.strip()
    shown = redact_uri(uri)
    if "://" not in uri:
        if uri.startswith(("http:", "https:", "postgresql:", "postgres:", "sqlite:")):
            raise ValueError(f"tracking_uri {shown!r} is not a valid URI (missing '//')")
        return StoreLocation("sqlite", str(Path(uri).expanduser().resolve()))
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        rest = uri.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"tracking_uri {shown!r}: write sqlite:///relative.db or sqlite:////absolute.db"
            )
        path = rest[1:]
        if path in ("", ":memory:"):
            raise ValueError(
                "an in-memory SQLite store cannot be shared with the writer thread; use a file path"
            )
        return StoreLocation("sqlite", str(Path(path).expanduser().resolve()))
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ValueError(f"tracking_uri {shown!r}: expected http(s)://host[:port]")
        if parts.username or parts.password:
            raise ValueError(
                "tracking_uri must not carry credentials; set SESSIONTRACE_TRACKING_TOKEN"
            )
        return StoreLocation(scheme, uri.rstrip("/"))
    if scheme in ("postgresql", "postgres"):
        return StoreLocation("postgresql", uri)  # libpq reads both spellings
    if scheme.startswith(("postgresql+", "postgres+")):
        raise ValueError(
            f"tracking_uri {shown!r}: that is SQLAlchemy's form; sessiontrace always uses "
            "psycopg, so write postgresql://..."
        )
    raise ValueError(
        f"tracking_uri scheme {scheme!r} is not supported; use sqlite:///path.db "
        "or postgresql://user@host/database"
    )
