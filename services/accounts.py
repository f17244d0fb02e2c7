"""Sign-up, sign-in and the organizations a person belongs to."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

import bcrypt
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager
from zxcvbn import zxcvbn

from extensions import db
from models import Membership, Organization, PasswordReset, User, utcnow
from services import audit
from services.actor import Actor
from services.errors import NotFound, ValidationFailed

PASSWORD_MIN = 12
# zxcvbn's 0-4 scale: 3 is "safely unguessable" against a throttled online attack.
PASSWORD_MIN_SCORE = 3
PASSWORD_HINT = (
    f"At least {PASSWORD_MIN} characters, hard to guess: a few unrelated words work well."
)
# bcrypt reads at most 72 bytes; refuse longer rather than silently ignoring the rest.
PASSWORD_MAX_BYTES = 72

# A fixed hash to compare against when the email is unknown, so timing does not tell.
_DUMMY_HASH: bytes | None = None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    rounds = current_app.config["BCRYPT_LOG_ROUNDS"]
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def check_password_rules(password: str, user_inputs: list[str] | None = None) -> None:
    """12-72 bytes and hard to guess: zxcvbn's score of at least 3 ("safely unguessable"
    against a throttled online attack), given what the person typed elsewhere."""
    if len(password) < PASSWORD_MIN:
        raise ValidationFailed(
            details={"password": f"Password must be at least {PASSWORD_MIN} characters."}
        )
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        raise ValidationFailed(
            details={"password": f"Password must be at most {PASSWORD_MAX_BYTES} bytes."}
        )
    words = [w for value in user_inputs or [] for w in _input_words(value)]
    result = zxcvbn(password, user_inputs=words)
    if result["score"] < PASSWORD_MIN_SCORE:
        feedback = result["feedback"]
        advice = " ".join(
            part for part in [feedback.get("warning"), *feedback.get("suggestions", [])] if part
        )
        raise ValidationFailed(
            details={
                "password": f"This password is too easy to guess. {advice}".strip()
                if advice
                else "This password is too easy to guess: add a few uncommon words."
            }
        )


def _input_words(value: str | None) -> list[str]:
    """An email or a name, and its parts: "ada.lovelace@example.com" → the whole, "ada",
    "lovelace", "example"."""
    if not isinstance(value, str) or not value:
        return []
    lowered = value.lower()
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", lowered) if len(p) >= 3]
    # The parts run together too ("adalovelace", "lovelaceada"), and the email's local part
    # and domain on their own: zxcvbn matches whole words only.
    joined = ["".join(parts), "".join(reversed(parts))] if len(parts) > 1 else []
    local, _, domain = lowered.partition("@")
    bare = re.sub(r"[^0-9a-z]", "", local)
    pieces = [p for p in (local, domain, bare, f"{bare}@{domain}" if domain else "") if len(p) >= 3]
    return list(dict.fromkeys([lowered, *parts, *joined, *pieces]))


def user_by_email(email: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.email == normalize_email(email)))


def create_user(*, email: str, name: str, password: str) -> User:
    """A new person; raises ValidationFailed if the email is taken or the password too weak."""
    check_password_rules(password, user_inputs=[email, name])
    taken = ValidationFailed(
        details={"email": "An account with this email already exists. Sign in instead."}
    )
    if user_by_email(email) is not None:
        raise taken
    user = User(
        email=normalize_email(email), name=name.strip(), password_hash=hash_password(password)
    )
    db.session.add(user)
    try:
        # A simultaneous sign-up with the same email (a double click) loses on the unique index.
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        raise taken from None
    return user


def sign_up(
    *,
    email: str,
    password: str,
    name: str,
    organization: str,
    default_rate_limit: str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> tuple[User, Organization]:
    """Create the user and an organization they own (SPEC §1)."""
    user = create_user(email=email, name=name, password=password)
    try:
        org = create_organization(
            user,
            name=organization,
            default_rate_limit=default_rate_limit,
            via="signup",
            ip=ip,
            user_agent=user_agent,
        )
    except ValidationFailed as exc:  # the sign-up form calls that field "organization"
        raise ValidationFailed(details={"organization": exc.details["name"]}) from None
    return user, org


def create_organization(
    owner: User,
    *,
    name: str,
    default_rate_limit: str,
    via: str = "new organization",
    ip: str | None = None,
    user_agent: str | None = None,
    max_owned: int | None = None,
) -> Organization:
    """A new organization owned by `owner`, with the default key policy. With `max_owned`,
    someone who already owns that many is refused (each one is a policy, a token limit and
    an audit log of its own: unlimited, one account could fill the database)."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationFailed(
            details={"name": "Give the organization a name of 1-100 characters."}
        )
    if max_owned is not None:
        # The person's row is locked first (PostgreSQL), so parallel requests count in turn.
        db.session.execute(sa.select(User.id).where(User.id == owner.id).with_for_update())
        owned = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.user_id == owner.id, Membership.role == "owner")
        )
        if owned >= max_owned:
            raise ValidationFailed(
                details={
                    "name": f"You already own {owned} organizations, the most one person may "
                    "start here. Ask the operator to raise MAX_OWNED_ORGANIZATIONS, or hand "
                    "one over to another owner."
                }
            )
    org = Organization(name=name, rate_limit=default_rate_limit)
    db.session.add(org)
    db.session.flush()
    membership = Membership(organization_id=org.id, user_id=owner.id, role="owner")
    db.session.add(membership)
    db.session.flush()
    actor = Actor(organization=org, membership=membership, ip=ip, user_agent=user_agent)
    audit.record(
        actor,
        "member.joined",
        target_type="member",
        target_id=membership.id,
        target_label=owner.email,
        details={"role": "owner", "via": via},
    )
    db.session.flush()
    return org


