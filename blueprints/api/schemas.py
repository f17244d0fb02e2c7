"""What the API accepts and answers, as pydantic models: the same models validate requests
and generate the OpenAPI document (openapi.py). Every request model refuses unknown fields.

Types and bounds live here; the rules themselves (names, roles against scopes, expiry
policy, ceilings) live in services/tokens.py, which these inputs are handed to.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from models import SCOPES, TOKEN_ROLES, TOKEN_TYPES
from services.errors import ValidationFailed
from services.tokens import MAX_GRACE_SECONDS, NAME_MAX

Environment = Literal["sandbox", "production"]
Role = Literal[TOKEN_ROLES + ("recorder",)]  # type: ignore[valid-type]
Scope = Literal[SCOPES]  # type: ignore[valid-type]
TokenType = Literal[TOKEN_TYPES]  # type: ignore[valid-type]
Status = Literal["active", "inactive", "expired", "revoked"]
MAX_PAGE = 100
MAX_OFFSET = 2**31 - 1


def _to_utc(value: datetime) -> datetime:
    """A time without a zone is UTC; one with a zone is converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("Date is out of range.") from exc


def _printable(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("May not contain control characters.")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
Text = Annotated[str, AfterValidator(_printable)]
DateTimeText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


AllowedIps = Annotated[
    list[Annotated[str, Field(max_length=64)]] | None,
    Field(
        default=None,
        max_length=50,
        description="Addresses or CIDR ranges the token may be used from; "
        "null or empty means anywhere.",
    ),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- requests


class TokenCreate(_Input):
    """Create a token. Without `expires_at` or `expires_in_days` it expires in 90 days
    (or the policy's maximum lifetime, if shorter); `expires_at: null` means never,
    where the policy allows it."""

    name: str = Field(description=f"1-{NAME_MAX} characters, unique among live tokens.")
    role: Role = "viewer"
    scopes: list[Scope] | None = Field(
        default=None, description="Narrows the role; empty means all the role allows."
    )
    type: TokenType = "generic"
    environment: Environment | None = Field(
        default=None, description="Defaults to the calling token's; may not differ from it."
    )
    expires_at: UtcDatetime | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=36500)
    allowed_ips: AllowedIps = None


class TokenUpdate(_Input):
    """Change any of these; what is not sent stays as it is (PUT and PATCH alike)."""

    name: str | None = None
    active: bool | None = None
    role: Role | None = None
    scopes: list[Scope] | None = None
    expires_at: UtcDatetime | None = None
    allowed_ips: AllowedIps = None


class TokenRotate(_Input):
    grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps working (0 to 604800 seconds).",
    )


class TokenListQuery(_Input):
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    length: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    name: Text | None = Field(default=None, max_length=200)
    active: bool | None = None
    status: Status | None = None
    role: Role | None = None
    type: TokenType | None = None


class DeleteByNameQuery(_Input):
    name: Text = Field(min_length=1, max_length=200)


class AuditListQuery(_Input):
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    length: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    action: Text | None = Field(default=None, max_length=40)
    target_id: Text | None = Field(default=None, max_length=40)


# ---------------------------------------------------------------- responses


class Token(BaseModel):
    id: str
    name: str
    environment: Environment
    role: Literal[TOKEN_ROLES]  # type: ignore[valid-type]
    scopes: list[Scope]
    type: TokenType
    active: bool
    status: Status
    prefix: str
    created_at: DateTimeText
    updated_at: DateTimeText
    expires_at: DateTimeText | None
    last_used_at: DateTimeText | None
    last_used_ip: str | None = Field(description="Client address of the last request.")
    revoked_at: DateTimeText | None
    created_by: str
    allowed_ips: list[str] | None
    href: str


class TokenWithSecret(Token):
    token: str = Field(description="The secret. Shown in this response only; store it now.")


class Query(BaseModel):
    found: int = Field(description="How many match the filters.")
    length: int = Field(description="How many are in this page.")
    offset: int
    total: int = Field(description="How many there are in this environment, unfiltered.")


class TokenList(BaseModel):
    query: Query
    api_tokens: list[Token]


class AuditActor(BaseModel):
    type: Literal["user", "token", "system"]
    label: str


class AuditEvent(BaseModel):
    id: int
    action: str
    actor: AuditActor
    environment: Environment | None
    target_type: str | None
    target_id: str | None
    target_label: str | None
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]
    created_at: DateTimeText


class AuditEventList(BaseModel):
    query: Query
    audit_events: list[AuditEvent]


class WhoAmIOrganization(BaseModel):
    id: int
    name: str


class WhoAmI(BaseModel):
    token: Token
    organization: WhoAmIOrganization
    environment: Environment
    role: Literal[TOKEN_ROLES]  # type: ignore[valid-type]
    scopes: list[Scope] = Field(description="What the token may do now.")
    created_by: str


class LeakReport(_Input):
    """Strings that look like Keysmith tokens (the regular expression in docs/security.md)."""

    tokens: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=100)


class LeakReportResult(BaseModel):
    received: int = Field(description="How many strings were reported.")
    revoked: int = Field(description="How many live tokens were revoked because of them.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    error: ErrorBody


REQUEST_MODELS = (TokenCreate, TokenUpdate, TokenRotate, LeakReport)
RESPONSE_MODELS = (
    Token,
    TokenWithSecret,
    TokenList,
    AuditEventList,
    WhoAmI,
    LeakReportResult,
    Error,
)


# ---------------------------------------------------------------- validation


def _field_of(loc: tuple[int | str, ...]) -> str:
    # list items ("scopes.0") are reported on the list itself, as a form shows them
    names = [str(part) for part in loc if not isinstance(part, int)]
    return ".".join(names) or "body"


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "Unknown field."
    if error["type"] == "missing":
        return "This field is required."
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse(model: type[_Input], data: dict[str, Any]) -> Any:
    """Validate into `model`, or ValidationFailed naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details: dict[str, str] = {}
        for error in exc.errors():
            details.setdefault(_field_of(error["loc"]), _message(error))
        raise ValidationFailed(details=details) from None
