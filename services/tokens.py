"""Every rule about API tokens: create, rotate, rename, suspend, resume, revoke, update, verify.

Pages, the JSON API and the CLI call these functions; none of them repeats a rule.
Functions take an explicit actor, write the audit event, flush, and never commit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from extensions import db
from models import (
    ENVIRONMENTS,
    ROLE_SCOPES,
    SCOPES,
    TOKEN_ROLE_RANK,
    TOKEN_ROLES,
    TOKEN_TYPES,
    ApiToken,
    Membership,
    Organization,
    TokenUsage,
    User,
    utcnow,
)
from models.token import TokenState
from services import audit, policy, token_cache, webhooks
from services import secrets as token_secrets
from services.actor import Actor
from services.errors import (
    AuthFailed,
    DuplicateName,
    Forbidden,
    NotFound,
    TokenIsRevoked,
    TokenLimitReached,
    ValidationFailed,
)
from services.hygiene import expiring_filter, unused_filter
from services.network import allowlist_within, parse_allowlist
from services.token_cache import VerifiedToken

NAME_MAX = 100
# A token name that reads as an email address would pass for a person wherever a token's
# creator is shown (SPEC §2: created_by says whether a person or a token made it).
_EMAIL_LIKE = re.compile(r"[^\s@]@[^\s@]")
EXPIRY_CHOICES_DAYS = (30, 60, 90, 180, 365)
GRACE_CHOICES_SECONDS = (0, 3600, 86400, 7 * 86400)
MAX_GRACE_SECONDS = 7 * 86400
ROLE_ALIASES = {"recorder": "writer"}
# What a form's `expires_in_days` may say besides a number of days.
EXPIRY_CUSTOM, EXPIRY_NEVER = "custom", "never"
USAGE_DAYS = 30


class _Unset:
    """Marks an argument of update_token() that was not given."""


UNSET: Any = _Unset()


# ---------------------------------------------------------------- queries


def _ascii_digits(text: str) -> bool:
    """ "30", not "³⁰": str.isdigit() is true for superscripts, which int() refuses."""
    return text.isascii() and text.isdigit()


def tokens_of(organization: Organization, environment: str | None = None) -> sa.Select:
    """The organization's tokens (of one environment if given), newest first."""
    query = sa.select(ApiToken).where(ApiToken.organization_id == organization.id)
    if environment is not None:
        query = query.where(ApiToken.environment == environment)
    return query.order_by(ApiToken.created_at.desc(), ApiToken.id)


def get_token_or_404(
    organization: Organization, environment: str | None, token_id: str
) -> ApiToken:
    """The token with this id in this organization (and environment, if given), or NotFound."""
    if not (token_id.isascii() and token_id.isalnum() and len(token_id) <= 32):
        raise NotFound("No such token.")  # not an id we issue; never sent to the database
    token = db.session.scalar(tokens_of(organization, environment).where(ApiToken.id == token_id))
    if token is None:
        raise NotFound("No such token.")
    return token


def requests_per_day(
    token: ApiToken, *, days: int = USAGE_DAYS, today: date | None = None
) -> list[tuple[date, int]]:
    """Requests of each of the last `days` days (oldest first, today last), 0 where none."""
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    counts = dict(
        db.session.execute(
            sa.select(TokenUsage.day, TokenUsage.count).where(
                TokenUsage.token_id == token.id, TokenUsage.day >= first, TokenUsage.day <= today
            )
        ).all()
    )
    return [(day, int(counts.get(day, 0))) for day in (first + timedelta(n) for n in range(days))]


def with_status(query: sa.Select, status: str, now: datetime) -> sa.Select:
    """Narrow a token query to one derived status (the SQL form of ApiToken.status_at)."""
    not_expired = sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)
    if status == "revoked":
        return query.where(ApiToken.revoked_at.is_not(None))
    live = query.where(ApiToken.revoked_at.is_(None))
    if status == "expired":
        return live.where(ApiToken.expires_at <= now)
    if status == "inactive":
        return live.where(not_expired, ApiToken.active.is_(False))
    return live.where(not_expired, ApiToken.active.is_(True))


def live_count_of(organization: Organization, environment: str) -> int:
    """How many of the environment's tokens are not revoked (the token page's count)."""
    from services.token_list import stored_count

    return int(db.session.scalar(sa.select(stored_count(organization, environment, revoked=False))))


def live_token_count(organization: Organization, now: datetime) -> int:
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(ApiToken)
            .where(
                ApiToken.organization_id == organization.id,
                ApiToken.revoked_at.is_(None),
                sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
            )
        )
        or 0
    )


# ---------------------------------------------------------------- search ("I found this token")

SEARCH_MAX = 200  # characters; a whole secret has 62 or 63
HYGIENE_FILTERS = ("expiring", "unused")
_PREFIX_QUERY = re.compile(
    rf"ks_(prod|sbx)_([0-9A-Za-z]{{{token_secrets.PREFIX_ID_CHARS},{token_secrets.ID_LENGTH}}})"
)
_ID_QUERY = re.compile(rf"[0-9A-Za-z]{{{token_secrets.ID_LENGTH}}}")


