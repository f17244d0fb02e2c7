"""Webhooks (SPEC §9): endpoints, the outbox of events, and each event's deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, utcnow

EVENT_TYPES = (
    "token.created",
    "token.rotated",
    "token.revoked",
    "token.leaked",
    "token.expiring",
    "member.removed",
    "policy.updated",
)
# Sent only by "Send test event", to the one endpoint asked: nobody subscribes to it.
PING = "ping"
DELIVERY_STATES = ("pending", "succeeded", "failed")


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "we_" + random
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id"), index=True)
    url: Mapped[str] = mapped_column(sa.String(500))
    events: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    # The signing secret is derived from WEBHOOK_SIGNING_KEY and this salt, never stored:
    # the database alone cannot sign a delivery (services/webhooks.py).
    secret_salt: Mapped[str] = mapped_column(sa.String(64))
    # After a roll the old secret keeps signing, beside the new one, until this time.
    previous_secret_salt: Mapped[str | None] = mapped_column(sa.String(64))
    previous_secret_expires_at: Mapped[datetime | None]
    # Set when a delivery gave up after 3 days of retries; cleared by the next success.
    failing_since: Mapped[datetime | None]
    created_by_label: Mapped[str] = mapped_column(sa.String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<WebhookEndpoint {self.id}>"


class WebhookEvent(Base):
    """The outbox: written in the transaction of the change it tells of, so a committed change
    always has its event and a rolled-back one never does. `payload` is the exact body sent."""

    __tablename__ = "webhook_events"
    __table_args__ = (sa.Index("ix_webhook_events_org_created", "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "evt_" + random
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id"))
    type: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to one endpoint, tried until it succeeds or 3 days have passed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "whd_" + random
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id"))
    endpoint_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_events.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    # When a worker may (next) take it; while one holds it, the end of that worker's lease.
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_duration_ms: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(200))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")
    event: Mapped[WebhookEvent] = relationship()

    def __repr__(self) -> str:
        return f"<WebhookDelivery {self.id}>"
