"""The root of stormeye's own errors.

Every error stormeye raises on purpose derives from :class:`StormeyeError`. Each class says the HTTP
status it means at the edge (``http_status``), so the API turns any of them into a response in one
place instead of one ``except`` per route. The message says what is wrong and what to fix.
"""

from __future__ import annotations


class StormeyeError(Exception):
    """An error stormeye raises on purpose, with a message that says what to fix."""

    #: the HTTP status the API answers with when this error reaches it
    http_status: int = 500


class BadInput(StormeyeError, ValueError):
    """Input that cannot be used as given (HTTP 400 at the edge)."""

    http_status = 400


class NotFound(StormeyeError, LookupError):
    """Something asked for by id or name that does not exist (HTTP 404 at the edge)."""

    http_status = 404


class Conflict(StormeyeError):
    """A request that contradicts the current state (HTTP 409 at the edge)."""

    http_status = 409


class Unavailable(StormeyeError):
    """A service stormeye needs is not reachable now; retrying later may work (HTTP 503 at the edge)."""

    http_status = 503


class Overloaded(StormeyeError):
    """Too many requests at once: sent again after ``retry_after`` seconds (HTTP 429 with Retry-After)."""

    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Backlogged(Unavailable):
    """The workers are behind: more points would only wait (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
