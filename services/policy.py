"""The key policy of an organization (SPEC §6): limits that new tokens obey at once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import current_app
from limits import parse_many

from extensions import db
from models import Organization
from services import audit, two_factor, webhooks
from services.actor import Actor
from services.errors import Forbidden, ValidationFailed

MAX_LIVE_TOKENS = (1, 100_000)
MAX_LIFETIME_DAYS = (1, 3650)
RATE_LIMIT_MAX = 200
FIELDS = (
    "max_live_tokens",
    "max_lifetime_days",
    "allow_never_expires",
    "rate_limit",
    "require_two_factor",
)


@dataclass(frozen=True)
class Policy:
    max_live_tokens: int
    max_lifetime_days: int
    allow_never_expires: bool
    rate_limit: str
    require_two_factor: bool = False


def policy_of(organization: Organization) -> Policy:
    return Policy(**{field: getattr(organization, field) for field in FIELDS})


def can_change_policy(actor: Actor) -> bool:
    """Owners and admins (and the system) change the key policy (SPEC §1)."""
    if actor.token is not None:
        return False
    return actor.membership is None or actor.membership.role in ("owner", "admin")


def _whole_number(field: str, value: object, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if (
        isinstance(value, str)
        and value.strip().lstrip("-").isascii()
        and value.strip().lstrip("-").isdigit()
    ):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed(details={field: f"Enter a whole number from {low} to {high:,}."})
    return value


def check_rate_limit(text: str) -> str:
    """A limit in Flask-Limiter's syntax, each amount at least 1 (a limit of 0 would shut
    every request out); ValidationFailed on `rate_limit` otherwise."""
    if len(text) > RATE_LIMIT_MAX:
        raise ValidationFailed(details={"rate_limit": f"At most {RATE_LIMIT_MAX} characters."})
    try:
        parsed = parse_many(text)
    except ValueError:
        parsed = []
    if parsed and any(item.amount < 1 for item in parsed):
        raise ValidationFailed(
            details={
                "rate_limit": "Each limit must allow at least 1 request: 0 would stop every token."
            }
        )
    if not parsed:
        raise ValidationFailed(
            details={
                "rate_limit": "Use the form “1000/minute;100/second” "
                "(a number, a slash and second, minute, hour or day; several joined by ;)."
            }
        )
    return text


def normalize_rate_limit(value: object) -> str:
    """The policy's default rate limit: well formed and within the operator's maximum."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(details={"rate_limit": "A default rate limit is required."})
    text = check_rate_limit(value.strip())
    ceiling = operator_max()
    if not rate_limit_within(text, ceiling):
        raise ValidationFailed(
            details={"rate_limit": f"At most the operator's maximum, {ceiling} (RATE_LIMIT_MAX)."}
        )
    return text


# ---------------------------------------------------------------- rate limit ceilings


@lru_cache(maxsize=4096)
def _windows(text: str) -> tuple[tuple[int, float], ...]:
    """(amount, window seconds) of each limit in `text`; () if it does not parse."""
    try:
        return tuple((item.amount, float(item.get_expiry())) for item in parse_many(text))
    except ValueError:
        return ()


def _most_within(windows: tuple[tuple[int, float], ...], seconds: float) -> float:
    """The most requests these limits let through in any `seconds`-long stretch."""
    most = math.inf
    for amount, window in windows:
        most = min(most, amount * math.ceil(seconds / window) if window <= seconds else amount)
    return most


@lru_cache(maxsize=4096)
def rate_limit_within(limit: str, ceiling: str) -> bool:
    """Does `limit` never let through more than `ceiling` would, over each of the ceiling's
    windows? ("5/minute" is within "1000/minute;100/second"; "100/day" is not within
    "5/minute", since all 100 may come in one minute.) An unreadable ceiling bounds nothing;
    an unreadable limit is never within one."""
    bounds = _windows(ceiling)
    if not bounds:
        return True
    windows = _windows(limit)
    if not windows:
        return False
    return all(_most_within(windows, seconds) <= amount for amount, seconds in bounds)


