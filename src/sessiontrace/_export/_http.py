"""Send finished traces to a sessiontrace server over HTTP(S).

The exporter is a pipeline ``Sink``: the pipeline's writer thread calls ``export``
with a batch, so the app only ever pays the queue append. While the server cannot
be reached (refused, timed out, 5xx, 429, 401/403 until the token is fixed) the
batch is kept and retried with backoff (``RetryableExportError``); the bounded queue
keeps what arrives meanwhile and counts what it cannot. A batch the server rejects
as malformed (other 4xx) raises ``ExportRejectedError`` and the pipeline retries its
items one by one, so one bad trace cannot sink the others.

Re-sending is harmless: the server writes with "insert or replace", so a batch whose
first request was stored before a later one failed is simply stored again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .._pipeline import RetryableExportError
from ._wire import encode_item, join_encoded

__all__ = ["INGEST_PATH", "ExportRejectedError", "HttpExporter"]

logger = logging.getLogger("sessiontrace")

INGEST_PATH = "/api/ingest"
_RETRY_STATUS = frozenset({401, 403, 408, 425, 429})


class ExportRejectedError(Exception):
    """The server refused the batch as invalid; sending it again would not help."""


class HttpExporter:
    """A ``Sink`` posting JSON batches to ``<base_url>/api/ingest``.

    ``max_request_bytes`` splits big batches into several requests (each under the
    server's body limit); ``token`` is sent as ``Authorization: Bearer``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_request_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s):// URL, got {base_url!r}")
        if max_request_bytes <= 0:
            raise ValueError("max_request_bytes must be positive")
        self.url = base_url.rstrip("/") + INGEST_PATH
        self._headers = {"Content-Type": "application/json", "User-Agent": "sessiontrace"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._max_bytes = max_request_bytes
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError:  # reported once per batch as a retryable failure
                raise RetryableExportError(
                    "sending traces over HTTP needs httpx: pip install 'sessiontrace[server]'"
                ) from None
            self._client = httpx.Client(
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 3.0)),
                headers=self._headers,
            )
        return self._client

    def export(self, items: Sequence[Any]) -> None:
        encoded = [encode_item(i) for i in items]
        start, size = 0, 0
        for i, text in enumerate(encoded):
            if size and size + len(text) > self._max_bytes:
                self._post(join_encoded(encoded[start:i]))
                start, size = i, 0
            size += len(text) + 1
        if start < len(encoded):
            self._post(join_encoded(encoded[start:]))

    def _post(self, body: bytes) -> None:
        client = self._http()
        import httpx

        try:
            response = client.post(self.url, content=body)
        except httpx.HTTPError as exc:  # refused, reset, timed out, bad TLS, ...
            raise RetryableExportError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 300:
            return
        if status >= 500 or status in _RETRY_STATUS:
            raise RetryableExportError(f"server answered {status}")
        raise ExportRejectedError(f"server rejected the batch ({status}): {response.text[:500]}")

    def after_fork(self) -> None:
        # The parent's connection pool is the parent's; open a new one on first use.
        self._client = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
