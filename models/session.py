"""A signed-in browser (a server-side session) and an operator's one-time password reset."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.account import User
from models.base import Base, utcnow


class UserSession(Base):
    """One signed-in browser. The cookie holds a random id; only its SHA-256 is stored, so a
    copy of the database cannot be turned into cookies. Deleting the row ends the session."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    id_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The session's own data (CSRF token, flashes, current organization), as Flask's
    # tagged JSON: it never leaves the server.
    data: Mapped[str] = mapped_column(sa.Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the password was last given in this session (sign-in, re-authentication).
    authenticated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(400))

    user: Mapped[User] = relationship()


class PasswordReset(Base):
    """A one-time link an operator made with `flask keysmith reset-password`; only an HMAC
    of its secret is stored, as for invites."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
