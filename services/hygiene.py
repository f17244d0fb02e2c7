"""Token hygiene: tokens about to expire, tokens nobody uses, and the notices about them."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from extensions import db
from models import ApiToken, Organization, utcnow
from services import audit, outbound
from services.actor import system_actor

EXPIRING_WITHIN = timedelta(days=7)
UNUSED_FOR = timedelta(days=30)
WEBHOOK_TIMEOUT_SECONDS = 5

log = logging.getLogger(__name__)


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


def webhook_secret(organization: Organization) -> str:
    """The key an organization's webhook receiver verifies our signature with: derived from
    WEBHOOK_SIGNING_KEY (by default TOKEN_HMAC_KEY), never stored, so a stolen database
    cannot forge notices."""
    config = current_app.config
    key = (config.get("WEBHOOK_SIGNING_KEY") or config["TOKEN_HMAC_KEY"]).encode()
    return hmac.new(key, f"keysmith webhook {organization.id}".encode(), hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe-style signature header value: t=<unix time>,v1=<HMAC-SHA256 of "t.body">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def post_webhook(organization: Organization, payload: dict) -> bool:
    """POST a signed JSON notice to the organization's webhook; False if it did not arrive."""
    if not organization.webhook_url:
        return False
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Keysmith-Webhook/1",
        "Keysmith-Signature": sign(body, webhook_secret(organization), int(time.time())),
    }
    # Checked again at the connection (SSRF): a URL saved before the check, or whose name
    # points somewhere else since, is refused here.
    result = outbound.post(organization.webhook_url, body, headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
    if not result.ok:
        log.warning("Webhook to organization %s failed: %s", organization.id, result.error)
    return result.ok


@dataclass
class ExpiryNotices:
    tokens: int = 0
    # (organization, payload, ids of the tokens the payload names)
    webhooks: list[tuple[Organization, dict, list[str]]] = field(default_factory=list)

    def deliver(self, now: datetime | None = None) -> int:
        """Post the webhook notices (after the caller committed the audit events) and mark
        the tokens of each notice that arrived; the caller commits again. A notice that
        did not arrive stays pending for the next run. Returns how many arrived."""
        now = now or utcnow()
        delivered = 0
        for organization, payload, token_ids in self.webhooks:
            if post_webhook(organization, payload):
                delivered += 1
                db.session.execute(
                    sa.update(ApiToken)
                    .where(ApiToken.id.in_(token_ids))
                    .values(expiry_webhook_sent_at=now)
                    .execution_options(synchronize_session=False)
                )
        return delivered


def notify_expiring(now: datetime | None = None) -> ExpiryNotices:
    """Write one `token.expiring` event per token expiring within 7 days (once per token),
    and prepare one webhook notice per organization with a webhook, naming its newly noted
    tokens and those whose notice did not arrive before; `deliver()` them after commit."""
    now = now or utcnow()
    due = db.session.scalars(
        sa.select(ApiToken)
        .where(expiring_filter(now), ApiToken.expiry_notified_at.is_(None))
        .order_by(ApiToken.organization_id, ApiToken.expires_at)
        .with_for_update(skip_locked=True)
    ).all()
    notices = ExpiryNotices(tokens=len(due))
    for token in due:
        token.expiry_notified_at = now
        audit.record(
            system_actor(token.organization, "expiry check"),
            "token.expiring",
            environment=token.environment,
            target_type="token",
            target_id=token.id,
            target_label=token.name,
            details={"expires_at": _iso(token.expires_at)},
        )
    db.session.flush()
    pending = db.session.scalars(
        sa.select(ApiToken)
        .join(Organization, Organization.id == ApiToken.organization_id)
        .where(
            expiring_filter(now),
            ApiToken.expiry_notified_at.is_not(None),
            ApiToken.expiry_webhook_sent_at.is_(None),
            Organization.webhook_url.is_not(None),
        )
        .order_by(ApiToken.organization_id, ApiToken.expires_at)
    ).all()
    by_org: dict[int, list[ApiToken]] = defaultdict(list)
    for token in pending:
        by_org[token.organization_id].append(token)
    for org_tokens in by_org.values():
        organization = org_tokens[0].organization
        payload = {
            "type": "token.expiring",
            "organization": {"id": organization.id, "name": organization.name},
            "tokens": [
                {
                    "id": t.id,
                    "name": t.name,
                    "environment": t.environment,
                    "prefix": t.prefix,
                    "expires_at": _iso(t.expires_at),
                }
                for t in org_tokens
            ],
        }
        notices.webhooks.append((organization, payload, [t.id for t in org_tokens]))
    return notices


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
