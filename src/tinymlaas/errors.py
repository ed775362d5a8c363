"""The one exception hierarchy of tinymlaas.

Every error knows how the API (``http_status``) and the CLI (``exit_code``) show it; each
entry point maps them in one place. Messages say what was wrong and what to do.

::

    TinymlaasError                       500 / 1
     ├── InvalidInputError               400 / 2   bad parameters, YAML, files
     │    ├── UnsafeInputError           400 / 2   pickle, path traversal, zip bomb
     │    ├── UnsupportedModelError      422 / 2   a graph or operator we cannot handle
     │    └── IncompatibleChainError     422 / 2   a pipeline whose artifact kinds do not chain
     ├── PayloadTooLargeError            413 / 2   over a size cap
     ├── NotFoundError                   404 / 3   unknown id or name (or not yours)
     ├── ConflictError                   409 / 4   a name already taken
     ├── AuthenticationError             401 / 5
     ├── ForbiddenError                  403 / 5   visible to you, but your role does not allow it
     ├── RateLimitedError                429 / 5
     ├── StepFailedError                 500 / 6   a step failed; the run keeps earlier results
     └── ServiceUnavailableError         503 / 7   a database or worker cannot be reached
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "ForbiddenError",
    "IncompatibleChainError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "StepFailedError",
    "TinymlaasError",
    "UnsafeInputError",
    "UnsupportedModelError",
]


class TinymlaasError(Exception):
    """Base of every error the product raises on purpose.

    Args:
        message: One readable sentence: what was wrong and what to do.
        details: Machine-readable context (field names, limits, known values).
    """

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The one error body shape shared by the API and JSON outputs."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInputError(TinymlaasError):
    http_status = 400
    exit_code = 2
    code = "invalid_input"


class UnsafeInputError(InvalidInputError):
    code = "unsafe_input"


class UnsupportedModelError(InvalidInputError):
    http_status = 422
    code = "unsupported_model"


class IncompatibleChainError(InvalidInputError):
    http_status = 422
    code = "incompatible_chain"


class PayloadTooLargeError(TinymlaasError):
    http_status = 413
    exit_code = 2
    code = "payload_too_large"


class NotFoundError(TinymlaasError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class ConflictError(TinymlaasError):
    http_status = 409
    exit_code = 4
    code = "conflict"


class AuthenticationError(TinymlaasError):
    http_status = 401
    exit_code = 5
    code = "unauthenticated"


class ForbiddenError(TinymlaasError):
    http_status = 403
    exit_code = 5
    code = "forbidden"


class RateLimitedError(TinymlaasError):
    http_status = 429
    exit_code = 5
    code = "rate_limited"


class StepFailedError(TinymlaasError):
    http_status = 500
    exit_code = 6
    code = "step_failed"


class ServiceUnavailableError(TinymlaasError):
    http_status = 503
    exit_code = 7
    code = "service_unavailable"
