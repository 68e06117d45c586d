"""Domain errors and their HTTP mapping, in one place.

Every error a caller can see is a `GrantlinkError` with a stable `code`, a human `message` and the HTTP
status it maps to. Handlers never choose status codes themselves.
"""

from __future__ import annotations


class GrantlinkError(Exception):
    status: int = 500
    code: str = "internal_error"
    default_message: str = "Something went wrong on our side."

    def __init__(
        self, message: str | None = None, *, code: str | None = None, details: list[dict[str, str]] | None = None
    ) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        self.details = details  # [{"field", "problem"}]: what is wrong where (never arbitrary input)
        super().__init__(self.message)

    def body(self) -> dict:
        body = error_body(self.code, self.message)
        if self.details:
            body["error"]["details"] = self.details
        return body


def error_body(code: str, message: str) -> dict:
    return {"success": False, "error": {"code": code, "message": message}}


class BadRequest(GrantlinkError):
    status, code, default_message = 400, "validation_error", "The request is not valid."


class Unauthorized(GrantlinkError):
    status, code, default_message = 401, "unauthorized", "A valid API key is required."


class Forbidden(GrantlinkError):
    status, code, default_message = 403, "forbidden", "This API key lacks the scope this route needs."


class NotFound(GrantlinkError):
    status, code, default_message = 404, "not_found", "Not found."


class MethodNotAllowed(GrantlinkError):
    status, code, default_message = 405, "method_not_allowed", "This method is not allowed on this route."


class Conflict(GrantlinkError):
    status, code, default_message = 409, "conflict", "The resource is not in a state that allows this."


class Gone(GrantlinkError):
    status, code, default_message = 410, "link_unavailable", "This link is no longer valid."


class LinkLocked(GrantlinkError):
    """A link whose token failed too many connection tests: it refuses submits until the tenant regenerates it."""

    status, code = 423, "link_locked"
    default_message = (
        "Too many attempts to connect with this link failed, so it no longer accepts any. "
        "Ask whoever sent you this link for a new one."
    )


class PayloadTooLarge(GrantlinkError):
    status, code, default_message = 413, "payload_too_large", "The request body is too large."


class UnprocessableEntity(GrantlinkError):
    status, code, default_message = 422, "unprocessable", "The request cannot be processed."


class ServiceUnavailable(GrantlinkError):
    status, code, default_message = 503, "service_unavailable", "A dependency is unavailable; try again shortly."


class CryptoError(GrantlinkError):
    """A ciphertext failed to decrypt: tampered, copied to another record, or not ours."""

    status, code, default_message = 500, "decryption_failed", "The stored secret could not be decrypted."
