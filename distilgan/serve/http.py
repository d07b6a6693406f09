"""HTTP plumbing every route shares: the one error shape and the request-body limit.

Every error the API returns is ``{"error": "<one line naming the problem and the fix>"}``; a route
raises :class:`ApiError` and the app's handler answers it. ``BodyLimit`` reads the whole body before
anything parses it, so an oversize one is refused (413) whether announced or streamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi.responses import JSONResponse

MAX_BODY_BYTES = 64 * 1024
DEFAULT_HINT = "send fewer labels"


class ApiError(Exception):
    """A request the server understood but will not do; answered as {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def size_text(n: int) -> str:
    """Bytes as the largest whole-ish unit: 65536 -> "64 KiB", 8388608 -> "8 MiB"."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"


class BodyLimit:
    """ASGI middleware: read the whole request body first and refuse it (413) past the limit of its
    path (``routes``: path -> (bytes, hint naming the fix)) or ``max_bytes``, whether announced by
    Content-Length or streamed in chunks."""

    def __init__(self, app: Callable, max_bytes: int = MAX_BODY_BYTES,
                 routes: Mapping[str, tuple[int, str]] | None = None) -> None:
        self.app, self.max_bytes, self.routes = app, max_bytes, dict(routes or {})

    async def _refuse(self, scope: dict, receive: Callable, send: Callable, status: int, message: str) -> None:
        await error_response(status, message, headers={"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, hint = self.routes.get(scope.get("path", ""), (self.max_bytes, DEFAULT_HINT))
        too_big = f"request body is larger than {size_text(limit)} ({hint}; the limit is {limit} bytes)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self._refuse(scope, receive, send, 400, "Content-Length header is not a number")
            if int(length) > limit:
                return await self._refuse(scope, receive, send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self._refuse(scope, receive, send, 413, too_big)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


__all__ = ["MAX_BODY_BYTES", "ApiError", "BodyLimit", "error_response", "size_text"]
