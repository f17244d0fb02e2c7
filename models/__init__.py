"""Every model, importable from one place (Alembic autogenerate reads this)."""

from models.account import ROLE_RANK, ROLES, Invite, Membership, Organization, User
from models.audit import AuditEvent
from models.base import Base, utcnow
from models.idempotency import IdempotencyKey
from models.session import PasswordReset, RecoveryCode, TwoFactor, UserSession
from models.token import (
    ENV_TAGS,
    ENVIRONMENTS,
    ROLE_SCOPES,
    SCOPES,
    TOKEN_ROLE_RANK,
    TOKEN_ROLES,
    TOKEN_TYPES,
    ApiToken,
    TokenCount,
    TokenUsage,
)
from models.webhook import (
    EVENT_TYPES,
    PING,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "ENVIRONMENTS",
    "ENV_TAGS",
    "EVENT_TYPES",
    "PING",
    "ROLES",
    "ROLE_RANK",
    "ROLE_SCOPES",
    "SCOPES",
    "TOKEN_ROLES",
    "TOKEN_ROLE_RANK",
    "TOKEN_TYPES",
    "ApiToken",
    "IdempotencyKey",
    "AuditEvent",
    "Base",
    "Invite",
    "Membership",
    "Organization",
    "PasswordReset",
    "RecoveryCode",
    "TokenCount",
    "TokenUsage",
    "TwoFactor",
    "User",
    "UserSession",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "utcnow",
]
