"""Typed errors: every error reply of the server carries a stable `code` and a `message`."""

from __future__ import annotations


class UpstreamError(Exception):
    """An error reply of the server (or a failure to reach it)."""

    def __init__(self, message: str, code: str = "internal", status: int = 0):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.code else self.message


class InvalidArgumentError(UpstreamError):
    """The request was malformed; nothing was changed (400)."""


class AuthenticationError(UpstreamError):
    """No API key, or one that is not valid (401)."""


class NotFoundError(UpstreamError):
    """No such box, exec, file or route (404)."""


class ConflictError(UpstreamError):
    """The object is in the wrong state, or a name is taken (409)."""


class PayloadTooLargeError(UpstreamError):
    """The request body is over the server's limit (413)."""


class RateLimitError(UpstreamError):
    """A tenant limit was reached (429)."""


class ServerError(UpstreamError):
    """The server failed (5xx), or could not be reached."""


_BY_STATUS = {
    400: InvalidArgumentError,
    401: AuthenticationError,
    404: NotFoundError,
    405: InvalidArgumentError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def error_for(status: int, code: str, message: str) -> UpstreamError:
    cls = _BY_STATUS.get(status, ServerError if status >= 500 or status == 0 else UpstreamError)
    return cls(message, code, status)