def operator_max() -> str:
    """RATE_LIMIT_MAX: no organization's policy, and so no token, goes above it."""
    return current_app.config["RATE_LIMIT_MAX"]


def token_rate_limit(own: str | None, organization: str | None) -> str:
    """The limit a token with this own limit gets in an organization with this policy."""
    config = current_app.config
    return bounded_rate_limit(
        own, organization, config["RATE_LIMIT_MAX"], config["RATE_LIMIT_DEFAULT"]
    )


@lru_cache(maxsize=4096)
def bounded_rate_limit(
    own: str | None, organization: str | None, maximum: str, default: str | None = None
) -> str:
    """The limit a token gets: its own if within its organization's policy, else the
    policy's (`default` where the policy has none), which itself holds only within the
    operator's maximum. A policy lowered after a token was given its own limit lowers that
    token at once."""
    policy_limit = next((x for x in (organization, default) if x and _windows(x)), None)
    policy_limit = maximum if policy_limit is None else _both(policy_limit, maximum)
    if own and _windows(own):
        return _both(own, policy_limit)
    return policy_limit


def _both(limit: str, ceiling: str) -> str:
    """Every window of both, less those the other already implies: a token's own
    `50/minute` under a policy lowered to `1000/minute;10/second` keeps its 50 a minute
    *and* gets the 10 a second (an attack review found the policy's 1000 a minute given
    instead). The tighter whole when one is within the other."""
    if rate_limit_within(limit, ceiling):
        return limit
    if rate_limit_within(ceiling, limit):
        return ceiling
    extra = [item for item in _items(ceiling) if not rate_limit_within(limit, item)]
    return ";".join([limit, *extra])


def _items(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;|]", text) if part.strip()]


def update_policy(
    organization: Organization,
    actor: Actor,
    *,
    max_live_tokens: object,
    max_lifetime_days: object,
    allow_never_expires: object,
    rate_limit: object,
    require_two_factor: object = None,
) -> dict[str, dict[str, Any]]:
    """Change the policy; returns what changed as {field: {"from", "to"}}, audited once."""
    if not can_change_policy(actor):
        raise Forbidden("Only owners and admins can change the key policy.")
    checks = {
        "max_live_tokens": lambda: _whole_number(
            "max_live_tokens", max_live_tokens, MAX_LIVE_TOKENS
        ),
        "max_lifetime_days": lambda: _whole_number(
            "max_lifetime_days", max_lifetime_days, MAX_LIFETIME_DAYS
        ),
        "rate_limit": lambda: normalize_rate_limit(rate_limit),
    }
    values: dict[str, Any] = {}
    details: dict[str, str] = {}
    for field, check in checks.items():
        try:
            values[field] = check()
        except ValidationFailed as exc:
            details.update(exc.details)
    if not isinstance(allow_never_expires, bool):
        details["allow_never_expires"] = "Must be true or false."
    if require_two_factor is None:  # not given: unchanged
        require_two_factor = organization.require_two_factor
    if not isinstance(require_two_factor, bool):
        details["require_two_factor"] = "Must be true or false."
    elif require_two_factor and not organization.require_two_factor:
        # As GitHub: whoever requires it has it, so they cannot lock themselves out.
        user = actor.user
        if user is not None and not two_factor.is_enabled(user):
            details["require_two_factor"] = (
                "Turn on two-factor sign-in for yourself first (Settings → Account)."
            )
    if details:
        raise ValidationFailed(details=details)
    values["allow_never_expires"] = allow_never_expires
    values["require_two_factor"] = require_two_factor

    changes = {
        field: {"from": getattr(organization, field), "to": values[field]}
        for field in FIELDS
        if getattr(organization, field) != values[field]
    }
    for field, change in changes.items():
        setattr(organization, field, change["to"])
    if changes:
        audit.record(
            actor,
            "policy.updated",
            target_type="policy",
            target_id=organization.id,
            target_label=organization.name,
            details=changes,
        )
        webhooks.emit(organization, "policy.updated", {"changes": changes}, actor=actor)
    db.session.flush()
    return changes