def parse_search(value: object) -> str:
    """The search box's text, trimmed (and without the "…" the page shows after a prefix);
    ValidationFailed if it is too long or has control characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(details={"q": "Search must be text."})
    if len(value) > SEARCH_MAX:
        raise ValidationFailed(
            details={"q": f"Search for at most {SEARCH_MAX} characters: a name, prefix or secret."}
        )
    value = value.strip()  # a pasted secret often brings a new line along
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValidationFailed(details={"q": "Search may not contain control characters."})
    return value.removesuffix("…").removesuffix("...").strip()


def parse_hygiene_filter(value: object) -> str | None:
    """`expiring`, `unused` or None (no filter); ValidationFailed otherwise."""
    if value in (None, "", "all"):
        return None
    if value not in HYGIENE_FILTERS:
        raise ValidationFailed(details={"filter": "Filter by “expiring” or “unused”, or neither."})
    return value  # type: ignore[return-value]


def search_condition(q: str) -> sa.ColumnElement[bool]:
    """Name, prefix or creator contains `q` (any case; `%` and `_` literal), or the type does,
    or `q` is the id. On SQLite, text of 3 characters or more takes its candidates from the
    trigram index (migration 0007), then checks them as before; on PostgreSQL the trigram
    GIN indexes serve the same ILIKEs directly."""
    types = [t for t in TOKEN_TYPES if q.lower() in t]
    matches = sa.or_(
        ApiToken.name.icontains(q, autoescape=True),
        ApiToken.prefix.icontains(q, autoescape=True),
        ApiToken.created_by_label.icontains(q, autoescape=True),
        ApiToken.type.in_(types),
        ApiToken.id == q,
    )
    if not uses_trigram_index(q):
        return matches
    candidates = [
        "SELECT rowid FROM api_tokens_fts WHERE api_tokens_fts MATCH :phrase",
        "SELECT rowid FROM api_tokens WHERE id = :exact",
    ]
    if types:  # constants of TOKEN_TYPES, never typed text
        listed = ", ".join(f"'{t}'" for t in types)
        candidates.append(f"SELECT rowid FROM api_tokens WHERE type IN ({listed})")  # noqa: S608
    phrase = '"' + q.replace('"', '""') + '"'
    in_index = sa.text("api_tokens.rowid IN (" + " UNION ALL ".join(candidates) + ")").bindparams(
        phrase=phrase, exact=q
    )
    return sa.and_(in_index, matches)


def uses_trigram_index(q: str) -> bool:
    """Whether a search for `q` starts from SQLite's trigram table (3 characters at least:
    a trigram index knows nothing shorter)."""
    return len(q) >= 3 and db.session.get_bind().dialect.name == "sqlite"


def search_tokens(
    organization: Organization,
    environment: str,
    q: str = "",
    *,
    hygiene_filter: str | None = None,
    now: datetime | None = None,
) -> sa.Select:
    """One environment's tokens whose name, prefix, type or creator contains `q` (any case),
    or whose id is `q`; narrowed to expiring or unused ones if asked. Live first, newest first."""
    now = now or utcnow()
    query = sa.select(ApiToken).where(
        ApiToken.organization_id == organization.id, ApiToken.environment == environment
    )
    if q:
        query = query.where(search_condition(q))
    if hygiene_filter == "expiring":
        query = query.where(expiring_filter(now))
    elif hygiene_filter == "unused":
        query = query.where(unused_filter(now))
    return query.order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc(), ApiToken.id)


@dataclass(frozen=True)
class TokenLookup:
    """What a pasted secret, prefix or id says about the current organization's tokens.

    kind: "secret" (a whole, well-formed secret), "malformed" (looks like a secret but its
    checksum is wrong), "prefix" or "id". `tokens` holds only tokens of this organization;
    for a secret, `verified` says whether it is a working secret of `tokens[0]`.
    """

    kind: str
    tokens: list[ApiToken] = field(default_factory=list)
    verified: bool = False
    previous: bool = False  # the secret is the previous one, still inside its grace period

    @property
    def token(self) -> ApiToken | None:
        return self.tokens[0] if self.tokens else None


def identify_token(
    organization: Organization, q: str, *, now: datetime | None = None
) -> TokenLookup | None:
    """Which of *this organization's* tokens a pasted secret, prefix or id is; None if `q`
    looks like none of those. Tokens of other organizations are never found: the look-up is
    by id (or prefix) within the organization, and a secret must match its HMAC."""
    now = now or utcnow()
    in_org = sa.select(ApiToken).where(ApiToken.organization_id == organization.id)
    if q.startswith("ks_") and len(q) > len("ks_prod_") + token_secrets.ID_LENGTH:
        parsed = token_secrets.parse(q)
        if parsed is None:
            return TokenLookup(kind="malformed")
        token = db.session.scalar(
            in_org.where(ApiToken.id == parsed.token_id, ApiToken.environment == parsed.environment)
        )
        if token is None:
            return TokenLookup(kind="secret")
        keys = _keys()
        current = token_secrets.matches(q, token.secret_hash, keys)
        previous = (
            not current
            and token.previous_secret_expires_at is not None
            and token.previous_secret_expires_at > now
            and token_secrets.matches(q, token.previous_secret_hash, keys)
        )
        return TokenLookup(
            kind="secret", tokens=[token], verified=current or previous, previous=previous
        )
    match = _PREFIX_QUERY.fullmatch(q)
    if match is not None:
        tag, id_part = match.groups()
        environment = token_secrets.TAG_ENVS[tag]
        found = db.session.scalars(
            in_org.where(
                ApiToken.environment == environment,
                ApiToken.prefix == token_secrets.visible_prefix(environment, id_part),
                ApiToken.id.startswith(id_part, autoescape=True),
            )
            .order_by(ApiToken.created_at.desc())
            .limit(10)
        ).all()
        return TokenLookup(kind="prefix", tokens=list(found))
    if _ID_QUERY.fullmatch(q):
        token = db.session.scalar(in_org.where(ApiToken.id == q))
        return TokenLookup(kind="id", tokens=[token]) if token is not None else None
    return None


# ---------------------------------------------------------------- validation


def normalize_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationFailed(details={"name": "Name must be text."})
    name = value.strip()
    if not name:
        raise ValidationFailed(details={"name": "Name is required."})
    if len(name) > NAME_MAX:
        raise ValidationFailed(details={"name": f"Name must be at most {NAME_MAX} characters."})
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValidationFailed(details={"name": "Name may not contain control characters."})
    if _EMAIL_LIKE.search(unicodedata.normalize("NFKC", name)):
        raise ValidationFailed(
            details={
                "name": "A token's name may not be an email address: it would read as a person."
            }
        )
    return name


def normalize_rate_limit(value: object) -> str | None:
    """A token's own rate limit (Flask-Limiter syntax), or None: its organization's."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValidationFailed(details={"rate_limit": "A rate limit must be text, or null."})
    return policy.check_rate_limit(value.strip())


