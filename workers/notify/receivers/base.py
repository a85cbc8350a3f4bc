"""What every receiver shares: the error type, the send context and an HTTP POST that says what failed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from stormeye.core.errors import StormeyeError

DEFAULT_TIMEOUT_S = 10.0


class ReceiverError(StormeyeError, RuntimeError):
    """A receiver did not take the notification; ``permanent`` when a retry cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class SendContext:
    receiver: str
    global_: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """One HTTP client for every receiver (connections are kept alive; it is thread-safe)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(follow_redirects=False)
        return _client


def post_json(url: str, body: Any, timeout_s: float, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST ``body`` as JSON; :class:`ReceiverError` unless the answer is 2xx (4xx other than 408/429: permanent)."""
    try:
        resp = client().post(url, json=body, timeout=timeout_s, headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        raise ReceiverError(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code >= 300:
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        raise ReceiverError(f"POST {url} answered {resp.status_code}: {resp.text[:300]}", permanent=permanent)
    return resp


def timeout_of(options: Mapping[str, Any], ctx: SendContext) -> float:
    return float(options.get("timeout", ctx.timeout_s))
