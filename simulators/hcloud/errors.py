"""
API errors of the simulator, shaped like the Hetzner Cloud error envelope.

Every failed request ends in one `ApiError`, which the HTTP layer renders as
`{"error": {"code", "message", "details"}}` with the status that the real API
pairs with that code. The helper functions build the common cases.
"""

from __future__ import annotations

from typing import Any

#: HTTP status for each error code the simulator sends, as the API documents it.
STATUS_BY_CODE: dict[str, int] = {
    "json_error": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "resource_limit_exceeded": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "uniqueness_error": 409,
    "conflict": 409,
    "invalid_input": 422,
    "locked": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
}


class ApiError(Exception):
    """A request failed; the HTTP layer sends `code`, `message` and `details` as JSON."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, details)
        self.code = code
        self.message = message
        self.details = details
        self.status = STATUS_BY_CODE[code]

    def to_json(self) -> dict[str, Any]:
        """Return the error envelope."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def invalid_field(field: str, *messages: str) -> ApiError:
    """Return the 422 error the API sends when one request field is invalid."""
    details = {"fields": [{"name": field, "messages": list(messages)}]}
    return ApiError("invalid_input", f"invalid input in field '{field}'", details)


def not_found(resource: str, resource_id: object) -> ApiError:
    """Return the 404 error for a resource id that does not exist."""
    return ApiError("not_found", f"{resource} with ID '{resource_id}' not found", None)
