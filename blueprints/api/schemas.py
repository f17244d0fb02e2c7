"""What the API accepts and answers, as pydantic models: the same models validate requests
and generate the OpenAPI document (openapi.py). Every request model refuses unknown fields.

Types, bounds and patterns live here, so the document shows them; the rules themselves
(names, roles against scopes, expiry policy, ceilings) live in services/tokens.py. The
validators here call those rules (with the organization and token as context), so a request
hears of every bad field at once; the service checks again for the pages and the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from models import EVENT_TYPES, SCOPES, TOKEN_ROLES, TOKEN_TYPES, ApiToken, Organization
from services import leaks, policy
from services import tokens as token_service
from services.errors import ValidationFailed
from services.secrets import TOKEN_REGEX
from services.tokens import MAX_GRACE_SECONDS, NAME_MAX

Environment = Literal["sandbox", "production"]
Role = Literal[TOKEN_ROLES + ("recorder",)]  # type: ignore[valid-type]
Scope = Literal[SCOPES]  # type: ignore[valid-type]
TokenType = Literal[TOKEN_TYPES]  # type: ignore[valid-type]
Status = Literal["active", "inactive", "expired", "revoked"]
MAX_PAGE = 100
MAX_OFFSET = 2**31 - 1
MAX_USAGE_DAYS = 90
EXPIRY_FIELDS = ("expires_at", "expires_in_days")

# Unicode's control characters (category Cc), as a character class that JSON Schema,
# Python and pydantic's own regex engine all read alike.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
PRINTABLE_PATTERN = rf"^[^{_CONTROL}]*$"
# A name, once trimmed: not blank, no control characters (services.tokens.normalize_name
# also refuses invisible formatting characters, which no portable pattern can list).
NAME_PATTERN = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"
# What services.tokens refuses in a name, since it would read as a person's email (it also
# checks the NFKC form: a fullwidth ＠ counts, which this pattern does not see).
EMAIL_LIKE_PATTERN = r"[^\s@]@[^\s@]"
# A whole secret, as secret scanners find it (services.secrets.TOKEN_PATTERN in free text).
SECRET_PATTERN = f"^{TOKEN_REGEX}$"
# A rate limit in the plain form of Flask-Limiter's syntax ("100/minute;10/second",
# "5 per 10 seconds"), each amount at least 1.
_ONE_LIMIT = (
    r"[1-9][0-9]{0,8}(?: ?/ ?| per )(?:[1-9][0-9]{0,4} ?)?"
    r"(?:second|minute|hour|day|month|year)s?"
)
RATE_LIMIT_PATTERN = rf"^{_ONE_LIMIT}(?: ?[;,|] ?{_ONE_LIMIT})*$"
# What a field whose pattern does not match is told, instead of the pattern itself.
PATTERN_MESSAGES = {
    RATE_LIMIT_PATTERN: "Use Flask-Limiter's form, e.g. “100/minute;10/second”: each limit "
    "a number of at least 1, a slash (or “per”) and second, minute, hour, day, month or year.",
    PRINTABLE_PATTERN: "May not contain control characters.",
    NAME_PATTERN: "May not contain control characters.",
    SECRET_PATTERN: "Does not match the Keysmith token pattern.",
}


@dataclass(frozen=True)
class Checks:
    """What the rules that depend on state need (the validation context): the caller's
    organization, for its key policy, and for a change the token being changed."""

    organization: Organization
    token: ApiToken | None = None


def _field_error(rule: Callable[[], Any]) -> Any:
    """Run a rule of services/tokens.py; its message becomes this field's error, so a
    request hears of every bad field at once instead of the service's after the types'."""
    try:
        return rule()
    except ValidationFailed as exc:
        raise ValueError(next(iter(exc.details.values()), exc.message)) from None


def _to_utc(value: datetime) -> datetime:
    """A time without a zone is UTC; one with a zone is converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("Date is out of range.") from exc


