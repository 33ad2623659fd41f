"""Reading a request's body with a cap, for the ingest endpoints (ours and OTLP's)."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["BodyTooLarge", "read_body"]


class BodyTooLarge(Exception):
    """The body (as declared, or as read so far) is over the endpoint's limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused early by its Content-Length and again while it streams."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
