"""API tokens (SPEC §2) and their per-day request counts."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.account import Organization, User
from models.base import Base, utcnow

ENVIRONMENTS = ("sandbox", "production")
ENV_TAGS = {"sandbox": "sbx", "production": "prod"}
TOKEN_ROLES = ("admin", "writer", "viewer")  # highest first
TOKEN_ROLE_RANK = {role: len(TOKEN_ROLES) - i for i, role in enumerate(TOKEN_ROLES)}
TOKEN_TYPES = ("generic", "onboarding", "ci", "integration")
# The token page's sort keys and their columns (migration 0007 indexes each).
LIST_SORT_COLUMNS = (
    ("name", "name"),
    ("created", "created_at"),
    ("last_used", "last_used_at"),
    ("expires", "expires_at"),
)
SCOPES = ("tokens:read", "tokens:write", "audit:read", "members:read")
ROLE_SCOPES = {
    "viewer": frozenset({"tokens:read", "audit:read", "members:read"}),
    "writer": frozenset({"tokens:read", "audit:read", "members:read", "tokens:write"}),
    "admin": frozenset(SCOPES),
}


def status_of(
    revoked_at: datetime | None, expires_at: datetime | None, active: bool, now: datetime
) -> str:
    """A token's derived status (SPEC §2), from its fields (a row of a list needs no model)."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    if not active:
        return "inactive"
    return "active"


class TokenState:
    """What a token's fields mean: its status and its powers. Shared by the row and the
    verification snapshot (services/token_cache.py), so the two can never disagree."""

    __slots__ = ()

    def status_at(self, now: datetime) -> str:
        return status_of(self.revoked_at, self.expires_at, self.active, now)

    @property
    def status(self) -> str:
        return self.status_at(utcnow())

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def created_by_type(self) -> str:
        """`token` when a token made it through the API, else `user` (a person, or the CLI
        on a person's behalf)."""
        return "token" if self.created_by_token_id is not None else "user"

    @property
    def effective_scopes(self) -> frozenset[str]:
        allowed = ROLE_SCOPES[self.role]
        return allowed & frozenset(self.scopes) if self.scopes else allowed


class ApiToken(TokenState, Base):
    __tablename__ = "api_tokens"
    __table_args__ = (
        # Names are unique among live (not revoked) tokens of one organization and environment.
        sa.Index(
            "uq_api_tokens_live_name",
            "organization_id",
            "environment",
            "name",
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
        sa.Index("ix_api_tokens_org_env_created", "organization_id", "environment", "created_at"),
        # The token page's keyset order (services/token_list.py, migration 0007): each group
        # (live by role, then revoked) read in the order of each sort column.
        *(
            sa.Index(
                f"ix_api_tokens_live_{key}",
                "organization_id",
                "environment",
                "role",
                column,
                "id",
                sqlite_where=sa.text("revoked_at IS NULL"),
                postgresql_where=sa.text("revoked_at IS NULL"),
            )
            for key, column in LIST_SORT_COLUMNS
        ),
        *(
            sa.Index(
                f"ix_api_tokens_revoked_{key}",
                "organization_id",
                "environment",
                column,
                "id",
                sqlite_where=sa.text("revoked_at IS NOT NULL"),
                postgresql_where=sa.text("revoked_at IS NOT NULL"),
            )
            for key, column in LIST_SORT_COLUMNS
        ),
        # The true counts of the page (services/token_list.counts_of): each group, and the
        # hygiene chips' expiring soon and unused, as ranges of covering indexes.
        sa.Index("ix_api_tokens_groups", "organization_id", "environment", "role", "revoked_at"),
        sa.Index(
            "ix_api_tokens_expiry", "organization_id", "environment", "revoked_at", "expires_at"
        ),
        sa.Index(
            "ix_api_tokens_usage",
            "organization_id",
            "environment",
            "revoked_at",
            "last_used_at",
            "created_at",
        ),
    )

    # Public, random, URL-safe; also the look-up key of verification.
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id"))
    environment: Mapped[str] = mapped_column(sa.String(20))
    name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(20))
    scopes: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    type: Mapped[str] = mapped_column(sa.String(20), default="generic")
    active: Mapped[bool] = mapped_column(default=True)
    prefix: Mapped[str] = mapped_column(sa.String(40))

    # HMAC-SHA256 (hex) of the secret; never the secret itself.
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    # After a rotation, the previous secret's hash keeps working until this time.
    previous_secret_hash: Mapped[str | None] = mapped_column(sa.String(64))
    previous_secret_expires_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    last_used_ip: Mapped[str | None] = mapped_column(sa.String(45))
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(40))
    expiry_notified_at: Mapped[datetime | None]

    # Every token belongs to a person: the user who made it, or the user whose token made it.
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_by_token_id: Mapped[str | None] = mapped_column(sa.String(32))
    created_by_label: Mapped[str] = mapped_column(sa.String(254))

    # Who was shown the current secret, and the previous one still inside its grace: the
    # person, or the token through which it was asked for (SPEC §1: removal revokes them).
    secret_shown_to_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id"), index=True
    )
    secret_shown_to_token_id: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    previous_secret_shown_to_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id"), index=True
    )
    previous_secret_shown_to_token_id: Mapped[str | None] = mapped_column(sa.String(32), index=True)

    rate_limit: Mapped[str | None] = mapped_column(sa.String(200))  # per-token override
    allowed_ips: Mapped[list[str] | None] = mapped_column(sa.JSON)  # addresses and CIDR ranges

    organization: Mapped[Organization] = relationship()
    created_by_user: Mapped[User | None] = relationship(foreign_keys=[created_by_user_id])

    def __repr__(self) -> str:
        return f"<ApiToken {self.id}>"


class TokenUsage(Base):
    """Requests per token per day, flushed from an in-memory or Redis buffer (no write per call)."""

    __tablename__ = "token_usage"

    token_id: Mapped[str] = mapped_column(
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))


class TokenCount(Base):
    """How many tokens each organization has per environment, role and revoked or not, kept by
    database triggers on api_tokens (migration 0007), so the token page's group headings and
    the list API's totals never count 100,000 rows. Bulk inserts are counted too."""

    __tablename__ = "token_counts"

    organization_id: Mapped[int] = mapped_column(primary_key=True)
    environment: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    revoked: Mapped[bool] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))
