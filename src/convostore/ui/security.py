"""What keeps the viewer safe to run: GET only, known hosts, an optional token, strict headers.

One ASGI middleware in front of the app; every response, error pages included, passes
through it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "COOKIE",
    "LOOPBACK_HOSTS",
    "TOKEN",
    "Guard",
    "new_token",
]

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""No script at all, styles and images from the viewer itself (images of messages as
``data:`` URLs), forms only to the viewer, and no framing."""

COOKIE: Final = "convostore_ui_token"

TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{16,256}")
"""What a token may be: it travels in a URL and a cookie as it is."""

_HEADERS: Final = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    """A random token for ``--token`` when none is given."""
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware: refuse other methods than GET and HEAD, requests for another host
    (DNS rebinding; ``hosts=None``: any, only with a token), and, with a token, requests
    that do not carry it; add the security headers to every response.

    With a token, ``?token=...`` on any URL sets a cookie and redirects to the same URL
    without it, so the token does not stay in the address bar or the history.
    """

    def __init__(
        self, app: ASGIApp, *, hosts: Iterable[str] | None, token: str | None = None
    ) -> None:
        if hosts is None and token is None:
            raise ValueError("a viewer that accepts any Host header needs a token")
        if token is not None and not TOKEN.fullmatch(token):
            raise ValueError("a token is 16 to 256 letters, digits, '-' or '_'")
        self.app = app
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer what the viewer refuses (see the class); pass the rest on, with headers."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "read-only viewer: GET only", [(b"allow", b"GET, HEAD")])
            return
        if self.hosts is not None and _host(scope) not in self.hosts:
            await _plain(send, 421, "unknown host")
            return
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            given = next((v for k, v in query if k == "token"), None)
            if given is not None and _same(given, self.token):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                # One leading slash: "//host/..." would send the browser to another site.
                where = "/" + scope["path"].lstrip("/") + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                await _plain(
                    send,
                    303,
                    "signed in",
                    [(b"location", where.encode()), (b"set-cookie", cookie.encode())],
                )
                return
            if not _same(_cookie(scope) or "", self.token):
                await _plain(send, 401, "this viewer needs its token: open the URL it printed")
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            host: str = value.decode("latin-1").lower()
            if host.startswith("["):
                return host.split("]", 1)[0] + "]"
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                return None
            morsel = jar.get(COOKIE)
            if morsel is not None:
                return str(morsel.value)
    return None


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode() + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
        *_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
