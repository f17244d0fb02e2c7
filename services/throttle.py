"""The sign-in throttle (SPEC §3, issue 14; the exact rule is in docs/security.md).

Three failure counters, on the app's own counters (services/rate_limits.py, through
extensions.counted_limits: memory by default, Redis when REDIS_URL is set, so every worker and
host agrees; a slow or gone Redis falls back to this worker's memory within
REDIS_TIMEOUT_SECONDS):

- per email *and* address pair: LOGIN_THROTTLE (10 per 15 minutes);
- per address, whatever the email: LOGIN_THROTTLE_IP (10 per 15 minutes, SPEC §3);
- per email, from any address: LOGIN_THROTTLE_EMAIL (100 per hour, ASVS 2.2.1's ceiling).
  A browser that has signed in to that email before (the `ks_device` cookie) is not held
  back by it, so strangers spread over many addresses cannot lock the owner out.

An attempt is counted *before* the password is checked, with the storage's atomic
increment, and given back if the password was right: N simultaneous guesses reach bcrypt at
most as often as the limit allows, on any number of threads and workers. Counting stops at
the first counter that is full, so guesses refused by the pair limit never fill the email's.
An attempt answered 503 (the database is down: no password was judged) is given back too
(`refund_unanswered`, called by the 503 handler), so an outage never locks anyone out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app, g, has_app_context
from limits import RateLimitItem, parse

from extensions import counted_limits, limit_key

NAMESPACE = "signin-failures"


@dataclass
class Attempt:
    """One sign-in attempt, already counted. `retry_after` is set when it may not go on."""

    counted: list[tuple[RateLimitItem, list[str]]] = field(default_factory=list)
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if has_app_context():  # what a 503 of this request gives back
            g.setdefault("throttle_attempts", []).append(self)

    def count(self, item: RateLimitItem, key: list[str]) -> bool:
        """Count one hit against `item`; False (and `retry_after` set) when it is full."""
        self.counted.append((item, key))
        decision = counted_limits.decide(item, *key)
        if not decision.allowed:
            self.retry_after = decision.retry_after
        return decision.allowed

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
        if not attempt.count(item, key):
            break
    return attempt


def begin_sign_up(ip: str | None) -> Attempt:
    """Count a sign-up from this address before the account is made (SIGNUP_THROTTLE)."""
    attempt = Attempt()
    attempt.count(
        parse(current_app.config["SIGNUP_THROTTLE"]), limit_key("signups", "ip", ip or "unknown")
    )
    return attempt


def begin_webhook_send(organization_id: int) -> Attempt:
    """Count a test event or a redelivery the organization asks for (WEBHOOK_SEND_LIMIT, 10
    a minute): each makes the worker POST to a URL of the organization's choosing, so
    without a bound a script could keep every worker posting for one tenant."""
    attempt = Attempt()
    item = parse(current_app.config["WEBHOOK_SEND_LIMIT"])
    attempt.count(item, limit_key("webhook-sends", "org", str(organization_id)))
    return attempt


def succeeded(attempt: Attempt) -> None:
    """Give the attempt back: the password was right (only failures count), or the sign-up
    made nothing (only accounts made count)."""
    counted, attempt.counted = attempt.counted, []  # given back once, however often called
    for item, key in counted:
        counted_limits.refund(item, *key)


def refund_unanswered() -> None:
    """Give back every attempt of this request: it is answered 503, nothing was judged."""
    if not has_app_context():
        return
    for attempt in g.pop("throttle_attempts", []):
        try:
            succeeded(attempt)
        except Exception:  # the answer is a 503 anyway; the window will pass
            current_app.logger.warning("Could not give back a throttled attempt")
