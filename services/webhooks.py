"""Webhooks (SPEC §9): endpoints, events written to an outbox with the change they tell of,
and their signed, retried deliveries.

Events: `emit()` adds an event and one pending delivery per enabled endpoint that wants
it, in the caller's transaction (it never commits): a committed change always has its
event, a rolled-back one never does. The delivery worker (`deliver_due`, run by
`flask keysmith deliver`) posts them at least once.

Delivery (`deliver_due`): a worker claims due deliveries (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, a conditional UPDATE everywhere) by moving their next attempt a lease ahead,
commits, posts outside any transaction through services/outbound.py, then records the
answer. The claim is fenced by the attempt number it set: right before posting the worker
checks that the delivery still carries it (and that enough of the lease is left for a
whole post), and the answer is recorded only where it still does, so a worker whose lease
ran out neither posts nor overwrites the attempt another worker has claimed since. A post
takes at most 5 s of wall-clock time (outbound.post), a batch at most BATCH of them, and
the lease is several times that; a worker that dies mid-post leaves the delivery due again
when its lease ends (at least once).

Secrets: an endpoint's signing secret is HMAC(WEBHOOK_SIGNING_KEY, "keysmith webhook
<salt>"); only the salt is stored, so the database alone can neither reveal nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from extensions import db
from models import (
    EVENT_TYPES,
    PING,
    ROLE_SCOPES,
    ApiToken,
    Organization,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)
from services import audit, outbound
from services.actor import Actor
from services.errors import DomainError, Forbidden, NotFound, ValidationFailed

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret
ROLL_OVERLAP = timedelta(hours=24)  # Stripe's default: the old secret signs beside the new
MAX_ENDPOINTS = 20
UNSET: Any = object()
# Delivery: retried with exponential backoff and jitter for 3 days, then given up.
RETRY_FOR = timedelta(days=3)
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 6 * 3600
# A worker claims at most BATCH deliveries at once and posts them one after the other, each
# within outbound.TIMEOUT_SECONDS: 50 s at most. It holds the claim this long (a worker that
# died mid-post frees it then), and posts only while at least POST_MARGIN of it is left.
BATCH = 10
LEASE = timedelta(minutes=5)
POST_MARGIN = timedelta(seconds=30)
# Events and their deliveries are kept this long once nothing about them is pending (Stripe).
KEEP_FOR = timedelta(days=30)

log = logging.getLogger(__name__)


class WebhookLimitReached(DomainError):
    """As `token_limit_reached`: it depends on what exists, not on the request."""

    code = "webhook_limit_reached"
    message = "This organization has reached its maximum number of webhook endpoints."


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(16))


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


# ---------------------------------------------------------------- permissions and look-ups


def can_manage(actor: Actor) -> bool:
    """Owners and admins, and admin-role tokens of theirs with every scope (SPEC §4)."""
    if actor.membership is None:
        return actor.token is None  # the system (CLI)
    if actor.membership.role not in ("owner", "admin"):
        return False
    if actor.token is None:
        return True
    # A writer has every scope too: the role is what says "admin".
    return actor.token.role == "admin" and actor.scopes == ROLE_SCOPES["admin"]


def _require_manage(actor: Actor) -> None:
    if not can_manage(actor):
        raise Forbidden("Only owners and admins manage webhooks.")


def endpoints_of(organization: Organization) -> sa.Select[tuple[WebhookEndpoint]]:
    return (
        sa.select(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == organization.id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )


def get_endpoint_or_404(organization: Organization, endpoint_id: str) -> WebhookEndpoint:
    endpoint = db.session.scalar(
        sa.select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == organization.id,
            WebhookEndpoint.id == str(endpoint_id)[:32],
        )
    )
    if endpoint is None:
        raise NotFound("No such webhook endpoint in this organization.")
    return endpoint


def deliveries_of(endpoint: WebhookEndpoint) -> sa.Select[tuple[WebhookDelivery]]:
    """The endpoint's deliveries, newest first, each with its event (no query per row)."""
    return (
        sa.select(WebhookDelivery)
        .where(
            WebhookDelivery.organization_id == endpoint.organization_id,
            WebhookDelivery.endpoint_id == endpoint.id,
        )
        .options(sa.orm.joinedload(WebhookDelivery.event))
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    )