def _expiry_allowed(value: datetime | None, info: ValidationInfo) -> datetime | None:
    if isinstance(info.context, Checks):
        _field_error(lambda: token_service.check_expiry(info.context.organization, value))
    return value


def _days_allowed(days: int, info: ValidationInfo) -> int:
    _expiry_allowed(token_service.expiry_from_days(days), info)
    return days


def _scopes_fit_role(scopes: list[str] | None, role: str | None) -> list[str] | None:
    if scopes and role is not None:
        _field_error(
            lambda: token_service.normalize_scopes(scopes, token_service.normalize_role(role))
        )
    return scopes


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
Text = Annotated[str, Field(pattern=PRINTABLE_PATTERN)]
DateTimeText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN
    ),
    AfterValidator(lambda name: _field_error(lambda: token_service.normalize_name(name))),
    Field(
        description=f"1-{NAME_MAX} characters once trimmed, without control or invisible "
        "formatting characters, not reading as an email address (no @ between two other "
        "characters, fullwidth ＠ included); unique among the live tokens of the environment.",
        json_schema_extra={"not": {"pattern": EMAIL_LIKE_PATTERN}},
    ),
]
ExpiresAt = Annotated[
    UtcDatetime | None,
    AfterValidator(_expiry_allowed),
    Field(
        description="ISO 8601; without a zone, UTC. In the future, within the key policy's "
        "maximum lifetime; null means never, where the policy allows it."
    ),
]
ExpiresInDays = Annotated[
    int,
    Field(
        ge=1,
        le=policy.MAX_LIFETIME_DAYS[1],
        description="Days from now, at most the key policy's maximum lifetime.",
    ),
    AfterValidator(_days_allowed),
]
IpEntry = Annotated[
    str,
    Field(
        max_length=64,
        # What the document can say of it; an IPv6 range (2001:db8::/32) is accepted too.
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "ipv4"},
                {"type": "string", "format": "ipv6"},
                {
                    "type": "string",
                    "pattern": r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
                    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(?:3[0-2]|[12]?[0-9])$",
                },
            ]
        },
    ),
]
AllowedIps = Annotated[
    list[IpEntry] | None,
    Field(
        default=None,
        max_length=50,
        description="Addresses or CIDR ranges the token may be used from; "
        "null or empty means anywhere.",
    ),
    AfterValidator(lambda value: _field_error(lambda: token_service.parse_allowlist(value))),
]
RateLimit = Annotated[
    Annotated[
        str,
        Field(
            max_length=policy.RATE_LIMIT_MAX,
            pattern=RATE_LIMIT_PATTERN,
            examples=["100/minute;10/second"],
        ),
    ]
    | None,
    AfterValidator(lambda value: _field_error(lambda: token_service.normalize_rate_limit(value))),
    Field(
        description="The token's own rate limit, in Flask-Limiter's syntax; null means its "
        "organization's default (the key policy)."
    ),
]
ROLE_ALIAS = "recorder is accepted as another name for writer."
SCOPES_DESCRIPTION = (
    "Narrows the role; empty means all the role allows. "
    "Only scopes of the role: a viewer has no tokens:write."
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def conflicts(cls, data: dict[str, Any]) -> dict[str, str]:
        """Fields that may not be sent together, as {field: what is wrong}."""
        return {}

    @classmethod
    def accepts_null(cls, field: str) -> bool:
        info = cls.model_fields.get(field)
        return info is None or type(None) in get_args(info.annotation)


# ---------------------------------------------------------------- requests


class TokenCreate(_Input):
    """Create a token. Without `expires_at` or `expires_in_days` it expires in 90 days
    (or the policy's maximum lifetime, if shorter); `expires_at: null` means never,
    where the policy allows it. Give at most one of the two."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": list(EXPIRY_FIELDS),
                "properties": {field: {"not": {"type": "null"}} for field in EXPIRY_FIELDS},
            }
        }
    )

    # A field that may be left out but has no meaning as null is typed without None and
    # defaults to None: absent is fine, an explicit null is refused (the document says so).
    name: Name
    role: Role = Field(default="viewer", description="Default: viewer. " + ROLE_ALIAS)
    scopes: list[Scope] = Field(default=None, description=SCOPES_DESCRIPTION)  # type: ignore[assignment]
    type: TokenType = Field(default="generic", description="Default: generic.")
    environment: Environment = Field(  # type: ignore[assignment]
        default=None, description="Defaults to the calling token's; may not differ from it."
    )
    expires_at: ExpiresAt = None
    expires_in_days: ExpiresInDays = None  # type: ignore[assignment]
    allowed_ips: AllowedIps = Field(
        default=None,
        description="Addresses or CIDR ranges the token may be used from; null or empty "
        "means anywhere. Absent: the calling token's own allowlist, if it has one.",
    )
    rate_limit: RateLimit = None

    @field_validator("scopes")
    @classmethod
    def _scopes_of_the_role(cls, scopes: list[str] | None, info: ValidationInfo):
        return _scopes_fit_role(scopes, info.data.get("role"))

    @classmethod
    def conflicts(cls, data: dict[str, Any]) -> dict[str, str]:
        if all(data.get(field) is not None for field in EXPIRY_FIELDS):
            return dict.fromkeys(EXPIRY_FIELDS, "Give expires_at or expires_in_days, not both.")
        return {}


class TokenUpdate(_Input):
    """Change any of these; a field not sent stays as it is (PUT and PATCH alike), so
    `{"active": false}` suspends and changes nothing else. An explicit `null` clears where
    that means something: `expires_at` (never expires, where the policy allows it),
    `scopes` (all the role allows), `allowed_ips` (anywhere), `rate_limit` (the policy's
    default); `name`, `active` and `role` cannot be null."""

    name: Name = None  # type: ignore[assignment]
    active: bool = None  # type: ignore[assignment]
    role: Role = Field(default=None, description=ROLE_ALIAS)  # type: ignore[assignment]
    scopes: list[Scope] | None = Field(
        default=None, description=SCOPES_DESCRIPTION + " null: all the role allows."
    )
    expires_at: ExpiresAt = None
    allowed_ips: AllowedIps = None
    rate_limit: RateLimit = None

    @field_validator("scopes")
    @classmethod
    def _scopes_of_the_role(cls, scopes: list[str] | None, info: ValidationInfo):
        role = info.data.get("role")
        if role is None and isinstance(info.context, Checks) and info.context.token is not None:
            role = info.context.token.role  # the role it keeps
        return _scopes_fit_role(scopes, role)


class TokenRotate(_Input):
    """A new secret; optionally a new expiry too (GitHub's "regenerate"). An expired token
    can only be rotated with a new expiry, and then without a grace period."""

    model_config = TokenCreate.model_config  # at most one of the two expiry fields
    grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps working (0 to 604800 seconds); "
        "default 0: it stops at once.",
    )
    expires_at: ExpiresAt = None
    expires_in_days: ExpiresInDays = None  # type: ignore[assignment]  (absent, never null)

    @classmethod
    def conflicts(cls, data: dict[str, Any]) -> dict[str, str]:
        return TokenCreate.conflicts(data)


STARTING_AFTER = (
    "Cursor paging (Stripe's): the id of the last item of the previous page; the list goes on "
    "after it, never repeating or skipping an item while others write. Not with `offset`."
)


class TokenListQuery(_Input):
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    length: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    starting_after: Text | None = Field(
        default=None, min_length=1, max_length=32, description=STARTING_AFTER
    )
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
    starting_after: int | None = Field(default=None, ge=1, le=2**63 - 1, description=STARTING_AFTER)
    action: Text | None = Field(default=None, max_length=40)
    target_id: Text | None = Field(default=None, max_length=40)


class MemberListQuery(_Input):
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    length: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)


class UsageQuery(_Input):
    days: int = Field(
        default=token_service.USAGE_DAYS,
        ge=1,
        le=MAX_USAGE_DAYS,
        description=f"How many days, today included (at most {MAX_USAGE_DAYS}).",
    )


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
    created_by: str = Field(
        description="The email of the person, or the name of the token, "
        "that created it: created_by_type says which."
    )
    created_by_type: Literal["user", "token"] = Field(
        description="Whether a person (user) or a token through the API (token) created it."
    )
    allowed_ips: list[str] | None
    rate_limit: str | None = Field(
        description="The token's own rate limit; null: its organization's default applies."
    )
    href: str


class TokenWithSecret(Token):
    token: str = Field(description="The secret. Shown in this response only; store it now.")


class Query(BaseModel):
    found: int = Field(description="How many match the filters.")
    length: int = Field(description="How many are in this page.")
    offset: int
    total: int = Field(description="How many there are in this environment, unfiltered.")
    has_more: bool = Field(
        description="Whether more follow this page: ask for them with `starting_after` set to "
        'this page\'s last id (the `Link: rel="next"` header says so too).'
    )


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
    request_id: str | None = Field(
        description="The X-Request-Id of the request that caused it (null before it was kept, "
        "and for what no request caused)."
    )
    created_at: DateTimeText


class AuditEventList(BaseModel):
    query: Query
    audit_events: list[AuditEvent]


class Member(BaseModel):
    """A person in the organization. Never a password, a session or a two-factor secret."""

    id: int = Field(description="The membership's id (what the members page links to).")
    email: str
    name: str
    role: Literal["owner", "admin", "member", "viewer"]
    joined_at: DateTimeText


class MemberList(BaseModel):
    query: Query
    members: list[Member]


class UsageDay(BaseModel):
    date: str = Field(json_schema_extra={"format": "date"}, description="A UTC day.")
    requests: int


class TokenUsage(BaseModel):
    token_id: str
    days: int
    total: int = Field(description="The requests of all these days together.")
    usage: list[UsageDay] = Field(description="One entry per day, oldest first, today last.")


class WhoAmIOrganization(BaseModel):
    id: int
    name: str


class WhoAmI(BaseModel):
    token: Token
    organization: WhoAmIOrganization
    environment: Environment
    role: Literal[TOKEN_ROLES] = Field(  # type: ignore[valid-type]
        description="The token's own role, as stored."
    )
    effective_role: Literal[TOKEN_ROLES] | None = Field(  # type: ignore[valid-type]
        description="The role it acts with now: its own, lowered to what its creator's "
        "current role allows (a token never does more than its creator may)."
    )
    scopes: list[Scope] = Field(description="What the token may do now.")
    created_by: str
    created_by_type: Literal["user", "token"]
    previous_secret: bool = Field(
        description="True when this request used the token's previous secret, still inside "
        "its rotation grace: it may read, never change anything."
    )


LeakedSecret = Annotated[
    str,
    Field(
        max_length=leaks.MAX_LENGTH,
        pattern=SECRET_PATTERN,
        description="A string that looks like a Keysmith token (docs/security.md).",
    ),
]
LeakedSecrets = Annotated[list[LeakedSecret], Field(min_length=1, max_length=leaks.MAX_REPORTED)]


class LeakReport(_Input):
    """Strings that look like Keysmith tokens (the regular expression in docs/security.md)."""

    tokens: LeakedSecrets


class LeakList(RootModel[LeakedSecrets]):
    """The same strings as a bare JSON list."""


class SecretScanningMatch(_Input):
    """One match as GitHub's secret scanning partner program reports it; only `token` is
    used, the other fields are accepted and ignored."""

    token: LeakedSecret
    type: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=2048)
    source: str | None = Field(default=None, max_length=200)


class SecretScanningReport(
    RootModel[
        Annotated[list[SecretScanningMatch], Field(min_length=1, max_length=leaks.MAX_REPORTED)]
    ]
):
    """GitHub's secret scanning format: a bare JSON list of matches."""


LEAK_REPORT_SHAPES = (LeakReport, LeakList, SecretScanningReport)


def leaked_secrets(data: Any) -> list[str]:
    """The strings of a leak report in any of its shapes, or ValidationFailed."""
    if isinstance(data, list) and any(isinstance(item, dict) for item in data):
        if not all(isinstance(item, dict) for item in data):
            message = "Send a list of strings or a list of matches, not a mix of the two."
            raise ValidationFailed(details={"body": message})
        return [match.token for match in parse(SecretScanningReport, data).root]
    if isinstance(data, list):
        return parse(LeakList, data).root
    return parse(LeakReport, data).tokens


class LeakReportResult(BaseModel):
    received: int = Field(description="How many strings were reported.")
    revoked: int = Field(description="How many live tokens were revoked because of them.")


# ---------------------------------------------------------------- webhooks (SPEC §9)

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=500,
        pattern=r"^https?://[^\s/?#@]+(?:[/?#][^\s]*)?$",
        description="https:// (http:// only where the operator allows it). Refused when its "
        "host resolves to this host or a loopback, private, link-local, CGNAT, multicast or "
        "reserved address, unless the operator allows internal receivers; no user name or "
        "password in it.",
    ),
]
WebhookEvents = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EVENT_TYPES), description="The event types it gets."),
]


