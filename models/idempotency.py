"""The stored answers of SPEC §4's Idempotency-Key (services/idempotency.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class IdempotencyKey(Base):
    """One Idempotency-Key of one calling token: claimed (`in_progress`) in the transaction
    that does the work, and holding the sealed answer (`done`) when it commits.

    Neither the client's key nor the answer is readable from the row: the key is an HMAC
    under the server's key, the answer is sealed with AES-GCM under a key derived from the
    client's key, which Keysmith never stores.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # The token that sent the request (not only the organization: two scripts of one team
    # choosing the same key never see each other's answers).
    caller_token_id: Mapped[str] = mapped_column(
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16), default="in_progress")
    status: Mapped[int | None]
    sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (
        sa.UniqueConstraint("organization_id", "caller_token_id", "key_hash"),
        sa.CheckConstraint("state IN ('in_progress', 'done')", name="state"),
    )
