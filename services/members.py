"""Every rule about the people of an organization: invites, roles and removal (SPEC §1).

Owners and admins manage members; admins never touch owners nor grant the owner role;
nobody grants a role above their own; an organization always keeps one owner.
Functions take an explicit actor, write the audit event, flush, and never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.orm import contains_eager, joinedload

from extensions import db
from models import ROLE_RANK, ROLES, ApiToken, Invite, Membership, Organization, User, utcnow
from services import accounts, audit, webhooks
from services import tokens as token_service
from services.actor import Actor
from services.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed

INVITE_TTL = timedelta(days=7)
MANAGER_ROLES = ("owner", "admin")


class InviteGone(DomainError):
    """The link was real but can no longer be used: accepted, cancelled or expired."""

    code = "not_found"
    status = 410
    message = "This invitation can no longer be used."


class WrongAccount(DomainError):
    """A signed-in person opened an invite addressed to another email."""

    code = "insufficient_scope"
    status = 403
    message = "This invitation is for another email address."


# ---------------------------------------------------------------- permissions


def can_manage_members(actor: Actor) -> bool:
    """Owners and admins (and the system) manage members (SPEC §1)."""
    if actor.token is not None:
        return False
    return actor.membership is None or actor.membership.role in MANAGER_ROLES


def grantable_roles(actor: Actor) -> tuple[str, ...]:
    """The roles this actor may give: none above their own (so admins never grant owner)."""
    if not can_manage_members(actor):
        return ()
    if actor.membership is None:
        return ROLES
    return tuple(role for role in ROLES if ROLE_RANK[role] <= actor.membership.rank)


def can_act_on(actor: Actor, member: Membership) -> bool:
    """May this actor change or remove this member? Admins never touch owners."""
    if not can_manage_members(actor):
        return False
    if actor.membership is None:
        return True
    return member.rank <= actor.membership.rank


def _require_manager(actor: Actor) -> None:
    if not can_manage_members(actor):
        raise Forbidden("Only owners and admins can manage members.")


def _require_act_on(actor: Actor, member: Membership) -> None:
    _require_manager(actor)
    if not can_act_on(actor, member):
        raise Forbidden("Admins cannot change or remove an owner.")


def _require_grantable(actor: Actor, role: object) -> str:
    if role not in ROLES:
        raise ValidationFailed(details={"role": f"Role must be one of: {', '.join(ROLES)}."})
    if role not in grantable_roles(actor):
        raise ValidationFailed(
            details={"role": f"You cannot grant the {role} role: it is above your own."}
        )
    return role  # type: ignore[return-value]


# ---------------------------------------------------------------- queries


def members_of(organization: Organization) -> sa.Select[tuple[Membership]]:
    """The organization's memberships with their users, highest role first, then by name."""
    order = sa.case({role: i for i, role in enumerate(ROLES)}, value=Membership.role)
    return (
        sa.select(Membership)
        .join(Membership.user)
        .options(contains_eager(Membership.user))
        .where(Membership.organization_id == organization.id)
        .order_by(order, sa.func.lower(User.name), Membership.id)
    )


def get_member_or_404(organization: Organization, membership_id: int) -> Membership:
    """A membership of this organization, or NotFound (another organization's is not found)."""
    member = db.session.scalar(members_of(organization).where(Membership.id == membership_id))
    if member is None:
        raise NotFound("No such member in this organization.")
    return member


