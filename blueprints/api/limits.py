"""The last touch on every API response: rate limits for paths that match no route,
Retry-After only where it means something, and no Content-Type on a 204.

Flask-Limiter checks limits per endpoint, and a path that matches no route (404, 405) has
none; such requests still count against the caller's bucket and carry X-RateLimit-*.
Flask-Limiter also adds Retry-After to every response; we keep it on 429 and 503 only.
"""

from __future__ import annotations

import time

from flask import current_app, request
from flask.wrappers import Response
from limits import parse_many

from blueprints.api import bp
from blueprints.api.auth import UNAUTHENTICATED_RATE_LIMIT, rate_limit_key, rate_limit_value
from blueprints.api.errors import api_error
from extensions import counted_limits, limit_key, limiter

SCOPE = "api"  # the scope of the blueprint's shared limit


@bp.record_once
def _register(state) -> None:
    # First in the list, so it runs after Flask-Limiter's own after_request (they run reversed).
    state.app.after_request_funcs.setdefault(None, []).insert(0, finish_api_response)


def finish_api_response(response: Response) -> Response:
    if not request.path.startswith("/api/"):
        return response
    response = _limit_unrouted(response)
    if request.method == "OPTIONS" and response.status_code == 200 and not response.data:
        # Flask's automatic answer is an empty text/html 200: say "nothing" plainly, with Allow.
        response.status_code = 204
    if response.status_code == 204:
        # No body, so no type: Flask labels even an empty answer text/html (werkzeug drops
        # only its Content-Length).
        response.headers.pop("Content-Type", None)
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def _limit_unrouted(response: Response) -> Response:  # and unlimited answers
    # Paths that match no route, and answers made before the limiter's check ran (a 413 for
    # a view whose limits are checked when it is called): count them in the caller's bucket.
    if "X-RateLimit-Limit" in response.headers or not limiter.enabled:
        return response
    try:
        key, value = rate_limit_key(), rate_limit_value()
    except Exception:  # e.g. the database is down: count the answer against the address
        key = f"ip:{request.remote_addr or 'unknown'}"
        value = current_app.config.get("API_UNAUTHENTICATED_RATE_LIMIT", UNAUTHENTICATED_RATE_LIMIT)
    args = limit_key(key, SCOPE)
    shown = None
    for item in sorted(parse_many(value)):
        allowed = counted_limits.hit(item, *args)
        reset, remaining = counted_limits.get_window_stats(item, *args)
        if not allowed:
            retry = max(1, int(reset - time.time()))
            response = api_error(
                "rate_limited",
                429,
                "Too many requests; slow down and retry after the time in Retry-After.",
                headers={"Retry-After": str(retry)},
            )
            shown = (item, 0, reset)
            break
        if shown is None:
            shown = (item, remaining, reset)
    if shown is not None:
        item, remaining, reset = shown
        response.headers["X-RateLimit-Limit"] = str(item.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(int(reset))
    return response
