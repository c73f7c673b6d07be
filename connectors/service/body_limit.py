"""Every request body is bounded by ``service.max_body_bytes`` (413), on every route.

A pure ASGI middleware rather than a check per route: a declared ``Content-Length`` over
the bound is refused before anything is read, and a chunked body is counted as it
arrives and refused once it passes the bound (raised from ``receive`` as an
``HTTPException``, which the app's exception handling turns into the 413), so no route
ever holds more than the bound in memory — including the SQL and silences routes.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = 413


def too_large_detail(limit: int) -> str:
    return f"the body exceeds service.max_body_bytes={limit} bytes"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(TOO_LARGE, detail=too_large_detail(self.max_bytes))
            return message

        await self.app(scope, bounded, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": too_large_detail(self.max_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
