"""Token hygiene: tokens about to expire, tokens nobody uses, and the notices about them."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from models import ApiToken, Organization, utcnow
from services import audit, webhooks
from services.actor import system_actor

EXPIRING_WITHIN = timedelta(days=7)
UNUSED_FOR = timedelta(days=30)


def is_expiring(token: ApiToken, now: datetime) -> bool:
    return (
        token.revoked_at is None
        and token.expires_at is not None
        and now < token.expires_at <= now + EXPIRING_WITHIN
    )


def is_unused(token: ApiToken, now: datetime) -> bool:
    """Never used, or not used for 30 days, and old enough for that to mean something."""
    if token.revoked_at is not None or token.created_at > now - UNUSED_FOR:
        return False
    return token.last_used_at is None or token.last_used_at <= now - UNUSED_FOR


def expiring_filter(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        ApiToken.revoked_at.is_(None),
        ApiToken.expires_at > now,
        ApiToken.expires_at <= now + EXPIRING_WITHIN,
    )


def unused_filter(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        ApiToken.revoked_at.is_(None),
        ApiToken.created_at <= now - UNUSED_FOR,
        sa.or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - UNUSED_FOR),
    )


def badges(token: ApiToken, now: datetime) -> tuple[str, ...]:
    """The hygiene badges a token's row shows: "expiring", "unused", both or neither."""
    return tuple(
        name
        for name, applies in (("expiring", is_expiring), ("unused", is_unused))
        if applies(token, now)
    )


def counts(organization: Organization, environment: str, now: datetime) -> dict[str, int]:
    """How many of one environment's tokens expire soon and how many are unused, in one query."""
    expiring, unused = db.session.execute(
        sa.select(
            sa.func.count().filter(expiring_filter(now)),
            sa.func.count().filter(unused_filter(now)),
        ).where(ApiToken.organization_id == organization.id, ApiToken.environment == environment)
    ).one()
    return {"expiring": expiring or 0, "unused": unused or 0}


def notify_expiring(now: datetime | None = None) -> int:
    """Audit `token.expiring` once per token expiring within 7 days, and write its webhook
    event in the same transaction (the delivery worker posts it); returns how many."""
    now = now or utcnow()
    due = db.session.scalars(
        sa.select(ApiToken)
        .where(expiring_filter(now), ApiToken.expiry_notified_at.is_(None))
        .order_by(ApiToken.organization_id, ApiToken.expires_at)
        .with_for_update(skip_locked=True)
    ).all()
    for token in due:
        token.expiry_notified_at = now
        actor = system_actor(token.organization, "expiry check")
        audit.record(
            actor,
            "token.expiring",
            environment=token.environment,
            target_type="token",
            target_id=token.id,
            target_label=token.name,
            details={"expires_at": _iso(token.expires_at)},
        )
        webhooks.emit(
            token.organization, "token.expiring", {"token": webhooks.token_data(token)}, actor=actor
        )
    db.session.flush()
    return len(due)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