def get_delivery_or_404(endpoint: WebhookEndpoint, delivery_id: str) -> WebhookDelivery:
    delivery = db.session.scalar(
        deliveries_of(endpoint).where(WebhookDelivery.id == str(delivery_id)[:32])
    )
    if delivery is None:
        raise NotFound("No such delivery of this endpoint.")
    return delivery


def last_deliveries(organization: Organization) -> dict[str, WebhookDelivery]:
    """Each endpoint's newest delivery, in one query (the list page shows it per row)."""
    newest = (
        sa.select(
            WebhookDelivery.id,
            sa.func.row_number()
            .over(
                partition_by=WebhookDelivery.endpoint_id,
                order_by=(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()),
            )
            .label("n"),
        )
        .where(WebhookDelivery.organization_id == organization.id)
        .subquery()
    )
    rows = db.session.scalars(
        sa.select(WebhookDelivery)
        .join(newest, newest.c.id == WebhookDelivery.id)
        .where(newest.c.n == 1)
        .options(sa.orm.joinedload(WebhookDelivery.event))
    ).all()
    return {row.endpoint_id: row for row in rows}


def failing_endpoints(organization: Organization) -> list[WebhookEndpoint]:
    return list(
        db.session.scalars(
            endpoints_of(organization).where(WebhookEndpoint.failing_since.is_not(None))
        )
    )


# ---------------------------------------------------------------- secrets and signatures


def _signing_key() -> bytes:
    config = current_app.config
    return (config.get("WEBHOOK_SIGNING_KEY") or config["TOKEN_HMAC_KEY"]).encode()


def secret_for(salt: str) -> str:
    """The signing secret of a salt. A digits-only salt is an organization id: the endpoint
    migrated from the key policy keeps the secret its receiver already has."""
    digest = hmac.new(_signing_key(), f"keysmith webhook {salt}".encode(), hashlib.sha256)
    return digest.hexdigest() if salt.isdigit() else SECRET_PREFIX + digest.hexdigest()


def _new_salt() -> str:
    return "s" + secrets.token_urlsafe(24)  # never all digits


