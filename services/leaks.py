"""Leaked-token reports (as GitHub's secret-scanning partners send them).

Anyone may report strings that look like Keysmith tokens. Each real, not yet revoked
token among them is revoked at once and audited as reported leaked, and its
organization's admins see a banner. The answer is counts only: it never says whether
a given string was a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from extensions import db
from models import ApiToken, Organization, utcnow
from services import audit, tokens
from services import secrets as token_secrets
from services.actor import Actor, system_actor
from services.errors import ValidationFailed

MAX_REPORTED = 100
MAX_LENGTH = 200


@dataclass(frozen=True)
class LeakReport:
    received: int
    revoked: int


def check_report(strings: object) -> list[str]:
    """The reported strings, or ValidationFailed naming what is wrong with the list."""
    if not isinstance(strings, list):
        raise ValidationFailed(details={"tokens": "Send a JSON list of strings."})
    if not strings:
        raise ValidationFailed(details={"tokens": "The list is empty."})
    if len(strings) > MAX_REPORTED:
        raise ValidationFailed(details={"tokens": f"At most {MAX_REPORTED} strings per report."})
    for index, value in enumerate(strings):
        if not isinstance(value, str):
            raise ValidationFailed(details={f"tokens[{index}]": "Must be a string."})
        if len(value) > MAX_LENGTH or not token_secrets.TOKEN_PATTERN.fullmatch(value):
            raise ValidationFailed(
                details={f"tokens[{index}]": "Does not match the Keysmith token pattern."}
            )
    return strings


def _matching_token(secret: str, now: datetime) -> ApiToken | None:
    parsed = token_secrets.parse(secret)
    if parsed is None:
        return None
    token = db.session.get(ApiToken, parsed.token_id)
    if token is None or token.environment != parsed.environment:
        return None
    keys = [current_app.config["TOKEN_HMAC_KEY"], *current_app.config["TOKEN_HMAC_OLD_KEYS"]]
    if token_secrets.matches(secret, token.secret_hash, keys):
        return token
    # A previous secret still inside its grace period is as dangerous as the current one.
    in_grace = (
        token.previous_secret_expires_at is not None and token.previous_secret_expires_at > now
    )
    if in_grace and token_secrets.matches(secret, token.previous_secret_hash, keys):
        return token
    return None


def report_leaks(
    strings: object,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> LeakReport:
    now = now or utcnow()
    reported = check_report(strings)
    revoked = 0
    for secret in dict.fromkeys(reported):  # each distinct string once
        token = _matching_token(secret, now)
        if token is None or token.is_revoked:
            continue
        organization = db.session.get(Organization, token.organization_id)
        actor = system_actor(organization, "leak report", ip=ip, user_agent=user_agent)
        tokens.revoke_token(token, actor, reason="leaked", now=now)
        organization.leak_alert_at = now
        revoked += 1
    db.session.flush()
    return LeakReport(received=len(reported), revoked=revoked)


def dismiss_alert(organization: Organization, actor: Actor | None = None) -> None:
    """Hide the leak banner; audited as `leak_alert.dismissed` when a person dismisses it."""
    if actor is not None and organization.leak_alert_at is not None:
        audit.record(
            actor,
            "leak_alert.dismissed",
            target_type="organization",
            target_id=organization.id,
            target_label=organization.name,
            details={"leak_alert_at": organization.leak_alert_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
    organization.leak_alert_at = None
    db.session.flush()
