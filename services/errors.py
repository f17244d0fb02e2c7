"""Domain errors. Each carries the code and HTTP status of SPEC §4, so pages and API agree."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    status = 400
    message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, details: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}


class ValidationFailed(DomainError):
    """One or more fields are wrong; details maps each field to what is wrong with it."""

    code = "validation_error"
    message = "Some fields are not valid."


class DuplicateName(DomainError):
    code = "duplicate_name"
    message = "A live token with this name already exists in this environment."

    def __init__(self, message: str | None = None, *, details: dict[str, str] | None = None):
        super().__init__(message, details=details or {"name": self.message})


class TokenLimitReached(DomainError):
    code = "token_limit_reached"
    message = "This organization has reached its maximum number of live tokens."


class Forbidden(DomainError):
    code = "insufficient_scope"
    status = 403
    message = "You do not have permission to do this."


class NotFound(DomainError):
    code = "not_found"
    status = 404
    message = "Not found."


class Conflict(DomainError):
    """A state change that makes no sense now (e.g. resuming a revoked token)."""

    code = "validation_error"
    status = 400


class TokenIsRevoked(Conflict):
    """A change to a revoked token: revoking is permanent. Names the token as the field at
    fault, so an API client sees why in `details` as for any other validation error."""

    def __init__(self, message: str):
        super().__init__(message, details={"token_id": message})


class AuthFailed(DomainError):
    """The presented token cannot authenticate; code is one of SPEC §4's 401 codes."""

    status = 401

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class IpNotAllowed(DomainError):
    code = "ip_not_allowed"
    status = 403
    message = "This token may not be used from this address."