def signing_secrets(endpoint: WebhookEndpoint, now: datetime | None = None) -> list[str]:
    """The current secret, and the previous one while its 24 hours of overlap last."""
    now = now or utcnow()
    keys = [secret_for(endpoint.secret_salt)]
    if (
        endpoint.previous_secret_salt
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        keys.append(secret_for(endpoint.previous_secret_salt))
    return keys


def sign(body: bytes, keys: Iterable[str], timestamp: int) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`, one v1 per secret (as Stripe does
    while a rolled secret overlaps): a receiver accepts the request if any v1 matches."""
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(k.encode(), signed, hashlib.sha256).hexdigest()}" for k in keys]
    return ",".join(parts)


# ---------------------------------------------------------------- endpoints


def _events(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(details={"events": "Give a list of event types."})
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            details={"events": f"Unknown event type {unknown[0][:40]!r}; choose from the list."}
        )
    if not value:
        raise ValidationFailed(details={"events": "Choose at least one event."})
    return [t for t in EVENT_TYPES if t in value]  # stored in the documented order


def _check(
    organization_id: int, url: object = UNSET, events: object = UNSET, enabled: object = UNSET
) -> dict:
    values: dict[str, Any] = {}
    details: dict[str, str] = {}
    if url is not UNSET:
        try:
            values["url"] = outbound.check_url(url, tenant=organization_id)
        except outbound.UnsafeURL as exc:
            details["url"] = exc.reason
    if events is not UNSET:
        try:
            values["events"] = _events(events)
        except ValidationFailed as exc:
            details.update(exc.details)
    if enabled is not UNSET:
        if not isinstance(enabled, bool):
            details["enabled"] = "Must be true or false."
        else:
            values["enabled"] = enabled
    if details:
        raise ValidationFailed(details=details)
    return values


def _record(actor: Actor, action: str, endpoint: WebhookEndpoint, details: Mapping) -> None:
    # Every role reads the audit log: the URL (which may carry its own secret) stays out, and
    # so does its host (a per-user subdomain can be one too). The endpoint's id names it.
    audit.record(
        actor,
        action,
        target_type="webhook",
        target_id=endpoint.id,
        target_label=endpoint.id,
        details=dict(details),
    )


def create_endpoint(
    organization: Organization,
    actor: Actor,
    *,
    url: object,
    events: object,
    enabled: object = True,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (to show once)."""
    _require_manage(actor)
    values = _check(organization.id, url, events, enabled)
    count = db.session.scalar(
        sa.select(sa.func.count()).where(WebhookEndpoint.organization_id == organization.id)
    )
    if count >= MAX_ENDPOINTS:
        raise WebhookLimitReached(f"An organization has at most {MAX_ENDPOINTS} endpoints.")
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=_random_id("we_"),
        organization_id=organization.id,
        secret_salt=_new_salt(),
        created_by_label=actor.label,
        created_at=now,
        updated_at=now,
        **values,
    )
    db.session.add(endpoint)
    _record(actor, "webhook.created", endpoint, {"events": values["events"]})
    db.session.flush()
    return endpoint, secret_for(endpoint.secret_salt)


def update_endpoint(
    endpoint: WebhookEndpoint,
    actor: Actor,
    *,
    url: object = UNSET,
    events: object = UNSET,
    enabled: object = UNSET,
) -> dict[str, Any]:
    """Change what was given; returns what changed (the URL only as "changed")."""
    _require_manage(actor)
    values = _check(endpoint.organization_id, url, events, enabled)
    changes: dict[str, Any] = {}
    for field, value in values.items():
        old = getattr(endpoint, field)
        if old != value:
            changes[field] = "changed" if field == "url" else {"from": old, "to": value}
            setattr(endpoint, field, value)
    if changes:
        if "url" in changes:
            endpoint.failing_since = None  # a new address deserves a fresh start
        endpoint.updated_at = utcnow()
        _record(actor, "webhook.updated", endpoint, changes)
    db.session.flush()
    return changes


def delete_endpoint(endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Delete the endpoint and its deliveries; its pending ones are never sent."""
    _require_manage(actor)
    _record(actor, "webhook.deleted", endpoint, {"events": endpoint.events})
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    db.session.delete(endpoint)
    db.session.flush()


def roll_secret(endpoint: WebhookEndpoint, actor: Actor, *, now: datetime | None = None) -> str:
    """A new secret; the old one keeps signing beside it for 24 hours. Rolling again within
    those hours ends the older overlap: at most two secrets sign at once."""
    _require_manage(actor)
    now = now or utcnow()
    endpoint.previous_secret_salt = endpoint.secret_salt
    endpoint.previous_secret_expires_at = now + ROLL_OVERLAP
    endpoint.secret_salt = _new_salt()
    endpoint.updated_at = now
    _record(
        actor,
        "webhook.secret_rolled",
        endpoint,
        {"previous_secret_expires_at": _iso(endpoint.previous_secret_expires_at)},
    )
    db.session.flush()
    return secret_for(endpoint.secret_salt)


def end_previous_secret(endpoint: WebhookEndpoint, actor: Actor) -> bool:
    """Stop the rolled-over secret signing now, before its 24 hours (the receiver has the new
    one, or the old one leaked). False, and nothing recorded, when none overlaps."""
    _require_manage(actor)
    if endpoint.previous_secret_salt is None and endpoint.previous_secret_expires_at is None:
        return False
    overlapped = len(signing_secrets(endpoint)) > 1
    endpoint.previous_secret_salt = None
    endpoint.previous_secret_expires_at = None
    endpoint.updated_at = utcnow()
    if overlapped:
        _record(actor, "webhook.previous_secret_ended", endpoint, {})
    db.session.flush()
    return overlapped


def reveal_secret(endpoint: WebhookEndpoint, actor: Actor) -> str:
    """The current secret again, for a person who re-entered their password (the view checks
    it); audited, since it hands out what can sign."""
    _require_manage(actor)
    _record(actor, "webhook.secret_revealed", endpoint, {})
    db.session.flush()
    return secret_for(endpoint.secret_salt)


# ---------------------------------------------------------------- events (the outbox)


def _actor_data(actor: Actor | None) -> dict[str, str] | None:
    if actor is None:
        return None
    return {"type": actor.kind, "label": actor.label}


def token_data(token: ApiToken) -> dict[str, Any]:
    """What an event says about a token: its metadata, never a secret or a hash."""
    return {
        "id": token.id,
        "name": token.name,
        "environment": token.environment,
        "role": token.role,
        "scopes": list(token.scopes or []),
        "type": token.type,
        "prefix": token.prefix,
        "status": token.status,
        "created_at": _iso(token.created_at),
        "expires_at": _iso(token.expires_at),
        "revoked_at": _iso(token.revoked_at),
        "created_by": token.created_by_label,
    }


def _subscribers(organization_id: int, event_type: str) -> list[WebhookEndpoint]:
    endpoints = db.session.scalars(
        sa.select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == organization_id,
            WebhookEndpoint.enabled.is_(True),
        )
    ).all()
    return [e for e in endpoints if event_type in (e.events or [])]


def _write_event(
    organization_id: int,
    event_type: str,
    data: Mapping[str, Any],
    actor: Actor | None,
    endpoints: list[WebhookEndpoint],
    now: datetime,
) -> WebhookEvent:
    event_id = _random_id("evt_")
    event = WebhookEvent(
        id=event_id,
        organization_id=organization_id,
        type=event_type,
        created_at=now,
        payload={
            "id": event_id,
            "type": event_type,
            "created": _iso(now),
            "organization_id": organization_id,
            "actor": _actor_data(actor),
            "data": dict(data),
        },
    )
    db.session.add(event)
    for endpoint in endpoints:
        db.session.add(
            WebhookDelivery(
                id=_random_id("whd_"),
                organization_id=organization_id,
                endpoint_id=endpoint.id,
                event_id=event_id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return event


def emit(
    organization: Organization | int,
    event_type: str,
    data: Mapping[str, Any],
    *,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> WebhookEvent | None:
    """Write an event and its deliveries in the caller's transaction; None when no enabled
    endpoint wants this type (nothing is stored then). Never put a secret in `data`."""
    assert event_type in EVENT_TYPES, event_type
    org_id = organization if isinstance(organization, int) else organization.id
    endpoints = _subscribers(org_id, event_type)
    if not endpoints:
        return None
    return _write_event(org_id, event_type, data, actor, endpoints, now or utcnow())


def token_changed(action: str, token: ApiToken, actor: Actor, details: Mapping) -> None:
    """The token service tells us of every audited change; some are events."""
    if action in ("token.created", "token.rotated", "token.revoked"):
        data: dict[str, Any] = {"token": token_data(token)}
        if action == "token.rotated":
            data["previous_secret_expires_at"] = _iso(token.previous_secret_expires_at)
        if action == "token.revoked":
            data["reason"] = details.get("reason")
        emit(token.organization_id, action, data, actor=actor)
        if action == "token.revoked" and details.get("reason") == "leaked":
            emit(token.organization_id, "token.leaked", {"token": token_data(token)}, actor=actor)


def member_removed(
    actor: Actor, member_id: int, email: str, role: str, revoked: Iterable[ApiToken]
) -> None:
    emit(
        actor.organization,
        "member.removed",
        {
            "member": {"id": member_id, "email": email, "role": role},
            "revoked_token_ids": [t.id for t in revoked],
        },
        actor=actor,
    )


def send_test_event(endpoint: WebhookEndpoint, actor: Actor) -> WebhookDelivery:
    """A `ping` to this one endpoint (enabled or not: that is what testing it is for)."""
    _require_manage(actor)
    now = utcnow()
    event = _write_event(
        endpoint.organization_id,
        PING,
        {"message": "A test event from Keysmith.", "endpoint_id": endpoint.id},
        actor,
        [endpoint],
        now,
    )
    db.session.flush()
    return db.session.scalars(
        sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
    ).one()


def redeliver(delivery: WebhookDelivery, actor: Actor) -> WebhookDelivery:
    """Send the same event (same id, same body) to the endpoint again, as a new delivery."""
    _require_manage(actor)
    now = utcnow()
    again = WebhookDelivery(
        id=_random_id("whd_"),
        organization_id=delivery.organization_id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    db.session.add(again)
    _record(actor, "webhook.redelivered", delivery.endpoint, {"event_id": delivery.event_id})
    db.session.flush()
    return again


# ---------------------------------------------------------------- delivery


def backoff(attempts: int) -> timedelta:
    """The wait after the n-th failed attempt: 30 s doubling up to 6 h, with "equal jitter"
    (between half and all of it), so each wait is at least as long as the one before and
    many failing deliveries do not retry in step."""
    ceiling = min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


def _due(now: datetime) -> sa.Select:
    return (
        sa.select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            # A disabled endpoint's deliveries wait for it; a test event goes regardless.
            sa.or_(WebhookEndpoint.enabled.is_(True), WebhookEvent.type == PING),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    )


def _take(ids: Iterable[str], now: datetime) -> dict[str, int]:
    """Move the attempt a lease ahead, only if still due: the rows that matched are ours,
    each with the attempt number this claim gave it (the claim's fencing token)."""
    rows = db.session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(list(ids)),
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(
            next_attempt_at=now + LEASE,
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=now,
        )
        .returning(WebhookDelivery.id, WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return {row.id: row.attempts for row in rows}


def claim(now: datetime, limit: int = BATCH) -> dict[str, int]:
    """Claim up to `limit` (at most BATCH) due deliveries for this worker, and commit the
    claim: {delivery id: the attempt number that is ours}, oldest due first."""
    limit = min(limit, BATCH)
    if db.engine.dialect.name == "postgresql":
        ids = list(
            db.session.scalars(
                _due(now).limit(limit).with_for_update(skip_locked=True, of=WebhookDelivery)
            )
        )
        taken = _take(ids, now) if ids else {}  # the rows are locked by us: every one matches
        db.session.commit()
        return {i: taken[i] for i in ids if i in taken}
    # SQLite has one writer: each claim is its own short write, checked by what it returned.
    candidates = list(db.session.scalars(_due(now).limit(limit)))
    db.session.rollback()
    claimed: dict[str, int] = {}
    for delivery_id in candidates:
        claimed.update(_take([delivery_id], now))
        db.session.commit()
    return claimed


def still_ours(delivery: WebhookDelivery, attempts: int, now: datetime) -> bool:
    """The claim that gave this attempt number is still the delivery's, with time enough
    left on its lease for a whole post."""
    return (
        delivery.status == "pending"
        and delivery.attempts == attempts
        and delivery.next_attempt_at is not None
        and delivery.next_attempt_at >= now + POST_MARGIN
    )


def body_of(event: WebhookEvent) -> bytes:
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class _Attempt:
    """What a worker needs of a claimed delivery, read before the post so that recording the
    answer is writes only (SQLite: a write after a read can meet another writer's commit)."""

    delivery_id: str
    organization_id: int
    endpoint_id: str
    event_id: str
    attempts: int
    created_at: datetime
    url: str
    body: bytes
    headers: dict[str, str]


def _attempt(delivery: WebhookDelivery, attempts: int) -> _Attempt:
    endpoint, event = delivery.endpoint, delivery.event
    body = body_of(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Keysmith-Webhook/1",
        "Keysmith-Event-Id": event.id,
        "Keysmith-Event-Type": event.type,
        "Keysmith-Delivery-Id": delivery.id,
        "Keysmith-Signature": sign(body, signing_secrets(endpoint), int(time.time())),
    }
    return _Attempt(
        delivery.id,
        delivery.organization_id,
        endpoint.id,
        event.id,
        attempts,
        delivery.created_at,
        endpoint.url,
        body,
        headers,
    )


def _record_result(attempt: _Attempt, result: outbound.Result, now: datetime) -> str:
    """Record the answer where our claim still holds; "lost" (nothing written) if another
    worker has claimed the delivery since, or it was deleted."""
    if result.ok:
        status, next_at = "succeeded", None
    elif now - attempt.created_at >= RETRY_FOR:
        status, next_at = "failed", None
    else:
        status, next_at = "pending", now + backoff(attempt.attempts)
    matched = db.session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == attempt.delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempts == attempt.attempts,
        )
        .values(
            status=status,
            next_attempt_at=next_at,
            delivered_at=now if result.ok else None,
            last_status_code=result.status,
            last_duration_ms=result.duration_ms,
            last_error=(result.error or "")[:200] or None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if not matched:
        db.session.rollback()
        log.warning(
            "Webhook delivery %s (event %s): attempt %s was claimed by another worker since; "
            "its answer is not recorded",
            attempt.delivery_id,
            attempt.event_id,
            attempt.attempts,
        )
        return "lost"
    if status != "pending":
        # Marked failing after 3 days of failures; the next success clears it.
        failing_since = None if result.ok else sa.func.coalesce(WebhookEndpoint.failing_since, now)
        db.session.execute(
            sa.update(WebhookEndpoint)
            .where(WebhookEndpoint.id == attempt.endpoint_id)
            .values(failing_since=failing_since)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
    # Never the URL (a Slack-style URL is a secret) nor the body.
    log.info(
        "Webhook delivery %s (event %s) to endpoint %s: %s",
        attempt.delivery_id,
        attempt.event_id,
        attempt.endpoint_id,
        "delivered" if result.ok else f"{status}: {result.error}",
    )
    return status


@dataclass
class DeliveryRun:
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        return self.succeeded + self.retrying + self.failed


def deliver_due(now: datetime | None = None, *, limit: int = BATCH) -> DeliveryRun:
    """One pass: claim up to `limit` due deliveries and post each once."""
    fixed = now  # tests move the clock; otherwise each result is timed when it comes
    now = now or utcnow()
    return deliver_claimed(claim(now, limit), fixed)


def deliver_claimed(claimed: Mapping[str, int], fixed: datetime | None = None) -> DeliveryRun:
    """Post each claimed delivery whose claim is still ours, and record its answer."""
    run = DeliveryRun()
    for delivery_id, attempts in claimed.items():
        delivery = db.session.get(WebhookDelivery, delivery_id, populate_existing=True)
        if delivery is None or not still_ours(delivery, attempts, fixed or utcnow()):
            # Deleted with its endpoint, or our lease ran out and another worker has it.
            db.session.rollback()
            continue
        attempt = _attempt(delivery, attempts)
        db.session.rollback()  # no transaction stays open while we wait for the receiver
        result = outbound.post(
            attempt.url, attempt.body, attempt.headers, tenant=attempt.organization_id
        )
        status = _record_result(attempt, result, fixed or utcnow())
        if status == "succeeded":
            run.succeeded += 1
        elif status == "failed":
            run.failed += 1
        elif status == "pending":
            run.retrying += 1
    return run


def prune(now: datetime | None = None) -> int:
    """Delete events older than 30 days, with their deliveries, once none is pending; the
    worker does it now and then, so the outbox does not grow for ever. Returns how many."""
    now = now or utcnow()
    pending = sa.select(WebhookDelivery.event_id).where(WebhookDelivery.status == "pending")
    old = sa.select(WebhookEvent.id).where(
        WebhookEvent.created_at < now - KEEP_FOR, WebhookEvent.id.not_in(pending)
    )
    ids = list(db.session.scalars(old.limit(1000)))
    if ids:
        db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
        db.session.execute(sa.delete(WebhookEvent).where(WebhookEvent.id.in_(ids)))
    db.session.commit()
    return len(ids)