def authenticate(email: str, password: str) -> User | None:
    """The user if the password is right; the same work is done when the email is unknown."""
    global _DUMMY_HASH
    user = user_by_email(email)
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = bcrypt.hashpw(
                b"keysmith-dummy", bcrypt.gensalt(current_app.config["BCRYPT_LOG_ROUNDS"])
            )
        bcrypt.checkpw(password.encode()[:PASSWORD_MAX_BYTES], _DUMMY_HASH)
        return None
    if bcrypt.checkpw(password.encode()[:PASSWORD_MAX_BYTES], user.password_hash.encode()):
        return user
    return None


def memberships_of(user: User) -> list[Membership]:
    """The user's memberships with their organizations, in one query, by organization name."""
    return list(
        db.session.scalars(
            sa.select(Membership)
            .join(Membership.organization)
            .where(Membership.user_id == user.id)
            .options(contains_eager(Membership.organization))
            .order_by(sa.func.lower(Organization.name), Organization.id)
        )
    )


def membership_in(user: User, organization_id: int) -> Membership | None:
    return db.session.scalar(
        sa.select(Membership).where(
            Membership.user_id == user.id, Membership.organization_id == organization_id
        )
    )


def record_sign_in(user: User, *, success: bool, ip: str | None, user_agent: str | None) -> None:
    """Audit a sign-in (or a failed one) in each organization the person belongs to."""
    _record_account_event(
        user, "user.signed_in" if success else "user.sign_in_failed", ip=ip, user_agent=user_agent
    )


def _record_account_event(
    user: User,
    action: str,
    *,
    ip: str | None,
    user_agent: str | None,
    details: dict | None = None,
) -> None:
    """An event about the person's own account, in each organization they belong to."""
    for membership in memberships_of(user):
        actor = Actor(
            organization=membership.organization,
            membership=membership,
            ip=ip,
            user_agent=user_agent,
        )
        audit.record(
            actor,
            action,
            target_type="member",
            target_id=membership.id,
            target_label=user.email,
            details=details,
        )
    db.session.flush()


# ---------------------------------------------------------------- passwords


def password_matches(user: User, password: str) -> bool:
    return bcrypt.checkpw(password.encode()[:PASSWORD_MAX_BYTES], user.password_hash.encode())


def set_password(
    user: User,
    new_password: str,
    *,
    via: str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """Give the person a new password (checked against the rules) and audit it. The caller
    ends the sessions that should end (services/sessions.py); pending reset links die here."""
    check_password_rules(new_password, user_inputs=[user.email, user.name])
    user.password_hash = hash_password(new_password)
    db.session.execute(
        sa.delete(PasswordReset).where(
            PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None)
        )
    )
    _record_account_event(
        user, "user.password_changed", ip=ip, user_agent=user_agent, details={"via": via}
    )
    db.session.flush()


def change_password(
    user: User,
    *,
    current_password: str,
    new_password: str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """Settings → Account → Change password: the current password is required."""
    if not password_matches(user, current_password or ""):
        raise ValidationFailed(details={"current_password": "That is not your current password."})
    if current_password == new_password:
        raise ValidationFailed(
            details={"new_password": "Choose a password other than your current one."}
        )
    set_password(user, new_password, via="settings", ip=ip, user_agent=user_agent)


RESET_LIFETIME = timedelta(hours=1)


def reset_hash(secret: str) -> str:
    """HMAC-SHA256 of a reset link's secret, keyed apart from tokens and invites by a label."""
    key = current_app.config["TOKEN_HMAC_KEY"].encode()
    return hmac.new(key, b"password-reset:" + secret.encode(), hashlib.sha256).hexdigest()


def cancel_password(user: User) -> None:
    """Make the current password stop working (an operator's reset): a hash of a random
    secret nobody keeps, so no password matches until the reset link sets a new one."""
    user.password_hash = hash_password(secrets.token_urlsafe(32))
    db.session.flush()


def create_password_reset(user: User, *, now: datetime | None = None) -> tuple[PasswordReset, str]:
    """A one-time reset link's secret (shown once, stored as an HMAC); earlier links die."""
    now = now or utcnow()
    db.session.execute(
        sa.delete(PasswordReset).where(
            PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None)
        )
    )
    secret = secrets.token_urlsafe(32)
    reset = PasswordReset(
        user_id=user.id,
        token_hash=reset_hash(secret),
        created_at=now,
        expires_at=now + RESET_LIFETIME,
    )
    db.session.add(reset)
    db.session.flush()
    return reset, secret


def reset_for_link(secret: str, *, now: datetime | None = None) -> PasswordReset:
    """The live reset behind a link, or NotFound (unknown, used or expired: the same words)."""
    gone = NotFound(
        "This password reset link is not valid: it may have been used, replaced or have "
        "expired (links last an hour). Ask your operator for a new one."
    )
    if not secret or len(secret) > 200:
        raise gone
    reset = db.session.scalar(
        sa.select(PasswordReset).where(PasswordReset.token_hash == reset_hash(secret))
    )
    if reset is None or reset.used_at is not None or reset.expires_at <= (now or utcnow()):
        raise gone
    return reset


def use_password_reset(
    reset: PasswordReset,
    new_password: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> User:
    """Set the password through a reset link; the link dies with it (set_password deletes
    every pending link of the person)."""
    user = reset.user
    set_password(user, new_password, via="reset link", ip=ip, user_agent=user_agent)
    return user
