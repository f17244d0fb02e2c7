"""The audit log (SPEC §5): one row per change, never updated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_events_org_created", "organization_id", "created_at"),
        sa.Index("ix_audit_events_target", "target_id"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id"))
    environment: Mapped[str | None] = mapped_column(sa.String(20))
    # "user", "token" or "system"; label is the email or the token's name at that time.
    actor_type: Mapped[str] = mapped_column(sa.String(10))
    actor_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    actor_token_id: Mapped[str | None] = mapped_column(sa.String(32))
    actor_label: Mapped[str] = mapped_column(sa.String(254))
    action: Mapped[str] = mapped_column(sa.String(40))  # e.g. token.created, member.removed
    target_type: Mapped[str | None] = mapped_column(sa.String(20))  # token, member, invite, policy
    target_id: Mapped[str | None] = mapped_column(sa.String(40))
    target_label: Mapped[str | None] = mapped_column(sa.String(254))
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(400))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    # The X-Request-Id of the request that caused it (services/request_ids.py).
    request_id: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
