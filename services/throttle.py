"""The sign-in throttle (SPEC §3): failures counted per email and per IP in Flask-Limiter's storage.

Only failures count, so a person who signs in correctly is never slowed down; the storage
is the limiter's (memory by default, Redis when REDIS_URL is set), so every worker agrees.
"""

from __future__ import annotations

import math
import time

from flask import current_app
from limits import parse

from extensions import counted_limits, limit_key

NAMESPACE = "signin-failures"


def _keys(email: str, ip: str | None) -> list[list[str]]:
    return [
        limit_key(NAMESPACE, "email", email.strip().lower()[:254]),
        limit_key(NAMESPACE, "ip", ip or "unknown"),
    ]


def _limit():
    return parse(current_app.config["LOGIN_THROTTLE"])


def retry_after(email: str, ip: str | None) -> int | None:
    """Seconds until the next attempt is allowed, or None if an attempt may go ahead now."""
    limit = _limit()
    waits = []
    for key in _keys(email, ip):
        if not counted_limits.test(limit, *key):
            stats = counted_limits.get_window_stats(limit, *key)
            waits.append(max(1, math.ceil(stats.reset_time - time.time())))
    return max(waits) if waits else None


def record_failure(email: str, ip: str | None) -> None:
    limit = _limit()
    for key in _keys(email, ip):
        counted_limits.hit(limit, *key)
