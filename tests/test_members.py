"""Members (SPEC §1): the permission table at service level, invites, roles and removal."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import ApiToken, AuditEvent, Invite, Membership, utcnow
from services import audit, members, policy
from services.actor import Actor
from services.errors import Conflict, Forbidden, NotFound, ValidationFailed

ROLES = ("owner", "admin", "member", "viewer")
MANAGERS = ("owner", "admin")


def actor_for(membership: Membership) -> Actor:
    return Actor(
        organization=membership.organization,
        membership=membership,
        ip="203.0.113.9",
        user_agent="pytest",
    )


def _events(db, action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


# ---------------------------------------------------------------- the SPEC §1 table


def _do(action: str, actor: Actor, target: Membership):
    org = actor.organization
    if action == "invite":
        return members.invite(org, actor, email="new@example.com", role="viewer")
    if action == "change_role":
        return members.change_role(target, actor, role="viewer")
    if action == "remove":
        return members.remove_member(target, actor)
    if action == "change_policy":
        return policy.update_policy(
            org,
            actor,
            max_live_tokens=50,
            max_lifetime_days=90,
            allow_never_expires=False,
            rate_limit="10/second",
        )
    raise AssertionError(action)


MATRIX = [
    (role, action, role in MANAGERS or action == "see_audit_log")
    for role in ROLES
    for action in ("invite", "change_role", "remove", "change_policy", "see_audit_log")
]


@pytest.mark.parametrize(("role", "action", "allowed"), MATRIX)
def test_permission_table_at_service_level(db, make_org, make_member, role, action, allowed):
    org = make_org()
    me = make_member(org, role) if role != "owner" else db.session.scalar(sa.select(Membership))
    target = make_member(org, "member")
    actor = actor_for(me)
    if action == "see_audit_log":
        # Reading the log has no rule to break: every role sees its organization's events.
        _do("invite", actor_for(db.session.scalar(sa.select(Membership))), target)
        events = db.session.scalars(audit.events_of(actor.organization)).all()
        assert [e.action for e in events] == ["member.invited"]
        return
    if allowed:
        _do(action, actor, target)
        db.session.commit()
    else:
        with pytest.raises(Forbidden):
            _do(action, actor, target)
        db.session.rollback()
        assert db.session.get(Membership, target.id).role == "member"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 0


@pytest.mark.parametrize("action", ["change_role", "remove"])
def test_admin_cannot_touch_an_owner(db, make_org, make_member, action):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    admin = make_member(org, "admin")
    with pytest.raises(Forbidden):
        _do(action, actor_for(admin), owner)
    db.session.rollback()
    assert db.session.get(Membership, owner.id).role == "owner"


def test_admin_cannot_make_anyone_an_owner_nor_invite_one(db, make_org, make_member):
    org = make_org()
    admin = make_member(org, "admin")
    target = make_member(org, "member")
    with pytest.raises(ValidationFailed) as exc:
        members.change_role(target, actor_for(admin), role="owner")
    assert "above your own" in exc.value.details["role"]
    with pytest.raises(ValidationFailed):
        members.invite(org, actor_for(admin), email="x@example.com", role="owner")
    assert members.grantable_roles(actor_for(admin)) == ("admin", "member", "viewer")
    db.session.rollback()
    assert db.session.get(Membership, target.id).role == "member"


def test_owner_can_make_another_owner_then_step_down(db, make_org, make_member):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    other = make_member(org, "admin")
    members.change_role(other, actor_for(owner), role="owner")
    members.change_role(owner, actor_for(owner), role="admin")
    db.session.commit()
    assert (owner.role, other.role) == ("admin", "owner")
    [first, second] = sorted(_events(db, "member.role_changed"), key=lambda e: e.id)
    assert first.details == {"role": {"from": "admin", "to": "owner"}}
    assert second.target_label == owner.user.email


def test_last_owner_can_never_be_demoted_or_removed(db, make_org):
    make_org()
    owner = db.session.scalar(sa.select(Membership))
    with pytest.raises(Conflict, match="at least one owner"):
        members.change_role(owner, actor_for(owner), role="admin")
    db.session.rollback()
    with pytest.raises(Conflict, match="at least one owner"):
        members.remove_member(owner, actor_for(owner))
    db.session.rollback()
    assert db.session.get(Membership, owner.id).role == "owner"
    assert _events(db, "member.role_changed") == []


def test_member_of_another_organization_is_not_found(db, make_org, make_member):
    mine, theirs = make_org(name="Mine"), make_org(name="Theirs")
    stranger = make_member(theirs, "member")
    with pytest.raises(NotFound):
        members.get_member_or_404(mine, stranger.id)
    owner = db.session.scalar(sa.select(Membership).where(Membership.organization_id == mine.id))
    with pytest.raises(NotFound):
        members.change_role(stranger, actor_for(owner), role="viewer")


# ---------------------------------------------------------------- invites


def test_invite_stores_only_a_hash_and_is_audited(db, make_org):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    invite, secret = members.invite(
        org, actor_for(owner), email=" Grace@Example.COM ", role="admin"
    )
    db.session.commit()
    assert invite.email == "grace@example.com"
    assert secret not in invite.token_hash and len(secret) >= 40
    assert invite.token_hash == members.invite_hash(secret)
    assert timedelta(days=6, hours=23) < invite.expires_at - utcnow() <= timedelta(days=7)
    [event] = _events(db, "member.invited")
    assert (event.target_label, event.details["role"]) == ("grace@example.com", "admin")
    assert secret not in str(event.details)


@pytest.mark.parametrize(
    ("email", "role", "field", "message"),
    [
        ("not-an-email", "member", "email", "valid email"),
        ("", "member", "email", "required"),
        ("x@example.com", "emperor", "role", "Role must be one of"),
    ],
)
def test_invite_bad_input_names_the_field(db, make_org, email, role, field, message):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    with pytest.raises(ValidationFailed) as exc:
        members.invite(org, actor_for(owner), email=email, role=role)
    assert message in exc.value.details[field]


def test_inviting_an_existing_member_or_a_pending_email_is_refused(
    db, make_org, make_member, make_user
):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    make_member(org, "viewer", user=make_user(email="taken@example.com"))
    with pytest.raises(ValidationFailed) as exc:
        members.invite(org, actor_for(owner), email="TAKEN@example.com", role="member")
    assert "already a member" in exc.value.details["email"]
    members.invite(org, actor_for(owner), email="new@example.com", role="member")
    db.session.commit()
    with pytest.raises(ValidationFailed) as exc:
        members.invite(org, actor_for(owner), email="new@example.com", role="admin")
    assert "pending invite" in exc.value.details["email"]
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 1


def test_cancelled_or_expired_invite_frees_the_email(db, make_org):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    first, secret = members.invite(org, actor_for(owner), email="a@example.com", role="member")
    members.cancel_invite(first, actor_for(owner))
    db.session.commit()
    with pytest.raises(members.InviteGone):
        members.invite_for_link(secret)
    members.invite(org, actor_for(owner), email="a@example.com", role="member")
    db.session.commit()
    [cancelled] = _events(db, "invite.cancelled")
    assert cancelled.target_label == "a@example.com"


def test_invite_link_lookup_errors(db, make_org):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    invite, secret = members.invite(org, actor_for(owner), email="b@example.com", role="member")
    db.session.commit()
    with pytest.raises(NotFound):
        members.invite_for_link("nonsense")
    with pytest.raises(members.InviteGone, match="expired"):
        members.invite_for_link(secret, now=utcnow() + timedelta(days=7, seconds=1))
    assert members.invite_for_link(secret).id == invite.id


# ---------------------------------------------------------------- removal


def test_removal_revokes_each_token_the_member_created_and_audits(
    db, make_org, make_member, make_token
):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    leaving = make_member(org, "member")
    theirs = [
        make_token(org, actor_for(leaving), role="writer", environment=env)[0]
        for env in ("sandbox", "production")
    ]
    mine, _ = make_token(org, actor_for(owner))
    revoked = members.remove_member(leaving, actor_for(owner))
    db.session.commit()
    assert {t.id for t in revoked} == {t.id for t in theirs}
    for token in theirs:
        db.session.refresh(token)
        assert token.status == "revoked" and token.revoked_reason == "member_removed"
    assert db.session.get(ApiToken, mine.id).revoked_at is None
    assert db.session.get(Membership, leaving.id) is None
    revocations = _events(db, "token.revoked")
    assert {e.target_id for e in revocations} == {t.id for t in theirs}
    assert all(e.details == {"reason": "member_removed"} for e in revocations)
    [removed] = _events(db, "member.removed")
    assert removed.details["revoked_tokens"] == [t.id for t in revoked]


def test_live_token_counts_is_one_grouped_query(db, make_org, make_member, make_token):
    org = make_org()
    owner = db.session.scalar(sa.select(Membership))
    other = make_member(org, "member")
    make_token(org, actor_for(owner))
    make_token(org, actor_for(owner))
    make_token(org, actor_for(other), role="writer")
    gone, _ = make_token(org, actor_for(other), role="writer")
    from services import tokens

    tokens.revoke_token(gone, actor_for(owner))
    db.session.commit()
    assert members.live_token_counts(org) == {owner.user_id: 2, other.user_id: 1}
