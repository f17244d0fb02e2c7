"""The JSON errors of SPEC §4: `{"error": {"code", "message", "details"}}`, never HTML."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from blueprints.last_resort import is_database_outage
from services.errors import AuthFailed, DomainError

_HTTP_CODES = {
    400: "validation_error",
    401: "missing_token",
    403: "insufficient_scope",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
_HTTP_MESSAGES = {
    404: "Not found.",
    405: "This method is not allowed on this path.",
    413: "The request body is larger than 1 MiB.",
    415: "Send the body as application/json or application/x-www-form-urlencoded.",
    429: "Too many requests; slow down and retry after the time in Retry-After.",
    500: "An unexpected error happened.",
    503: "The service is unavailable; retry shortly.",
}
WWW_AUTHENTICATE = 'Bearer realm="keysmith", charset="UTF-8"'


def api_error(
    code: str,
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    if status == 401:
        error = "invalid_token" if code != "missing_token" else None
        value = WWW_AUTHENTICATE + (f', error="{error}"' if error else "")
        response.headers["WWW-Authenticate"] = value
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def response_for(error: Exception):
    """Turn any exception raised while serving the API into its JSON error."""
    if isinstance(error, AuthFailed | DomainError):
        return api_error(error.code, error.status, error.message, error.details)
    if isinstance(error, RateLimitExceeded):
        response = api_error("rate_limited", 429, _HTTP_MESSAGES[429])
        if error.response is not None:
            for key in (
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ):
                if key in error.response.headers:
                    response.headers[key] = error.response.headers[key]
        return response
    if isinstance(error, CSRFError):
        return api_error("validation_error", 400, "Missing or invalid CSRF token.")
    original = getattr(error, "original_exception", None)
    if isinstance(error, HTTPException) and original is not None and is_database_outage(original):
        error = original  # an outage after the view (a 500 wrapping it) is a 503 too
    if isinstance(error, HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "validation_error" if status < 500 else "internal_error")
        message = _HTTP_MESSAGES.get(status) or error.description or error.name
        response = api_error(code, status, message)
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response
    if isinstance(error, DataError):  # the database refused a value the client sent
        current_app.logger.warning("Database refused a value: %s", type(error.orig).__name__)
        return api_error("validation_error", 400, "A value in the request cannot be stored.")
    if is_database_outage(error):  # logged once, by the app's handler (blueprints/web.py)
        return api_error("unavailable", 503, _HTTP_MESSAGES[503], headers={"Retry-After": "5"})
    current_app.logger.exception("Unhandled API error")
    return api_error("internal_error", 500, _HTTP_MESSAGES[500])
