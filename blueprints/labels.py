"""Words for the values the pages show (issue 20): a rate limit, a duration, an audit
action and its details, as a person reads them; the raw value stays for filters and the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Flask

from services.rate_limits import windows_of

ACTION_SENTENCES = {
    "token.created": "Created a token",
    "token.rotated": "Rotated a token’s secret",
    "token.updated": "Changed a token",
    "token.suspended": "Suspended a token",
    "token.resumed": "Resumed a token",
    "token.revoked": "Revoked a token",
    "token.leaked": "A token was reported leaked",
    "token.expiring": "Warned that a token expires soon",
    "token.ip_denied": "Refused a request from outside a token’s IP allowlist",
    "token.kept": "Kept a token whose secret holder left",
    "member.invited": "Invited someone",
    "member.joined": "Joined the organization",
    "member.removed": "Removed a member",
    "member.role_changed": "Changed a member’s role",
    "invite.cancelled": "Revoked an invite",
    "policy.updated": "Changed the key policy",
    "user.signed_in": "Signed in",
    "user.sign_in_failed": "Failed to sign in",
    "user.password_changed": "Changed their password",
    "user.two_factor_enabled": "Turned on two-factor sign-in",
    "user.two_factor_disabled": "Turned off two-factor sign-in",
    "webhook.created": "Added a webhook endpoint",
    "webhook.updated": "Changed a webhook endpoint",
    "webhook.deleted": "Deleted a webhook endpoint",
    "webhook.redelivered": "Sent a webhook delivery again",
    "webhook.secret_revealed": "Revealed a webhook signing secret",
    "webhook.secret_rolled": "Rolled a webhook signing secret",
}
DETAIL_NAMES = {
    "grace_period_seconds": "Old secret kept working for",
    "expires_at": "Expiry",
    "allowed_ips": "Allowed IPs",
    "rate_limit": "Rate limit",
    "scopes": "Scopes",
    "max_lifetime_days": "Longest lifetime",
    "allow_never_expires": "Tokens that never expire",
    "require_two_factor": "Two-factor sign-in required",
}
UNITS = ((7 * 86400, "week"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def duration_words(seconds: object) -> str:
    """86400 → "24 hours", 604800 → "7 days", 0 → "none"."""
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return str(seconds)
    if seconds == 0:
        return "none"
    # Whole days from two days up ("7 days"); below that hours read better ("24 hours").
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        count, unit = seconds // 86400, "day"
    elif seconds % 3600 == 0:
        count, unit = seconds // 3600, "hour"
    elif seconds % 60 == 0:
        count, unit = seconds // 60, "minute"
    else:
        count, unit = seconds, "second"
    return f"{count:,} {unit}{'s' if count != 1 else ''}"


def _per(seconds: int) -> str:
    for size, unit in UNITS:
        if seconds == size:
            return f"an {unit}" if unit == "hour" else f"a {unit}"
        if seconds % size == 0:
            return f"every {seconds // size} {unit}s"
    return f"every {seconds} seconds"


def rate_limit_words(limit: object) -> str:
    """ "1000/minute;100/second" → "1,000 a minute, bursts of 100 a second"."""
    windows = windows_of(limit) if isinstance(limit, str) else ()
    if not windows:
        return str(limit) if limit else "none"
    longest, *shorter = sorted(windows, key=lambda w: w.seconds, reverse=True)
    words = [f"{longest.amount:,} {_per(longest.seconds)}"]
    words += [f"bursts of {w.amount:,} {_per(w.seconds)}" for w in shorter]
    return ", ".join(words)


def _iso_words(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def value_words(key: str, value: Any) -> str:
    """One audit detail's value, in words."""
    if value is None:
        return {"expires_at": "never", "rate_limit": "the key policy’s default"}.get(key, "—")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "grace_period_seconds":
        return duration_words(value)
    if key == "rate_limit":
        return rate_limit_words(value) if value else "the key policy’s default"
    if isinstance(value, list | tuple):
        if not value:
            return "none (all the role allows)" if key == "scopes" else "none"
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and key.endswith("_at"):
        return _iso_words(value) or value
    if isinstance(value, str):
        return value.replace("_", " ") if key in ("reason", "role") else value
    return f"{value:,}" if isinstance(value, int) else str(value)


def detail_lines(details: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """An audit event's details as (name, words) pairs; a change reads "from → to"."""
    lines = []
    for key, value in (details or {}).items():
        name = DETAIL_NAMES.get(key, key.replace("_", " ").capitalize())
        if isinstance(value, Mapping) and "from" in value:
            text = f"{value_words(key, value['from'])} → {value_words(key, value.get('to'))}"
        elif isinstance(value, Mapping):
            text = "; ".join(
                f"{k.replace('_', ' ')}: {value_words(k, v)}" for k, v in value.items()
            )
        else:
            text = value_words(key, value)
        lines.append((name, text))
    return lines


def action_sentence(action: str) -> str:
    return ACTION_SENTENCES.get(action, action.replace(".", ": ").replace("_", " ").capitalize())


def register_labels(app: Flask) -> None:
    app.add_template_filter(rate_limit_words, "rate_words")
    app.add_template_filter(duration_words, "duration_words")
    app.add_template_filter(action_sentence, "action_sentence")
    app.add_template_filter(detail_lines, "detail_lines")
