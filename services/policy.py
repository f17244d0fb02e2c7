"""The key policy of an organization (SPEC §6): limits that new tokens obey at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

from extensions import db
from models import Organization
from services import audit, two_factor
from services.actor import Actor
from services.errors import Forbidden, ValidationFailed

MAX_LIVE_TOKENS = (1, 100_000)
MAX_LIFETIME_DAYS = (1, 3650)
RATE_LIMIT_MAX = 200
WEBHOOK_MAX = 500
FIELDS = (
    "max_live_tokens",
    "max_lifetime_days",
    "allow_never_expires",
    "rate_limit",
    "webhook_url",
    "require_two_factor",
)


@dataclass(frozen=True)
class Policy:
    max_live_tokens: int
    max_lifetime_days: int
    allow_never_expires: bool
    rate_limit: str
    webhook_url: str | None
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
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
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
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(details={"rate_limit": "A default rate limit is required."})
    return check_rate_limit(value.strip())


def normalize_webhook_url(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValidationFailed(details={"webhook_url": "The webhook URL must be text."})
    url = value.strip()
    parts = urlsplit(url)
    if len(url) > WEBHOOK_MAX or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            details={"webhook_url": "Enter a full http:// or https:// URL, or leave it empty."}
        )
    if any(ch.isspace() for ch in url):
        raise ValidationFailed(details={"webhook_url": "The URL may not contain spaces."})
    return url


def update_policy(
    organization: Organization,
    actor: Actor,
    *,
    max_live_tokens: object,
    max_lifetime_days: object,
    allow_never_expires: object,
    rate_limit: object,
    webhook_url: object = None,
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
        "webhook_url": lambda: normalize_webhook_url(webhook_url),
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
    db.session.flush()
    return changes
