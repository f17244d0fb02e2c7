"""Writing and querying the audit log (SPEC §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from extensions import db
from models import AuditEvent, Organization
from services import request_ids
from services.actor import Actor


def record(
    actor: Actor,
    action: str,
    *,
    environment: str | None = None,
    target_type: str | None = None,
    target_id: str | int | None = None,
    target_label: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one event in the actor's organization. Never put a secret in `details`."""
    event = AuditEvent(
        organization_id=actor.organization.id,
        environment=environment,
        actor_type=actor.kind,
        actor_user_id=actor.user_id,
        actor_token_id=actor.token.id if actor.token is not None else None,
        actor_label=actor.label,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        target_label=target_label,
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:400] or None,
        details=details or {},
        request_id=request_ids.current(),
    )
    db.session.add(event)
    return event


def events_of(
    organization: Organization,
    *,
    environment: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> sa.Select[tuple[AuditEvent]]:
    """The organization's events, newest first, narrowed by any filter given."""
    query = sa.select(AuditEvent).where(AuditEvent.organization_id == organization.id)
    if environment:
        query = query.where(AuditEvent.environment == environment)
    if actor:
        # Case-insensitive, and part of a name or email is enough ("adam" finds adam@…).
        query = query.where(AuditEvent.actor_label.icontains(actor.strip(), autoescape=True))
    if action:
        query = query.where(AuditEvent.action == action)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    if since:
        query = query.where(AuditEvent.created_at >= since)
    if until:
        query = query.where(AuditEvent.created_at < until)
    return query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