class WebhookCreate(_Input):
    url: WebhookUrl
    events: WebhookEvents
    enabled: bool = Field(default=True, description="Default: true.")


class WebhookUpdate(_Input):
    """Change what is sent; a field not sent stays as it is. None of them can be null."""

    url: WebhookUrl = None  # type: ignore[assignment]
    events: WebhookEvents = None  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]


class Webhook(BaseModel):
    id: str
    url: str
    events: list[EventType]
    enabled: bool
    status: Literal["enabled", "disabled", "failing"] = Field(
        description="failing: a delivery was given up after 3 days, until the next success."
    )
    failing_since: DateTimeText | None
    created_at: DateTimeText
    updated_at: DateTimeText
    created_by: str
    href: str


class WebhookWithSecret(Webhook):
    secret: str = Field(
        description="The signing secret (whsec_...). Shown in this response only; owners and "
        "admins can show it again on the endpoint's page."
    )


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class WebhookDelivery(BaseModel):
    id: str
    event_id: str
    event_type: Literal[EVENT_TYPES + ("ping",)]  # type: ignore[valid-type]
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None = Field(description="The receiver's HTTP status, if any.")
    last_duration_ms: int | None
    last_error: str | None
    next_attempt_at: DateTimeText | None
    last_attempt_at: DateTimeText | None
    delivered_at: DateTimeText | None
    created_at: DateTimeText


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDelivery] = Field(description="The newest 100, newest first.")


