"""The one base of every expected failure. Its `code` reaches clients as `extensions.code`."""

from __future__ import annotations

from typing import Any, ClassVar


class LumiError(Exception):
    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.extensions = extensions


class Unauthenticated(LumiError):
    code = "UNAUTHENTICATED"
    default_message = "a valid bearer token is required"


class AuthUnavailable(LumiError):
    """The identity service a token needs (JWKS URL, user service) cannot answer now."""

    code = "AUTH_UNAVAILABLE"
    default_message = "the identity service is unavailable; try again shortly"


class Forbidden(LumiError):
    code = "FORBIDDEN"
    default_message = "not allowed"


class NotFound(LumiError):
    code = "NOT_FOUND"
    default_message = "not found"


class BadUserInput(LumiError):
    code = "BAD_USER_INPUT"
    default_message = "invalid input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, **({"field": field} if field else {}))


class BadRequest(LumiError):
    """The request itself is malformed (not JSON, not an object, not a GraphQL request)."""

    code = "BAD_REQUEST"
    default_message = "the request is not a GraphQL request"


class Conflict(LumiError):
    code = "CONFLICT"
    default_message = "conflicting state"


class InsufficientCredits(LumiError):
    code = "INSUFFICIENT_CREDITS"
    default_message = "not enough credits"

    def __init__(self, *, required: int, balance: int) -> None:
        super().__init__(
            f"this needs {required} credits and the balance is {balance}",
            required=required,
            balance=balance,
        )


class RateLimited(LumiError):
    code = "RATE_LIMITED"

    def __init__(self, *, retry_after: float, scope: str) -> None:
        retry_after = max(round(retry_after, 3), 0.001)
        super().__init__(
            f"too many requests from this {scope}: try again in {retry_after:g} s",
            retryAfter=retry_after,
            scope=scope,
        )


class LimitExceeded(LumiError):
    code = "LIMIT_EXCEEDED"
    default_message = "a limit was reached"