def normalize_role(value: object) -> str:
    role = ROLE_ALIASES.get(value, value) if isinstance(value, str) else value
    if role not in TOKEN_ROLES:
        raise ValidationFailed(
            details={"role": f"Role must be one of: {', '.join(TOKEN_ROLES)} (or recorder)."}
        )
    return role  # type: ignore[return-value]


def normalize_scopes(value: object, role: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise ValidationFailed(details={"scopes": "Scopes must be a list of scope names."})
    scopes = sorted(set(value))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationFailed(
            details={"scopes": f"Unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}."}
        )
    beyond = [s for s in scopes if s not in ROLE_SCOPES[role]]
    if beyond:
        raise ValidationFailed(
            details={"scopes": f"Scope {beyond[0]!r} is beyond what role {role!r} allows."}
        )
    return scopes


def _check_choice(field: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValidationFailed(details={field: f"Must be one of: {', '.join(choices)}."})
    return value  # type: ignore[return-value]


def check_expiry(
    organization: Organization, expires_at: datetime | None, now: datetime | None = None
) -> None:
    """ValidationFailed (on `expires_at`) unless the policy allows this expiry (None: never)."""
    now = now or utcnow()
    if expires_at is None:
        if not organization.allow_never_expires:
            raise ValidationFailed(
                details={"expires_at": "This organization's policy requires an expiry date."}
            )
        return
    if expires_at <= now:
        raise ValidationFailed(details={"expires_at": "The expiry must be in the future."})
    # A day of slack, so a date picked "365 days from today" is accepted all day long.
    if expires_at > now + timedelta(days=organization.max_lifetime_days + 1):
        raise ValidationFailed(
            details={
                "expires_at": "The policy allows at most "
                f"{organization.max_lifetime_days} days of lifetime."
            }
        )


def parse_environment(value: object) -> str:
    """`sandbox` or `production`, else ValidationFailed."""
    return _check_choice("environment", value, ENVIRONMENTS)


def expiry_choices(organization: Organization) -> list[str]:
    """What a form may offer for `expires_in_days` under this organization's policy."""
    days = [str(d) for d in EXPIRY_CHOICES_DAYS if d <= organization.max_lifetime_days]
    return [*days, EXPIRY_CUSTOM] + ([EXPIRY_NEVER] if organization.allow_never_expires else [])


def expiry_from_choice(
    organization: Organization,
    expires_in_days: object,
    expires_at: date | None = None,
    *,
    now: datetime | None = None,
) -> datetime | None:
    """The expiry a form asked for: a number of days, a custom date (expiring at 00:00 UTC
    of that day), or never (None). Checked against the policy; ValidationFailed otherwise."""
    now = now or utcnow()
    if expires_in_days == EXPIRY_NEVER:
        check_expiry(organization, None, now)
        return None
    if expires_in_days == EXPIRY_CUSTOM:
        if not isinstance(expires_at, date):
            raise ValidationFailed(details={"expires_at": "Pick the date the token expires."})
        moment = datetime.combine(expires_at, time(0, 0), tzinfo=UTC)
        check_expiry(organization, moment, now)
        return moment
    days = int(expires_in_days) if _ascii_digits(str(expires_in_days)) else None
    if days not in EXPIRY_CHOICES_DAYS:
        raise ValidationFailed(
            details={
                "expires_in_days": "Choose 30, 60, 90, 180 or 365 days, a custom date, or never."
            }
        )
    moment = expiry_from_days(days, now)
    try:
        check_expiry(organization, moment, now)
    except ValidationFailed as exc:
        raise ValidationFailed(details={"expires_in_days": exc.details["expires_at"]}) from exc
    return moment


def grace_from_choice(value: object) -> int:
    """A form's grace period (seconds, as text) among the choices offered: none, 1 h, 24 h, 7 d."""
    seconds = int(value) if isinstance(value, str) and _ascii_digits(value) else value
    if seconds not in GRACE_CHOICES_SECONDS:
        raise ValidationFailed(
            details={"grace_period_seconds": "Choose none, 1 hour, 24 hours or 7 days."}
        )
    return seconds  # type: ignore[return-value]


DEFAULT_EXPIRY_DAYS = 90


def default_expiry(organization: Organization, now: datetime | None = None) -> datetime:
    """When no expiry is chosen: 90 days, or the policy's maximum lifetime if shorter."""
    days = min(DEFAULT_EXPIRY_DAYS, organization.max_lifetime_days)
    return (now or utcnow()) + timedelta(days=days)


def expiry_from_days(days: int | None, now: datetime | None = None) -> datetime | None:
    """`expires_in_days` of the forms and API: None means never."""
    if days is None:
        return None
    return (now or utcnow()) + timedelta(days=days)


def _collect(*checks: Any) -> list[Any]:
    """Run each zero-argument check, gathering every field's error into one ValidationFailed."""
    results, details = [], {}
    for check in checks:
        try:
            results.append(check())
        except ValidationFailed as exc:
            details.update(exc.details)
            results.append(None)
    if details:
        raise ValidationFailed(details=details)
    return results


# ---------------------------------------------------------------- permissions

READ_ONLY_MESSAGE = (
    "This is the token's previous secret, still inside its rotation grace: it may read, "
    "but not change anything. Use the current secret."
)


def _refuse_previous_secret(actor: Actor) -> None:
    """SPEC §2: a previous secret inside its grace reads; every change is refused."""
    if actor.previous_secret:
        message = READ_ONLY_MESSAGE
        raise Forbidden(message, details={"previous_secret": message})


def may_create(actor: Actor) -> bool:
    """May this actor create tokens at all? (Viewers may not; SPEC §1.)"""
    return actor.has_scope("tokens:write")


def require_may_create(actor: Actor) -> None:
    _refuse_previous_secret(actor)
    if not may_create(actor):
        raise Forbidden("You may not create or change tokens.")


def _require_write(actor: Actor, environment: str) -> None:
    _refuse_previous_secret(actor)
    if not actor.has_scope("tokens:write"):
        raise Forbidden("You may not create or change tokens.")
    if actor.token is not None and actor.token.environment != environment:
        message = f"A {actor.token.environment} token acts only in its own environment."
        raise Forbidden(message, details={"environment": message})


def can_manage(actor: Actor, token: ApiToken) -> bool:
    """May this actor rotate, rename, suspend, resume or revoke this token? (SPEC §1)"""
    if actor.previous_secret or not actor.has_scope("tokens:write"):
        return False
    if actor.token is not None and actor.token.environment != token.environment:
        return False
    if _above_caller(actor, token):
        return False
    return actor.manages_all_tokens or token.created_by_user_id == actor.user_id


def require_manage(actor: Actor, token: ApiToken) -> None:
    """NotFound for another environment's token seen through a token, Forbidden if not allowed."""
    _require_manage(actor, token)


def _above_caller(actor: Actor, token: ApiToken) -> bool:
    """A token may only act on tokens with no more power than its own: rotating an admin
    token would hand a writer token the admin secret."""
    if actor.token is None:
        return False
    return (
        TOKEN_ROLE_RANK[token.role] > TOKEN_ROLE_RANK[actor.token.role]
        or not token.effective_scopes <= actor.scopes
    )


def _require_manage(actor: Actor, token: ApiToken) -> None:
    if actor.token is not None and actor.token.environment != token.environment:
        raise NotFound("No such token.")
    _refuse_previous_secret(actor)
    if _above_caller(actor, token):
        raise Forbidden(
            f"A {actor.token.role} token cannot change a token with more power than its own."
        )
    if not can_manage(actor, token):
        raise Forbidden("You may not change this token.")


# The highest token role each member role may give: a token never does more than its
# creator may, so a member's "admin" token would only promise what it cannot do.
MEMBER_TOKEN_CEILING = {"owner": "admin", "admin": "admin", "member": "writer", "viewer": "viewer"}


def effective_role(actor: Actor) -> str | None:
    """The role the actor's token acts with now: its own, lowered to what its creator's
    current role lets a token be (a demoted creator's admin token acts as their ceiling).
    None when no member stands behind the token: it can do nothing."""
    assert actor.token is not None
    if actor.membership is None:
        return None
    ceiling = MEMBER_TOKEN_CEILING[actor.membership.role]
    return min(actor.token.role, ceiling, key=TOKEN_ROLE_RANK.__getitem__)


def grantable_roles(actor: Actor) -> list[str]:
    """The token roles this actor may give, highest first (what the create form offers)."""
    return [role for role in TOKEN_ROLES if _role_ceiling_message(actor, role) is None]


def _role_ceiling_message(actor: Actor, role: str) -> str | None:
    if actor.token is not None and TOKEN_ROLE_RANK[role] > TOKEN_ROLE_RANK[actor.token.role]:
        return f"A {actor.token.role} token cannot grant the {role} role."
    if actor.membership is not None:
        ceiling = MEMBER_TOKEN_CEILING[actor.membership.role]
        if TOKEN_ROLE_RANK[role] > TOKEN_ROLE_RANK[ceiling]:
            return f"As a {actor.membership.role}, you can give a token at most the {ceiling} role."
    return None


def _check_role_ceiling(actor: Actor, role: str) -> None:
    """A token never creates or raises a token above its own role, nor a member above
    what their own role allows."""
    message = _role_ceiling_message(actor, role)
    if message is not None:
        raise Forbidden(message, details={"role": message})


# ---------------------------------------------------------------- the delegation ceiling
#
# SPEC §2 "Delegation never widens": whatever creates or changes a token gives it no more
# than it has itself, in role and scopes, environment, expiry, IP allowlist and rate limit.
# `check_ceiling` is the one rule; create, update, rotate (and so the page, the API, the
# CLI and bulk actions, which all call those) go through it.


def caller_rate_limit(actor: Actor) -> str:
    """The rate limit the actor works under: a token's own (bounded by its organization's
    policy and the operator's maximum), else the policy's for people and the system."""
    own = actor.token.rate_limit if actor.token is not None else None
    return policy.token_rate_limit(own, actor.organization.rate_limit)


def policy_rate_limit(organization: Organization) -> str:
    """The organization's default limit, never above the operator's maximum."""
    return policy.token_rate_limit(None, organization.rate_limit)


def may_set_rate_limit(actor: Actor) -> bool:
    """Only owners and admins set a token's own limit (SPEC §2): people with those roles,
    the system, and tokens that act with the admin role for one of them."""
    if not actor.manages_all_tokens:
        return False
    return actor.token is None or effective_role(actor) == "admin"


def _expiry_ceiling(actor: Actor, expires_at: datetime | None, target: TokenState | None):
    if actor.token is None:
        return None  # people: the key policy bounds expiry (check_expiry)
    own = actor.token.expires_at
    if own is not None and (expires_at is None or expires_at > own):
        return f"A token cannot give an expiry later than its own ({_iso(own)})."
    if (
        target is not None
        and target.expires_at is not None
        and (expires_at is None or expires_at > target.expires_at)
    ):
        return "A token may shorten a token's expiry, never lengthen or remove it."
    return None


def _allowlist_ceiling(actor: Actor, allowed_ips: list[str] | None, target: TokenState | None):
    if actor.token is None:
        return None  # people may set any allowlist on the tokens they manage
    own = actor.token.allowed_ips
    if own and not allowlist_within(allowed_ips, own):
        return (
            "A token confined to an IP allowlist can give only addresses inside its own: "
            + ", ".join(own)
            + "."
        )
    if (
        target is not None
        and target.allowed_ips
        and not allowlist_within(allowed_ips, target.allowed_ips)
    ):
        return "A token may narrow a token's IP allowlist, never widen or remove it."
    return None


def _rate_limit_ceiling(
    actor: Actor,
    organization: Organization,
    rate_limit: str | None,
    target: TokenState | None,
    *,
    chosen: bool,
):
    if chosen and (rate_limit is not None or target is not None) and not may_set_rate_limit(actor):
        return "Only owners and admins set a token's own rate limit."
    ceiling = policy_rate_limit(organization)
    if rate_limit is not None and not policy.rate_limit_within(rate_limit, ceiling):
        return f"At most the organization's policy limit, {ceiling}."
    if actor.token is not None:
        given = rate_limit or ceiling  # none of its own: the policy's applies
        own = caller_rate_limit(actor)
        if not policy.rate_limit_within(given, own):
            return f"A token cannot give a rate limit above its own ({own})."
    return None


def check_ceiling(
    actor: Actor,
    organization: Organization,
    *,
    role: str,
    scopes: list[str],
    environment: str,
    expires_at: datetime | None | _Unset = UNSET,
    allowed_ips: list[str] | None | _Unset = UNSET,
    rate_limit: str | None | _Unset = UNSET,
    rate_limit_chosen: bool = True,
    target: TokenState | None = None,
) -> None:
    """Forbidden (403 insufficient_scope), naming each dimension in `details`, unless the
    token that would result stays within what the actor has. `target` is the token being
    changed (None: a new one); UNSET means "this dimension does not change".

    - role and scopes: never above the actor (a member's token at most writer; a token
      never grants what it lacks);
    - environment: a token acts only in its own;
    - expiry: a token's child expires no later than the token, and a token may shorten,
      never lengthen or remove, an expiry;
    - allowlist: a confined token gives only addresses inside its allowlist, and a token
      may narrow, never widen or remove, an allowlist;
    - rate limit: no token above its organization's policy (itself within RATE_LIMIT_MAX),
      none above the calling token's own (so a token never raises its own), and only owners
      and admins choose one.
    """
    problems: dict[str, str] = {}
    message = _role_ceiling_message(actor, role)
    if message is not None:
        problems["role"] = message
    granted = frozenset(scopes) if scopes else ROLE_SCOPES[role]
    if actor.token is not None and not granted <= actor.scopes:
        problems["scopes"] = "A token cannot grant scopes it does not have."
    if actor.token is not None and actor.token.environment != environment:
        problems["environment"] = (
            f"A {actor.token.environment} token acts only in its own environment."
        )
    if expires_at is not UNSET:
        message = _expiry_ceiling(actor, expires_at, target)
        if message is not None:
            problems["expires_at"] = message
    if allowed_ips is not UNSET:
        message = _allowlist_ceiling(actor, allowed_ips, target)
        if message is not None:
            problems["allowed_ips"] = message
    if rate_limit is not UNSET:
        message = _rate_limit_ceiling(
            actor, organization, rate_limit, target, chosen=rate_limit_chosen
        )
        if message is not None:
            problems["rate_limit"] = message
    if problems:
        first = next(iter(problems.values()))
        raise Forbidden(first, details=problems)


def check_within_caller(actor: Actor, token: TokenState) -> None:
    """Rotating hands the actor the token's new secret: a token may rotate only a token
    that can do no more than it can, in every dimension of the ceiling."""
    if actor.token is None:
        return
    try:
        check_ceiling(
            actor,
            actor.organization,
            role=token.role,
            scopes=list(token.scopes or []),
            environment=token.environment,
            expires_at=token.expires_at,
            allowed_ips=list(token.allowed_ips) if token.allowed_ips else None,
            rate_limit=token.rate_limit,
            rate_limit_chosen=False,
        )
    except Forbidden as exc:
        raise Forbidden(
            "A token may rotate only tokens that can do no more than it can: this one "
            f"goes beyond the calling token in {', '.join(exc.details)}.",
            details=exc.details,
        ) from None


def inherited_defaults(
    actor: Actor, organization: Organization, now: datetime
) -> tuple[datetime, list[str] | None, str | None]:
    """What a new token gets when its creator names no expiry, allowlist or rate limit:
    the policy's defaults, never beyond the calling token's own (a confined token's child
    is confined the same way)."""
    expiry = default_expiry(organization, now)
    if actor.token is None:
        return expiry, None, None
    if actor.token.expires_at is not None:
        expiry = min(expiry, actor.token.expires_at)
    allowed = list(actor.token.allowed_ips) if actor.token.allowed_ips else None
    own_limit = caller_rate_limit(actor)
    rate_limit = None if own_limit == policy_rate_limit(organization) else own_limit
    return expiry, allowed, rate_limit


# ---------------------------------------------------------------- changes


def _touch(token: ApiToken, now: datetime) -> None:
    token.updated_at = now


def _shown_to(token: ApiToken, actor: Actor) -> None:
    """Remember who now holds the token's current secret: the person, or the token through
    which it was asked for (whoever holds that token holds this secret too). A token that
    rotates itself shows its new secret to whoever held it already: that stays as it was."""
    if actor.token is not None and actor.token.id == token.id:
        return
    if actor.token is not None:
        token.secret_shown_to_user_id, token.secret_shown_to_token_id = None, actor.token.id
    else:
        token.secret_shown_to_user_id, token.secret_shown_to_token_id = actor.user_id, None


def _flush_checking_name(token: ApiToken) -> None:
    """Flush, turning a race on the live-name index into DuplicateName."""
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError as exc:
        raise DuplicateName() from exc


def _name_taken(organization: Organization, environment: str, name: str, exclude: str | None):
    query = sa.select(ApiToken.id).where(
        ApiToken.organization_id == organization.id,
        ApiToken.environment == environment,
        ApiToken.name == name,
        ApiToken.revoked_at.is_(None),
    )
    if exclude is not None:
        query = query.where(ApiToken.id != exclude)
    return db.session.scalar(query.limit(1)) is not None


def lock_organization(organization: Organization) -> None:
    """Serialize token creation per organization so the live-token limit holds under races.

    PostgreSQL locks the organization's row. SQLite has no row locks: a no-op UPDATE
    takes the database's write lock first, so concurrent creates wait for each other
    (busy timeout) instead of all counting before any of them writes.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(
            sa.update(Organization)
            .where(Organization.id == organization.id)
            .values(id=Organization.id)
            .execution_options(synchronize_session=False)
        )
        return
    db.session.execute(
        sa.select(Organization.id).where(Organization.id == organization.id).with_for_update()
    )


def _lock_and_recheck(organization: Organization, actor: Actor) -> None:
    """Take the organization's lock, then make sure the acting member is still there with
    the role the permission checks saw: a removal or demotion that committed meanwhile
    (and listed this member's tokens) must not be outrun by a create or a rotation."""
    lock_organization(organization)
    if actor.membership is None:
        return
    role = db.session.scalar(sa.select(Membership.role).where(Membership.id == actor.membership.id))
    if role != actor.membership.role:
        raise Forbidden("Your membership of this organization changed; try again.")


def create_token(
    organization: Organization,
    actor: Actor,
    *,
    name: object,
    environment: object,
    role: object = "viewer",
    scopes: object = None,
    type: object = "generic",  # noqa: A002 - the SPEC's field name
    expires_at: datetime | None | _Unset = UNSET,
    allowed_ips: object = UNSET,
    rate_limit: object = UNSET,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Make a token; returns it with its secret, which the caller shows once and forgets.

    `expires_at` None: never. `rate_limit` None: the organization's default applies.
    Left UNSET, expiry, allowlist and rate limit are the defaults (inherited_defaults):
    the policy's, never beyond a calling token's own."""
    now = now or utcnow()
    # Permission first: a viewer learns nothing from validation messages.
    require_may_create(actor)
    default_expiry_, default_ips, default_limit = inherited_defaults(actor, organization, now)
    limit_chosen = rate_limit is not UNSET
    if expires_at is UNSET:
        expires_at = default_expiry_
    if allowed_ips is UNSET:
        allowed_ips = default_ips
    if rate_limit is UNSET:
        rate_limit = default_limit
    name, environment, role, type_, _, allowed_ips, rate_limit = _collect(
        lambda: normalize_name(name),
        lambda: _check_choice("environment", environment, ENVIRONMENTS),
        lambda: normalize_role(role),
        lambda: _check_choice("type", type, TOKEN_TYPES),
        lambda: check_expiry(organization, expires_at, now),
        lambda: parse_allowlist(allowed_ips),
        lambda: normalize_rate_limit(rate_limit),
    )
    (scopes,) = _collect(lambda: normalize_scopes(scopes, role))
    _require_write(actor, environment)
    check_ceiling(
        actor,
        organization,
        role=role,
        scopes=scopes,
        environment=environment,
        expires_at=expires_at,
        allowed_ips=allowed_ips,
        rate_limit=rate_limit,
        rate_limit_chosen=limit_chosen,
    )

    _lock_and_recheck(organization, actor)
    if live_token_count(organization, now) >= organization.max_live_tokens:
        limit = organization.max_live_tokens
        raise TokenLimitReached(
            f"This organization has reached its limit of {limit:,} live "
            f"{'token' if limit == 1 else 'tokens'}. Revoke one or raise the limit in the key "
            "policy."
        )
    if _name_taken(organization, environment, name, exclude=None):
        raise DuplicateName()

    token_id = token_secrets.new_token_id()
    secret = token_secrets.new_secret(environment, token_id)
    token = ApiToken(
        id=token_id,
        organization_id=organization.id,
        environment=environment,
        name=name,
        role=role,
        scopes=scopes,
        type=type_,
        active=True,
        prefix=token_secrets.visible_prefix(environment, token_id),
        secret_hash=_hash(secret),
        created_at=now,
        updated_at=now,
        expires_at=expires_at,
        created_by_user_id=actor.user_id,
        created_by_token_id=actor.token.id if actor.token is not None else None,
        created_by_label=actor.label,
        allowed_ips=allowed_ips,
        rate_limit=rate_limit,
    )
    _shown_to(token, actor)
    db.session.add(token)
    _flush_checking_name(token)
    details = {"role": role, "scopes": scopes, "type": type_}
    if rate_limit is not None:
        details["rate_limit"] = rate_limit
    _record(actor, "token.created", token, details)
    db.session.flush()
    return token, secret


def create_token_from_form(
    organization: Organization,
    actor: Actor,
    *,
    name: object,
    environment: object,
    role: object,
    scopes: object,
    type: object,  # noqa: A002 - the SPEC's field name
    expires_in_days: object,
    expires_at: date | None = None,
    allowed_ips: object = None,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """create_token() for the page's form: every field's error at once, expiry as chosen."""
    now = now or utcnow()
    require_may_create(actor)
    expiry = None
    details: dict[str, str] = {}
    try:
        expiry = expiry_from_choice(organization, expires_in_days, expires_at, now=now)
    except ValidationFailed as exc:
        details.update(exc.details)
    try:
        _collect(
            lambda: normalize_name(name),
            lambda: parse_environment(environment),
            lambda: normalize_scopes(scopes, normalize_role(role)),
            lambda: _check_choice("type", type, TOKEN_TYPES),
            lambda: parse_allowlist(allowed_ips),
        )
    except ValidationFailed as exc:
        details = {**exc.details, **details}
    if "role" not in details:  # a role above one's ceiling is said beside the others
        ceiling = _role_ceiling_message(actor, normalize_role(role))
        if ceiling is not None:
            details["role"] = ceiling
    if details:
        raise ValidationFailed(details=details)
    return create_token(
        organization,
        actor,
        name=name,
        environment=environment,
        role=role,
        scopes=scopes,
        type=type,
        expires_at=expiry,
        allowed_ips=allowed_ips,
        now=now,
    )


def rotate_token(
    token: ApiToken,
    actor: Actor,
    *,
    grace_seconds: object = 0,
    expires_at: datetime | None | _Unset = UNSET,
    now: datetime | None = None,
) -> str:
    """A new secret for the same token; the old one works for `grace_seconds` more.

    `expires_at` gives it a new expiry as well (GitHub's "regenerate"), within the policy
    and the delegation ceiling. An expired token can only be rotated that way (SPEC §2),
    and its expired secret stays dead: renewing it must not revive the old secret.
    """
    now = now or utcnow()
    _require_manage(actor, token)
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= MAX_GRACE_SECONDS
    ):
        raise ValidationFailed(
            details={
                "grace_period_seconds": "Grace period must be a whole number of seconds "
                f"from 0 to {MAX_GRACE_SECONDS} (7 days)."
            }
        )
    if token.is_revoked:
        raise TokenIsRevoked("This token is revoked, for good: it cannot be rotated.")
    expired = token.expires_at is not None and token.expires_at <= now
    if expired and expires_at is UNSET:
        raise ValidationFailed(
            details={
                "expires_at": "This token has expired: rotating it needs a new expiry "
                "(renew it), since a new secret would expire at once too."
            }
        )
    if expired and grace_seconds:
        raise ValidationFailed(
            details={
                "grace_period_seconds": "This token has expired: its old secret no longer "
                "works, so it cannot keep working for a grace period. Choose none."
            }
        )
    if expires_at is not UNSET:
        check_expiry(actor.organization, expires_at, now)
        check_ceiling(
            actor,
            actor.organization,
            role=token.role,
            scopes=list(token.scopes or []),
            environment=token.environment,
            expires_at=expires_at if expires_at != token.expires_at else UNSET,
            target=token,
        )
    check_within_caller(actor, token)  # the new secret is handed to the caller
    _lock_and_recheck(actor.organization, actor)
    secret = token_secrets.new_secret(token.environment, token.id)
    if grace_seconds:
        token.previous_secret_hash = token.secret_hash
        token.previous_secret_expires_at = now + timedelta(seconds=grace_seconds)
        token.previous_secret_shown_to_user_id = token.secret_shown_to_user_id
        token.previous_secret_shown_to_token_id = token.secret_shown_to_token_id
    else:
        token.previous_secret_hash = None
        token.previous_secret_expires_at = None
        token.previous_secret_shown_to_user_id = None
        token.previous_secret_shown_to_token_id = None
    token.secret_hash = _hash(secret)
    details: dict[str, Any] = {"grace_period_seconds": grace_seconds}
    if expires_at is not UNSET and expires_at != token.expires_at:
        details["expires_at"] = {"from": _iso(token.expires_at), "to": _iso(expires_at)}
        token.expires_at = expires_at
    _shown_to(token, actor)
    _touch(token, now)
    _record(actor, "token.rotated", token, details)
    db.session.flush()
    _changed(token)
    return secret


def rename_token(token: ApiToken, actor: Actor, *, name: object) -> ApiToken:
    return update_token(token, actor, name=name)


def suspend_token(token: ApiToken, actor: Actor) -> ApiToken:
    return update_token(token, actor, active=False)


def resume_token(token: ApiToken, actor: Actor) -> ApiToken:
    return update_token(token, actor, active=True)


def update_token(
    token: ApiToken,
    actor: Actor,
    *,
    name: object = UNSET,
    active: object = UNSET,
    role: object = UNSET,
    scopes: object = UNSET,
    expires_at: datetime | None | _Unset = UNSET,
    allowed_ips: object = UNSET,
    rate_limit: object = UNSET,
    now: datetime | None = None,
) -> ApiToken:
    """Change any of name, active, role, scopes, expiry, IP allowlist, rate limit (None: the
    organization's); one audit event per kind of change."""
    now = now or utcnow()
    _require_manage(actor, token)
    if token.is_revoked:
        raise TokenIsRevoked("This token is revoked, for good: it cannot be changed.")

    checks: dict[str, Any] = {}
    if name is not UNSET:
        checks["name"] = lambda: normalize_name(name)
    if role is not UNSET:
        checks["role"] = lambda: normalize_role(role)
    if allowed_ips is not UNSET:
        checks["allowed_ips"] = lambda: parse_allowlist(allowed_ips)
    if rate_limit is not UNSET:
        checks["rate_limit"] = lambda: normalize_rate_limit(rate_limit)
    if active is not UNSET and not isinstance(active, bool):
        raise ValidationFailed(details={"active": "Active must be true or false."})
    values = dict(zip(checks, _collect(*checks.values()), strict=True))
    new_role = values.get("role", token.role)
    new_scopes = token.scopes if scopes is UNSET else None
    if scopes is not UNSET or "role" in values:
        (new_scopes,) = _collect(
            lambda: normalize_scopes(token.scopes if scopes is UNSET else scopes, new_role)
        )
    if expires_at is not UNSET:
        check_expiry(actor.organization, expires_at, now)
    changed_limit = "rate_limit" in values and values["rate_limit"] != token.rate_limit
    changed_ips = "allowed_ips" in values and values["allowed_ips"] != token.allowed_ips
    check_ceiling(
        actor,
        actor.organization,
        role=new_role,
        scopes=new_scopes or [],
        environment=token.environment,
        expires_at=expires_at if expires_at != token.expires_at else UNSET,
        allowed_ips=values["allowed_ips"] if changed_ips else UNSET,
        rate_limit=values["rate_limit"] if changed_limit else UNSET,
        target=token,
    )

    changes: dict[str, Any] = {}
    new_name = values.get("name", token.name)
    if new_name != token.name:
        if _name_taken(actor.organization, token.environment, new_name, exclude=token.id):
            raise DuplicateName()
        changes["name"] = {"from": token.name, "to": new_name}
        token.name = new_name
    if new_role != token.role:
        changes["role"] = {"from": token.role, "to": new_role}
        token.role = new_role
    if new_scopes != token.scopes:
        changes["scopes"] = {"from": token.scopes, "to": new_scopes}
        token.scopes = new_scopes
    if expires_at is not UNSET and expires_at != token.expires_at:
        changes["expires_at"] = {
            "from": _iso(token.expires_at),
            "to": _iso(expires_at),
        }
        token.expires_at = expires_at
    for column in ("allowed_ips", "rate_limit"):
        if column in values and values[column] != getattr(token, column):
            changes[column] = {"from": getattr(token, column), "to": values[column]}
            setattr(token, column, values[column])

    state_action = None
    if active is not UNSET and active != token.active:
        token.active = active
        state_action = "token.resumed" if active else "token.suspended"

    if changes or state_action:
        _touch(token, now)
        _flush_checking_name(token)
    if changes:
        _record(actor, "token.updated", token, changes)
    if state_action:
        _record(actor, state_action, token, {})
    db.session.flush()
    if changes or state_action:
        _changed(token)
    return token


def revoke_token(
    token: ApiToken, actor: Actor, *, reason: str = "revoked", now: datetime | None = None
) -> ApiToken:
    """Revoke for good. Revoking an already revoked token changes nothing."""
    now = now or utcnow()
    _require_manage(actor, token)
    if token.is_revoked:
        return token
    token.revoked_at = now
    token.revoked_reason = reason
    # Revoking ends a rotation's grace at once; the previous secret's hash stays so that a
    # request with it is told token_revoked, like one with the current secret.
    if token.previous_secret_expires_at is not None and token.previous_secret_expires_at > now:
        token.previous_secret_expires_at = now
    _touch(token, now)
    _record(actor, "token.revoked", token, {"reason": reason})
    db.session.flush()
    _changed(token)
    return token


@dataclass(frozen=True)
class SecretHolders:
    """To whom the token's current secret, and its previous one inside its grace, were
    shown: a person's email, or a token's name (`token: name` on the page), or None."""

    current: str | None
    previous: str | None


def secret_holders(token: ApiToken, *, now: datetime | None = None) -> SecretHolders:
    now = now or utcnow()

    def who(user_id: int | None, token_id: str | None) -> str | None:
        if user_id is not None:
            user = db.session.get(User, user_id)
            return user.email if user is not None else None
        if token_id is not None:
            holder = db.session.get(ApiToken, token_id)
            return f"token: {holder.name}" if holder is not None else None
        return None

    in_grace = (
        token.previous_secret_expires_at is not None and token.previous_secret_expires_at > now
    )
    return SecretHolders(
        current=who(token.secret_shown_to_user_id, token.secret_shown_to_token_id),
        previous=who(
            token.previous_secret_shown_to_user_id, token.previous_secret_shown_to_token_id
        )
        if in_grace
        else None,
    )


def find_live_by_name(organization: Organization, environment: str, name: str) -> ApiToken:
    token = db.session.scalar(
        tokens_of(organization, environment).where(
            ApiToken.name == name, ApiToken.revoked_at.is_(None)
        )
    )
    if token is None:
        raise NotFound("No live token with this name.")
    return token


# ---------------------------------------------------------------- verification


def _keys() -> list[str]:
    config = current_app.config
    return [config["TOKEN_HMAC_KEY"], *config.get("TOKEN_HMAC_OLD_KEYS", [])]


def _hash(secret: str) -> str:
    return token_secrets.hash_secret(secret, current_app.config["TOKEN_HMAC_KEY"])


_INVALID = "The token is not valid."


def load_for_verification(token_id: str) -> VerifiedToken | None:
    """One indexed look-up by primary key, or none: served from the per-worker cache."""
    return token_cache.load_for_verification(token_id)


def verify(secret: str, *, now: datetime | None = None) -> VerifiedToken:
    """The live token this secret belongs to, or AuthFailed with SPEC §4's 401 code."""
    return verify_secret(secret, now=now)[0]


def verify_secret(secret: str, *, now: datetime | None = None) -> tuple[VerifiedToken, bool]:
    """The live token this secret belongs to, and whether the secret is its previous one
    (inside its rotation grace: it may only read); or AuthFailed with SPEC §4's 401 code.

    Checksum first (no database for a malformed token), then one look-up by id (or
    none, from the cache), then a constant-time HMAC comparison. No database write.
    Returns an immutable snapshot that reads like an ApiToken (services/token_cache.py).
    """
    now = now or utcnow()
    parsed = token_secrets.parse(secret)
    if parsed is None:
        raise AuthFailed("invalid_token", _INVALID)
    token = load_for_verification(parsed.token_id)
    if token is None or token.environment != parsed.environment:
        raise AuthFailed("invalid_token", _INVALID)
    keys = _keys()
    current = token_secrets.matches(secret, token.secret_hash, keys)
    grace_end = token.previous_secret_expires_at
    previous = (
        grace_end is not None
        # Still in its grace, or it was when the token was revoked (then: token_revoked).
        and (grace_end > now or (token.revoked_at is not None and grace_end >= token.revoked_at))
        and token_secrets.matches(secret, token.previous_secret_hash, keys)
    )
    if not (current or previous):
        raise AuthFailed("invalid_token", _INVALID)
    status = token.status_at(now)
    if status == "revoked":
        raise AuthFailed("token_revoked", "The token has been revoked.")
    if status == "expired":
        raise AuthFailed("token_expired", "The token has expired.")
    if status == "inactive":
        raise AuthFailed("token_inactive", "The token is suspended.")
    return token, previous and not current


# ---------------------------------------------------------------- helpers


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _record(actor: Actor, action: str, token: ApiToken, details: Mapping[str, Any]) -> None:
    audit.record(
        actor,
        action,
        environment=token.environment,
        target_type="token",
        target_id=token.id,
        target_label=token.name,
        details=dict(details),
    )
    webhooks.token_changed(action, token, actor, details)  # the outbox, same transaction


_change_listeners: list[Any] = []


def on_change(listener: Any) -> Any:
    """Register a callable told of every token whose verification outcome may have changed."""
    _change_listeners.append(listener)
    return listener


def _changed(token: ApiToken) -> None:
    for listener in _change_listeners:
        listener(token)


# Verification caches forget a changed token once its transaction commits.
on_change(token_cache.token_changed)