# What Keysmith POSTs to endpoints (the document's top-level `webhooks`; docs/api.md).


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field not documented here is a test failure


class EventActor(_Payload):
    type: Literal["user", "token", "system"]
    label: str = Field(description="An email, a token's name, or cli / leak report / ...")


class EventToken(_Payload):
    """A token's metadata, never its secret nor a hash of it."""

    id: str
    name: str
    environment: Environment
    role: Literal[TOKEN_ROLES]  # type: ignore[valid-type]
    scopes: list[Scope]
    type: TokenType
    prefix: str
    status: Status
    created_at: DateTimeText
    expires_at: DateTimeText | None
    revoked_at: DateTimeText | None
    created_by: str


class TokenEventData(_Payload):
    token: EventToken


class TokenRotatedData(TokenEventData):
    previous_secret_expires_at: DateTimeText | None = Field(
        description="Until when the previous secret still works (its grace), or null."
    )


class TokenRevokedData(TokenEventData):
    reason: str | None = Field(description="revoked, member_removed, leaked, ...")


class EventMember(_Payload):
    id: int
    email: str
    role: Literal["owner", "admin", "member", "viewer"]


class MemberRemovedData(_Payload):
    member: EventMember
    revoked_token_ids: list[str]


class PolicyUpdatedData(_Payload):
    changes: dict[str, dict[str, Any]] = Field(
        description='Each changed field of the key policy: {"from": ..., "to": ...}.'
    )


