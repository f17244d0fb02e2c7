"""The sign-in throttle (SPEC §3, issue 14; the exact rule is in docs/security.md).

Three failure counters, in Flask-Limiter's storage (memory by default, Redis when REDIS_URL
is set, so every worker and host agrees):

- per email *and* address pair: LOGIN_THROTTLE (10 per 15 minutes);
- per address, whatever the email: LOGIN_THROTTLE_IP (10 per 15 minutes, SPEC §3);
- per email, from any address: LOGIN_THROTTLE_EMAIL (100 per hour, ASVS 2.2.1's ceiling).
  A browser that has signed in to that email before (the `ks_device` cookie) is not held
  back by it, so strangers spread over many addresses cannot lock the owner out.

An attempt is counted *before* the password is checked, with the storage's atomic
increment, and given back if the password was right: N simultaneous guesses reach bcrypt at
most as often as the limit allows, on any number of threads and workers. Counting stops at
the first counter that is full, so guesses refused by the pair limit never fill the email's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from flask import current_app
from limits import RateLimitItem, parse

from extensions import counted_limits, limit_key

NAMESPACE = "signin-failures"


@dataclass
class Attempt:
    """One sign-in attempt, already counted. `retry_after` is set when it may not go on."""

    counted: list[tuple[RateLimitItem, list[str]]] = field(default_factory=list)
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.retry_after is not None


def _counters(email: str, ip: str | None, known_device: bool):
    email = email.strip().lower()[:254]
    config = current_app.config
    address = ip or "unknown"
    yield parse(config["LOGIN_THROTTLE"]), limit_key(NAMESPACE, "email", email, "ip", address)
    yield parse(config["LOGIN_THROTTLE_IP"]), limit_key(NAMESPACE, "ip", address)
    if not known_device:
        yield parse(config["LOGIN_THROTTLE_EMAIL"]), limit_key(NAMESPACE, "email", email)


def begin(email: str, ip: str | None, *, known_device: bool = False) -> Attempt:
    """Count an attempt before its password is checked; refused when a counter is full."""
    attempt = Attempt()
    for item, key in _counters(email, ip, known_device):
        attempt.counted.append((item, key))
        if not counted_limits.hit(item, *key):
            stats = counted_limits.get_window_stats(item, *key)
            attempt.retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            break
    return attempt


def begin_sign_up(ip: str | None) -> Attempt:
    """Count a sign-up from this address before the account is made (SIGNUP_THROTTLE)."""
    attempt = Attempt()
    item = parse(current_app.config["SIGNUP_THROTTLE"])
    key = limit_key("signups", "ip", ip or "unknown")
    attempt.counted.append((item, key))
    if not counted_limits.hit(item, *key):
        stats = counted_limits.get_window_stats(item, *key)
        attempt.retry_after = max(1, math.ceil(stats.reset_time - time.time()))
    return attempt


def begin_webhook_send(organization_id: int) -> Attempt:
    """Count a test event or a redelivery the organization asks for (WEBHOOK_SEND_LIMIT, 10
    a minute): each makes the worker POST to a URL of the organization's choosing, so
    without a bound a script could keep every worker posting for one tenant."""
    attempt = Attempt()
    item = parse(current_app.config["WEBHOOK_SEND_LIMIT"])
    key = limit_key("webhook-sends", "org", str(organization_id))
    attempt.counted.append((item, key))
    if not counted_limits.hit(item, *key):
        stats = counted_limits.get_window_stats(item, *key)
        attempt.retry_after = max(1, math.ceil(stats.reset_time - time.time()))
    return attempt


def succeeded(attempt: Attempt) -> None:
    """Give the attempt back: the password was right (only failures count), or the sign-up
    made nothing (only accounts made count)."""
    for item, key in attempt.counted:
        counted_limits.refund(item, *key)
