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


class TwoFactor(Base):
    """A person's authenticator app (TOTP, RFC 6238). The shared secret is sealed with a key
    derived from SECRET_KEY (services/two_factor.py), so the database alone cannot make
    codes. Unconfirmed until the person typed a first code."""

    __tablename__ = "two_factors"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), unique=True)
    secret_sealed: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    # The last 30-second step a code was accepted for: a code works once.
    last_step: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class RecoveryCode(Base):
    """One of ten single-use recovery codes, stored as an HMAC."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    used_at: Mapped[datetime | None]