class PingData(_Payload):
    message: str
    endpoint_id: str


class _Event(_Payload):
    id: str = Field(description="The event's id (evt_...): the same on every redelivery.")
    created: DateTimeText
    organization_id: int
    actor: EventActor | None


def _event_model(name: str, event_type: str, data: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        name,
        __base__=_Event,
        type=(Literal[event_type], ...),  # type: ignore[valid-type]
        data=(data, ...),
    )


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "token.created": _event_model("TokenCreatedEvent", "token.created", TokenEventData),
    "token.rotated": _event_model("TokenRotatedEvent", "token.rotated", TokenRotatedData),
    "token.revoked": _event_model("TokenRevokedEvent", "token.revoked", TokenRevokedData),
    "token.leaked": _event_model("TokenLeakedEvent", "token.leaked", TokenEventData),
    "token.expiring": _event_model("TokenExpiringEvent", "token.expiring", TokenEventData),
    "member.removed": _event_model("MemberRemovedEvent", "member.removed", MemberRemovedData),
    "policy.updated": _event_model("PolicyUpdatedEvent", "policy.updated", PolicyUpdatedData),
    "ping": _event_model("PingEvent", "ping", PingData),
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    error: ErrorBody


REQUEST_MODELS = (
    TokenCreate,
    TokenUpdate,
    TokenRotate,
    *LEAK_REPORT_SHAPES,
    WebhookCreate,
    WebhookUpdate,
)
RESPONSE_MODELS = (
    Token,
    TokenWithSecret,
    TokenList,
    AuditEventList,
    MemberList,
    TokenUsage,
    WhoAmI,
    LeakReportResult,
    Error,
    WebhookWithSecret,
    WebhookList,
    WebhookDeliveryList,
    *EVENT_MODELS.values(),
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
    if error["type"] == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(error["ctx"]["pattern"], str(error["msg"]))
    if error["type"] == "string_too_short" and error["ctx"]["min_length"] == 1:
        return "May not be empty."
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _integral_numbers(data: Any) -> Any:
    """JSON Schema's integer includes 30.0: such numbers become ints before strict checks."""
    if isinstance(data, float) and data.is_integer() and abs(data) < 2**53:
        return int(data)
    if isinstance(data, dict):
        return {key: _integral_numbers(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_integral_numbers(value) for value in data]
    return data


def parse(
    model: type[BaseModel], data: Any, *, checks: Checks | None = None, strict: bool = False
) -> Any:
    """Validate into `model`, or ValidationFailed naming each bad field. With `checks`, the
    rules that depend on the organization or the token (expiry policy, scopes of the role
    kept) run too, beside the others. `strict` for a JSON body: its types are the
    document's (true, not "yes"; 30, not true); a form's strings are converted."""
    details: dict[str, str] = {}
    try:
        if strict:  # JSON mode: ISO strings still make datetimes
            data_json = json.dumps(_integral_numbers(data))
            result = model.model_validate_json(data_json, strict=True, context=checks)
        else:
            if issubclass(model, _Input) and isinstance(data, dict):
                # A form's empty value means "not sent" where null means nothing.
                data = {k: v for k, v in data.items() if v is not None or model.accepts_null(k)}
            result = model.model_validate(data, context=checks)
    except ValidationError as exc:
        for error in exc.errors():
            details.setdefault(_field_of(error["loc"]), _message(error))
    if issubclass(model, _Input):
        for field, message in model.conflicts(data).items():
            details.setdefault(field, message)
    if details:
        raise ValidationFailed(details=details)
    return result