def live_token_counts(organization: Organization, now: datetime | None = None) -> dict[int, int]:
    """Live (not revoked, not expired) tokens per creating user, in one grouped query."""
    now = now or utcnow()
    rows = db.session.execute(
        sa.select(ApiToken.created_by_user_id, sa.func.count())
        .where(
            ApiToken.organization_id == organization.id,
            ApiToken.created_by_user_id.is_not(None),
            ApiToken.revoked_at.is_(None),
            sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
        .group_by(ApiToken.created_by_user_id)
    )
    return {user_id: count for user_id, count in rows}


def tokens_created_by(member: Membership) -> list[ApiToken]:
    """The member's tokens that removal revokes: every one not revoked yet, expired included
    (tokens their tokens made count as theirs)."""
    return list(
        db.session.scalars(
            token_service.tokens_of(member.organization).where(
                ApiToken.created_by_user_id == member.user_id, ApiToken.revoked_at.is_(None)
            )
        )
    )


# A chain of tokens made or rotated through tokens is followed this many links deep.
HOLDER_CHAIN_MAX = 20


def secrets_held_by(member: Membership, *, now: datetime | None = None) -> list[ApiToken]:
    """Live tokens, other than their own, whose current secret (or previous one, still in
    its grace) this member holds: they were shown it (created or rotated it), or it was made
    or rotated through a token whose secret passed through their hands, at any time and
    whatever became of that token since (revoking a link does not un-see what it showed)."""
    now = now or utcnow()
    in_org = token_service.tokens_of(member.organization).order_by(None)
    uid = member.user_id
    # Every token whose secret (current or previous, then or now) passed through them.
    reached = {
        t.id: t
        for t in db.session.scalars(
            in_org.where(
                sa.or_(
                    ApiToken.created_by_user_id == uid,
                    ApiToken.secret_shown_to_user_id == uid,
                    ApiToken.previous_secret_shown_to_user_id == uid,
                )
            )
        )
    }
    frontier = set(reached)
    for _ in range(HOLDER_CHAIN_MAX):
        if not frontier:
            break
        more = list(
            db.session.scalars(
                in_org.where(
                    sa.or_(
                        ApiToken.secret_shown_to_token_id.in_(frontier),
                        ApiToken.previous_secret_shown_to_token_id.in_(frontier),
                    ),
                    ApiToken.id.not_in(reached),
                )
            )
        )
        frontier = {t.id for t in more}
        reached.update((t.id, t) for t in more)

    def holds(token: ApiToken) -> bool:
        if token.secret_shown_to_user_id == uid or token.secret_shown_to_token_id in reached:
            return True
        grace = token.previous_secret_expires_at is not None
        return (
            grace
            and token.previous_secret_expires_at > now  # type: ignore[operator]
            and (
                token.previous_secret_shown_to_user_id == uid
                or token.previous_secret_shown_to_token_id in reached
            )
        )

    held = [
        t
        for t in reached.values()
        if t.revoked_at is None and t.created_by_user_id != uid and holds(t)
    ]
    return sorted(held, key=lambda t: (t.created_at, t.id), reverse=True)


@dataclass(frozen=True)
class TokensAtStake:
    """What removing (or demoting) a member revokes: the tokens they created, always, and
    the other live tokens whose secrets they hold, unless the remover keeps some."""

    created: list[ApiToken]
    held: list[ApiToken]

    @property
    def all(self) -> list[ApiToken]:
        return [*self.created, *self.held]


def tokens_at_stake(
    member: Membership, *, new_role: str | None = None, now: datetime | None = None
) -> TokensAtStake:
    """For a removal (`new_role` None), or a demotion to `new_role`: what that role could
    not have done. A viewer makes no tokens; a member makes none above writer and rotates
    only their own, so holds no one else's secret; owners and admins may do all of it."""
    created, held = tokens_created_by(member), secrets_held_by(member, now=now)
    if new_role is None or new_role == "viewer":
        return TokensAtStake(created, held)
    if new_role == "member":
        ceiling = token_service.TOKEN_ROLE_RANK[token_service.MEMBER_TOKEN_CEILING["member"]]
        above = [t for t in created if token_service.TOKEN_ROLE_RANK[t.role] > ceiling]
        return TokensAtStake(above, held)
    return TokensAtStake([], [])


def _settle_tokens(
    member: Membership,
    actor: Actor,
    stake: TokensAtStake,
    keep: Collection[str],
    *,
    why: str,
    now: datetime,
) -> list[ApiToken]:
    """Revoke the tokens at stake (those the member created always; the held ones unless
    kept), auditing each revocation and each kept token with the reason."""
    revoked = []
    for token in stake.created:
        token_service.revoke_token(token, actor, reason=f"member_{why}", now=now)
        revoked.append(token)
    for token in stake.held:
        if token.id in keep:
            audit.record(
                actor,
                "token.kept",
                environment=token.environment,
                target_type="token",
                target_id=token.id,
                target_label=token.name,
                details={
                    "reason": f"secret_holder_{why}",
                    "holder": member.user.email,
                    "kept_by": actor.label,
                },
            )
            continue
        token_service.revoke_token(token, actor, reason=f"secret_holder_{why}", now=now)
        revoked.append(token)
    return revoked


def _cancel_invites_beyond(
    member: Membership, actor: Actor, new_role: str | None, *, why: str, now: datetime
) -> list[Invite]:
    """Pending invites the member sent that they could no longer send: all of them when
    removed or no longer a manager, else those for a role above their new one."""
    pending = list(
        db.session.scalars(
            pending_invites(member.organization, now).where(Invite.invited_by_id == member.user_id)
        )
    )
    cancelled = []
    for record in pending:
        if new_role in MANAGER_ROLES and ROLE_RANK[record.role] <= ROLE_RANK[new_role]:
            continue
        record.cancelled_at = now
        audit.record(
            actor,
            "invite.cancelled",
            target_type="invite",
            target_id=record.id,
            target_label=record.email,
            details={
                "role": record.role,
                "reason": f"inviter_{why}",
                "invited_by": member.user.email,
            },
        )
        cancelled.append(record)
    return cancelled


def inviter_may_still_invite(invite_: Invite) -> bool:
    """Is the person who sent this invite still a member who could send it now? (An invite
    from someone removed or demoted since is void, even if it escaped cancellation.)"""
    if invite_.invited_by_id is None:
        return True  # sent by the system (the CLI)
    inviter = db.session.scalar(
        sa.select(Membership).where(
            Membership.organization_id == invite_.organization_id,
            Membership.user_id == invite_.invited_by_id,
        )
    )
    return (
        inviter is not None
        and inviter.role in MANAGER_ROLES
        and ROLE_RANK[invite_.role] <= ROLE_RANK[inviter.role]
    )


def pending_invites(organization: Organization, now: datetime | None = None) -> sa.Select:
    """Invites that can still be accepted, soonest to expire first."""
    now = now or utcnow()
    return (
        sa.select(Invite)
        .options(joinedload(Invite.invited_by))
        .where(
            Invite.organization_id == organization.id,
            Invite.accepted_at.is_(None),
            Invite.cancelled_at.is_(None),
            Invite.expires_at > now,
        )
        .order_by(Invite.expires_at, Invite.id)
    )


def owner_count(organization: Organization) -> int:
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.organization_id == organization.id, Membership.role == "owner")
        )
        or 0
    )


