"""Rate limits and the last touch on every API response.

Every request under /api/ (routed or not: a 404 or 405 counts too) is counted once, before
anything else runs, in one storage round trip (services/rate_limits.py): per token when it
authenticates, else per client address; the leak reporter has a per-address limit of its
own besides. Flask-Limiter does not see the API at all. After the view, the answer gets
`X-RateLimit-*` (and `Retry-After` on a 429); a 503 (the database is down) is taken back,
so an outage is not answered with 429 once it ends. Nothing here can turn an answer the
view made into an error: a change that committed is always answered.
"""

from __future__ import annotations

import logging

from flask import current_app, g, request
from flask.wrappers import Response

from blueprints import answer_headers
from blueprints.api import bp
from blueprints.api.auth import UNAUTHENTICATED_RATE_LIMIT, rate_limit_key_and_value
from blueprints.api.errors import api_error
from extensions import limiter
from services.rate_limits import Decision, rate_limits

log = logging.getLogger(__name__)

# Reports from secret scanners, per client address (they send no token), besides the
# address's own limit.
LEAK_RATE_LIMIT = "60/minute;10/second"
LEAK_ENDPOINT = "api.report_leaks"


def _is_api() -> bool:
    return request.path.startswith("/api/")


@bp.record_once
def _register(state) -> None:
    app = state.app
    # First of all the app's before_request hooks: an oversized or refused request counts.
    app.before_request_funcs.setdefault(None, []).insert(0, count_api_request)
    # First in the list, so it runs last (after_request runs in reverse).
    app.after_request_funcs.setdefault(None, []).insert(0, finish_api_response)


# Flask-Limiter skips the API (one global filter, however many apps a process makes).
limiter.request_filter(_is_api)


def _enabled() -> bool:
    return current_app.config.get("RATELIMIT_ENABLED", True)


def _key_and_limit() -> tuple[str, str]:
    try:
        return rate_limit_key_and_value()
    except Exception:  # e.g. the database is down: count the answer against the address
        return (
            f"ip:{request.remote_addr or 'unknown'}",
            current_app.config.get("API_UNAUTHENTICATED_RATE_LIMIT", UNAUTHENTICATED_RATE_LIMIT),
        )


def count_api_request() -> Response | None:
    if not _is_api() or not _enabled():
        return None
    key, limit = _key_and_limit()
    counts = [(key, limit)]
    if request.endpoint == LEAK_ENDPOINT:
        counts.append((f"leaks:{request.remote_addr or 'unknown'}", LEAK_RATE_LIMIT))
    limits = rate_limits()
    counted: list[tuple[str, str]] = []
    shown: Decision | None = None
    for name, value in counts:
        decision = limits.hit(name, value)
        if decision is None:
            continue
        counted.append((name, value))
        if shown is None or (shown.allowed and not decision.allowed):
            shown = decision
    g.api_rate_counted, g.api_rate_limit = counted, shown
    if shown is not None and not shown.allowed:
        return api_error(
            "rate_limited",
            429,
            "Too many requests; slow down and retry after the time in Retry-After.",
            headers={"Retry-After": str(shown.retry_after)},
        )
    return None


def finish_api_response(response: Response) -> Response:
    if not _is_api():
        return response
    try:
        _limit_headers(response)
    except Exception:  # the answer stands (it may carry a secret that was just committed)
        log.warning("Could not add the rate limit headers", exc_info=True)
    status = response.status_code
    if status == 200 and request.method == "OPTIONS" and not response.data:
        # Flask's automatic answer is an empty text/html 200: say "nothing" plainly, with Allow.
        response.status_code = status = 204
    if status == 204:
        # No body, so no type: Flask labels even an empty answer text/html (werkzeug drops
        # only its Content-Length).
        response.headers.pop("Content-Type", None)
    if status == 429 or status == 503:
        return response
    if "Retry-After" in response.headers:
        del response.headers["Retry-After"]
    return response


def _limit_headers(response: Response) -> None:
    decision: Decision | None = g.get("api_rate_limit")
    if response.status_code == 503:
        # Unavailable is not the caller's doing: it does not use up their limit.
        limits = rate_limits()
        for name, value in g.get("api_rate_counted", ()):
            limits.refund(name, value)
        if decision is not None and decision.allowed:
            decision = Decision(True, decision.amount, decision.remaining + 1, decision.reset)
    if decision is None:
        return
    # Only this hook sets them, on the answer's way out (blueprints/answer_headers.py).
    request.environ[answer_headers.EXTRA] = [
        ("X-RateLimit-Limit", str(decision.amount)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Reset", str(decision.reset)),
    ]
