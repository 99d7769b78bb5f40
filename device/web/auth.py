"""The page's access token: an ASGI gate in front of every route but the static files.

The token comes as ``Authorization: Bearer <token>`` (scripts, Prometheus) or ``?token=``
(the page itself, its ``<img>`` MJPEG and its ``EventSource``, which cannot send headers). It
is compared in constant time, and never logged (uvicorn's access log is off).
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
OPEN_PREFIXES = ("/static/",)  # the same HTML/JS/CSS for everyone; no camera data


def offered_token(scope: Scope) -> str | None:
    """The token a request carries: the Authorization header first, then ``?token=``."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


def token_matches(offered: str | None, token: str) -> bool:
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


class TokenGate:
    """Refuses (401) every HTTP request without the right token; ``token=None`` lets all in."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or self.token is None
            or scope.get("path", "").startswith(OPEN_PREFIXES)
            or token_matches(offered_token(scope), self.token)
        ):
            await self.app(scope, receive, send)
            return
        why = "token required" if offered_token(scope) is None else "wrong token"
        body = json.dumps({"error": f"{why}: send Authorization: Bearer <web.token> or ?token="})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="kestrel"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
