"""Who may call the API, and how big a request may be.

- Tokens: ``STORMEYE_API_TOKEN`` (one bearer token, named ``api``) and/or
  ``STORMEYE_API_TOKENS="alice=tok1,bob=tok2"`` (named ones). When any is set, every request
  but ``/healthz``, ``/readyz``, ``/metrics`` and the page's shell (``GET /``, ``/static/*``,
  ``/favicon.ico``, ``/api/v1/page/auth``: no data in them) needs ``Authorization: Bearer <token>``;
  without one the answer is 401 saying so. With no token configured everyone is ``local``.
- ``request.state.actor`` is the name of the token that authenticated the request (``api``,
  ``alice``, …; ``local`` without auth; ``anonymous`` on the open paths): whoever records an
  action reads it there.
- Bodies larger than ``STORMEYE_MAX_BODY_BYTES`` get 413, whether the size is announced
  (``Content-Length``) or only found while reading (chunked).

It is a plain ASGI middleware: it runs before routing, so no endpoint can forget it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from stormeye.core.errors import StormeyeError
from stormeye.workers.settings import Settings

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: the on-call page's shell, its static files and the browser's icon carry no data (its API calls need
#: the token), so a browser can load it and be asked for the token; they are never counted unauthorized
PAGE_PATHS = frozenset({"/", "/index.html", "/favicon.ico", "/api/v1/page/auth"})
LOCAL_ACTOR = "local"
SINGLE_TOKEN_NAME = "api"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthConfigError(StormeyeError, ValueError):
    """The token settings cannot be read; the message says how to write them."""


def parse_tokens(settings: Settings) -> dict[str, str]:
    """Token → name from ``STORMEYE_API_TOKEN`` and ``STORMEYE_API_TOKENS``."""
    tokens: dict[str, str] = {}
    if settings.api_token:
        tokens[settings.api_token] = SINGLE_TOKEN_NAME
    for item in (settings.api_tokens or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, token = item.partition("=")
        name, token = name.strip(), token.strip()
        if not eq or not name or not token:
            raise AuthConfigError(f"STORMEYE_API_TOKENS: write name=token pairs separated by commas, got {item!r}")
        if token in tokens and tokens[token] != name:
            raise AuthConfigError(f"STORMEYE_API_TOKENS: {name!r} and {tokens[token]!r} share one token")
        tokens[token] = name
    return tokens


class _TooLarge(StormeyeError):
    """The body is over ``STORMEYE_MAX_BODY_BYTES`` (answered by the middleware itself)."""

    http_status = 413


class AuthMiddleware:
    """Bearer tokens (``request.state.actor``) and the body size limit, for every HTTP request."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str], max_body: int, on_reject: Any = None) -> None:
        self.app = app
        self.tokens = [(t.encode(), n) for t, n in tokens.items()]
        self.max_body = max_body
        self.on_reject = on_reject  # called with a reason: "unauthorized", "too_large"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path = scope.get("path", "")
        if path in OPEN_PATHS or (
            scope.get("method") in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith("/static/"))
        ):
            state["actor"] = "anonymous"
        elif not self.tokens:
            state["actor"] = LOCAL_ACTOR
        else:
            actor, problem = self._actor(scope)
            if actor is None:
                self._count("unauthorized")
                await _answer(send, 401, problem, {"www-authenticate": 'Bearer realm="stormeye"'})
                return
            state["actor"] = actor
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            self._count("too_large")
            await _answer(send, 413, self._too_large(length))
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return msg

        async def watch(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, watch)
        except _TooLarge:
            self._count("too_large")
            if not started:
                await _answer(send, 413, self._too_large(seen))

    def _actor(self, scope: Scope) -> tuple[str | None, str]:
        header = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                header = v
                break
        return check_bearer(self.tokens, header)

    def _too_large(self, size: int) -> str:
        return f"the body ({size} bytes) is larger than STORMEYE_MAX_BODY_BYTES={self.max_body}: send smaller batches"

    def _count(self, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(reason)


def check_bearer(tokens: list[tuple[bytes, str]], header: bytes) -> tuple[str | None, str]:
    """The name of the token in an ``Authorization`` header (None and what is wrong when none is valid)."""
    if not header:
        return None, (
            "this endpoint needs a token: send 'Authorization: Bearer <STORMEYE_API_TOKEN>' "
            "(on the page: log in with the token)"
        )
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None, "send the token as 'Authorization: Bearer <token>'"
    token = token.strip()
    found = None
    for known, name in tokens:  # compare with every token, in constant time each
        if hmac.compare_digest(known, token):
            found = name
    if found is None:
        return None, "the token is not valid: check STORMEYE_API_TOKEN / STORMEYE_API_TOKENS on the server"
    return found, ""


def _content_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


#: the page's own scripts and styles only (api/static): no inline script, no other origin; inline style
#: attributes are allowed (the page's markup sets a few: legend colours, bar widths)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: FastAPI's interactive API docs load their script and styles from a CDN and run an inline script
_CDN_PAGES = ("/docs", "/redoc")


class SecurityHeaders:
    """Every response says: no framing (``X-Frame-Options: DENY``), no content sniffing (``nosniff``),
    and, but on the API docs pages, the Content-Security-Policy above."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
        if not scope["path"].startswith(_CDN_PAGES):
            extra.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: Any, settings: Settings, on_reject: Any = None) -> None:
    """Put the token check and the size limit in front of every route of ``app``, and the security
    headers on every response (those of the token check and size limit too)."""
    app.add_middleware(
        AuthMiddleware, tokens=parse_tokens(settings), max_body=settings.max_body_bytes, on_reject=on_reject
    )
    app.add_middleware(SecurityHeaders)
    if settings.api_token or settings.api_tokens:
        app.state.auth_required = True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) is only reachable from this machine."""
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