def _lock_organization(organization: Organization) -> None:
    """Serialize changes to owners, so two demotions at once cannot leave none."""
    db.session.execute(
        sa.select(Organization.id).where(Organization.id == organization.id).with_for_update()
    )


# ---------------------------------------------------------------- invites


def invite_hash(secret: str) -> str:
    """HMAC-SHA256 of the link's secret, keyed apart from API tokens by a label."""
    key = current_app.config["TOKEN_HMAC_KEY"].encode()
    return hmac.new(key, b"invite:" + secret.encode(), hashlib.sha256).hexdigest()


def normalize_invite_email(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(details={"email": "Email is required."})
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed(details={"email": "Enter a valid email address."}) from None
    email = accounts.normalize_email(checked.normalized)
    if len(email) > 254:
        raise ValidationFailed(details={"email": "Email must be at most 254 characters."})
    return email


def invite(
    organization: Organization,
    actor: Actor,
    *,
    email: object,
    role: object,
    now: datetime | None = None,
) -> tuple[Invite, str]:
    """A single-use invite; returns it with the link's secret, shown once and never stored."""
    now = now or utcnow()
    _require_manager(actor)
    details: dict[str, str] = {}
    try:
        email = normalize_invite_email(email)
    except ValidationFailed as exc:
        details.update(exc.details)
    try:
        role = _require_grantable(actor, role)
    except ValidationFailed as exc:
        details.update(exc.details)
    if not details:
        assert isinstance(email, str)
        if _member_by_email(organization, email) is not None:
            details["email"] = f"{email} is already a member of this organization."
        elif db.session.scalar(pending_invites(organization, now).where(Invite.email == email)):
            details["email"] = (
                f"{email} already has a pending invite. Cancel it first to send a new link."
            )
    if details:
        raise ValidationFailed(details=details)

    secret = secrets.token_urlsafe(32)
    record = Invite(
        organization_id=organization.id,
        email=email,
        role=role,
        token_hash=invite_hash(secret),
        invited_by_id=actor.user_id,
        created_at=now,
        expires_at=now + INVITE_TTL,
    )
    db.session.add(record)
    db.session.flush()
    audit.record(
        actor,
        "member.invited",
        target_type="invite",
        target_id=record.id,
        target_label=email,
        details={"role": role, "expires_at": record.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    db.session.flush()
    return record, secret


def _member_by_email(organization: Organization, email: str) -> Membership | None:
    return db.session.scalar(
        sa.select(Membership)
        .join(Membership.user)
        .where(Membership.organization_id == organization.id, User.email == email)
    )


def get_invite_or_404(organization: Organization, invite_id: int) -> Invite:
    found = db.session.scalar(
        sa.select(Invite).where(Invite.organization_id == organization.id, Invite.id == invite_id)
    )
    if found is None:
        raise NotFound("No such invite in this organization.")
    return found


def cancel_invite(invite_: Invite, actor: Actor, *, now: datetime | None = None) -> Invite:
    """Cancel a pending invite; its link stops working at once."""
    now = now or utcnow()
    _require_manager(actor)
    if invite_.organization_id != actor.organization.id:
        raise NotFound("No such invite in this organization.")
    if invite_.role not in grantable_roles(actor):
        raise Forbidden("Admins cannot cancel an invite to become an owner.")
    if invite_.accepted_at is not None:
        raise Conflict("This invite was already accepted.")
    if invite_.cancelled_at is not None:
        return invite_
    invite_.cancelled_at = now
    audit.record(
        actor,
        "invite.cancelled",
        target_type="invite",
        target_id=invite_.id,
        target_label=invite_.email,
        details={"role": invite_.role},
    )
    db.session.flush()
    return invite_


def invite_for_link(secret: str, *, now: datetime | None = None) -> Invite:
    """The invite behind a link, or NotFound (no such link) / InviteGone (used, cancelled, old)."""
    now = now or utcnow()
    if not secret or len(secret) > 200:
        raise NotFound("This invitation link is not valid. Check that it was copied whole.")
    found = db.session.scalar(
        sa.select(Invite)
        .options(joinedload(Invite.organization))
        .where(Invite.token_hash == invite_hash(secret))
    )
    if found is None:
        raise NotFound("This invitation link is not valid. Check that it was copied whole.")
    if found.accepted_at is not None:
        raise InviteGone("This invitation has already been used. Each link works once.")
    if found.cancelled_at is not None:
        raise InviteGone("This invitation was cancelled. Ask for a new one.")
    if found.expires_at <= now:
        raise InviteGone("This invitation has expired. Invitations last 7 days; ask for a new one.")
    if not inviter_may_still_invite(found):
        raise InviteGone("This invitation was withdrawn: whoever sent it can no longer invite.")
    return found


@dataclass(frozen=True)
class Joined:
    membership: Membership
    already_member: bool


def accept_invite(
    invite_: Invite,
    user: User,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> Joined:
    """The signed-in person whose email matches joins with the invite's role."""
    now = now or utcnow()
    if user.email != invite_.email:
        raise WrongAccount(
            f"This invitation is for {invite_.email}, but you are signed in as {user.email}. "
            "Sign out, then open the link again."
        )
    # Claim the invite with a conditional update, so a link works once even under a race.
    claimed = db.session.execute(
        sa.update(Invite)
        .where(
            Invite.id == invite_.id,
            Invite.accepted_at.is_(None),
            Invite.cancelled_at.is_(None),
            Invite.expires_at > now,
        )
        .values(accepted_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        raise InviteGone("This invitation can no longer be used.")
    db.session.refresh(invite_)
    existing = accounts.membership_in(user, invite_.organization_id)
    if existing is not None:
        return Joined(existing, already_member=True)
    membership = Membership(
        organization_id=invite_.organization_id, user_id=user.id, role=invite_.role
    )
    db.session.add(membership)
    db.session.flush()
    actor = Actor(
        organization=invite_.organization, membership=membership, ip=ip, user_agent=user_agent
    )
    audit.record(
        actor,
        "member.joined",
        target_type="member",
        target_id=membership.id,
        target_label=user.email,
        details={"role": invite_.role, "via": "invite", "invite_id": invite_.id},
    )
    db.session.flush()
    return Joined(membership, already_member=False)


def accept_invite_as_new_user(
    invite_: Invite,
    *,
    name: object,
    password: object,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> tuple[User, Membership]:
    """A new person: make their account with the invited email, then join."""
    details: dict[str, str] = {}
    if not isinstance(name, str) or not name.strip():
        details["name"] = "Your name is required."
    elif len(name.strip()) > 100:
        details["name"] = "Name must be at most 100 characters."
    if not isinstance(password, str):
        details["password"] = "Password is required."  # noqa: S105 - a message, not a password
    else:
        try:
            accounts.check_password_rules(password, user_inputs=[invite_.email, name])
        except ValidationFailed as exc:
            details.update(exc.details)
    if details:
        raise ValidationFailed(details=details)
    if accounts.user_by_email(invite_.email) is not None:
        raise ValidationFailed(
            details={"email": "An account with this email already exists. Sign in to accept."}
        )
    user = accounts.create_user(email=invite_.email, name=name, password=password)  # type: ignore[arg-type]
    joined = accept_invite(invite_, user, ip=ip, user_agent=user_agent, now=now)
    return user, joined.membership


# ---------------------------------------------------------------- roles and removal


def _refuse_losing_last_owner(member: Membership) -> None:
    _lock_organization(member.organization)
    if member.role == "owner" and owner_count(member.organization) <= 1:
        raise Conflict(
            "An organization needs at least one owner. Make someone else an owner first."
        )


def is_demotion(member: Membership, role: object) -> bool:
    return role in ROLE_RANK and ROLE_RANK[role] < member.rank  # type: ignore[index]


def change_role(
    member: Membership,
    actor: Actor,
    *,
    role: object,
    keep: Collection[str] = (),
    now: datetime | None = None,
) -> Membership:
    """Give a member another role, within what the actor may grant; audited. A demotion
    revokes what the new role could not have done (tokens_at_stake; held tokens listed in
    `keep` stay, audited) and cancels invites the member could no longer send."""
    now = now or utcnow()
    _require_act_on(actor, member)
    if member.organization_id != actor.organization.id:
        raise NotFound("No such member in this organization.")
    new_role = _require_grantable(actor, role)
    if new_role == member.role:
        return member
    if member.role == "owner":
        _refuse_losing_last_owner(member)
    old_role = member.role
    revoked: list[ApiToken] = []
    cancelled: list[Invite] = []
    if is_demotion(member, new_role):
        token_service.lock_organization(member.organization)  # as removal does
        stake = tokens_at_stake(member, new_role=new_role, now=now)
        revoked = _settle_tokens(member, actor, stake, keep, why="demoted", now=now)
        cancelled = _cancel_invites_beyond(member, actor, new_role, why="demoted", now=now)
    member.role = new_role
    details: dict = {"role": {"from": old_role, "to": new_role}}
    if revoked:
        details["revoked_tokens"] = [t.id for t in revoked]
    if cancelled:
        details["cancelled_invites"] = [i.id for i in cancelled]
    audit.record(
        actor,
        "member.role_changed",
        target_type="member",
        target_id=member.id,
        target_label=member.user.email,
        details=details,
    )
    db.session.flush()
    return member


def remove_member(
    member: Membership,
    actor: Actor,
    *,
    keep: Collection[str] = (),
    now: datetime | None = None,
) -> list[ApiToken]:
    """Revoke every token the member created and every other live token whose secret they
    hold, except held ones listed in `keep` (each revocation and each kept token audited);
    cancel the invites they sent; then end the membership.

    Returns the tokens revoked. The member's next request no longer sees the organization,
    since the current membership is re-read on every request.
    """
    now = now or utcnow()
    _require_act_on(actor, member)
    if member.organization_id != actor.organization.id:
        raise NotFound("No such member in this organization.")
    # Creates and rotations take the same lock, so none slips in between what is listed
    # here and the membership's end.
    token_service.lock_organization(member.organization)
    _refuse_losing_last_owner(member)
    stake = tokens_at_stake(member, now=now)
    revoked = _settle_tokens(member, actor, stake, keep, why="removed", now=now)
    cancelled = _cancel_invites_beyond(member, actor, None, why="removed", now=now)
    email, role, member_id = member.user.email, member.role, member.id
    db.session.delete(member)
    audit.record(
        actor,
        "member.removed",
        target_type="member",
        target_id=member_id,
        target_label=email,
        details={
            "role": role,
            "revoked_tokens": [t.id for t in revoked],
            "kept_tokens": [t.id for t in stake.held if t.id in keep],
            "cancelled_invites": [i.id for i in cancelled],
        },
    )
    webhooks.member_removed(actor, member_id, email, role, revoked)
    db.session.flush()
    return revoked
