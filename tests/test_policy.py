"""Settings → Key policy (SPEC §6): who may change it, validation, audit, and its effect."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from models import AuditEvent, Membership, Organization
from services import policy
from services.errors import Forbidden, TokenLimitReached, ValidationFailed
from tests.test_members import actor_for

GOOD = {
    "max_live_tokens": "2",
    "max_lifetime_days": "30",
    "allow_never_expires": "y",
    "rate_limit": "60/minute;5/second",
}


@pytest.fixture
def acme(db, make_org, make_user, make_member):
    org = make_org(owner=make_user(email="olive@example.com"), name="Acme")
    for role in ("admin", "member", "viewer"):
        make_member(org, role, user=make_user(email=f"{role}@example.com"))
    return org


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owner_or_admin_saves_the_policy_and_it_is_audited(client, db, acme, role):
    client.sign_in("olive@example.com" if role == "owner" else "admin@example.com")
    response = client.form("/settings/policy", GOOD, page="/settings/policy")
    assert response.status_code == 302
    assert "Key policy saved" in client.get("/settings/policy").get_data(as_text=True)
    org = db.session.get(Organization, acme.id)
    assert (org.max_live_tokens, org.max_lifetime_days, org.allow_never_expires) == (2, 30, True)
    assert org.rate_limit == "60/minute;5/second"
    [event] = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "policy.updated"))
    assert event.details["max_live_tokens"] == {"from": 100, "to": 2}
    assert event.details["allow_never_expires"] == {"from": False, "to": True}
    assert "max_lifetime_days" in event.details and "rate_limit" in event.details


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_it_read_only_and_a_forged_post_is_403(client, db, acme, role):
    client.sign_in(f"{role}@example.com")
    html = client.get("/settings/policy").get_data(as_text=True)
    assert "Only owners and admins can change the key policy" in html
    assert "Save policy" not in html and "1000/minute;100/second" in html
    response = client.form("/settings/policy", GOOD, page="/settings/policy")
    assert response.status_code == 403
    assert db.session.get(Organization, acme.id).max_live_tokens == 100


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_live_tokens", "0", "from 1 to 100,000"),
        ("max_live_tokens", "100001", "from 1 to 100,000"),
        ("max_live_tokens", "ten", "from 1 to 100,000"),
        ("max_lifetime_days", "1.5", "from 1 to 3,650"),
        ("rate_limit", "0/minute", "at least 1 request"),
        ("rate_limit", "100/second;0/day", "at least 1 request"),
        ("max_lifetime_days", "3651", "from 1 to 3,650"),
        ("rate_limit", "lots/minute", "Use the form"),
        ("rate_limit", "", "required"),
        ("rate_limit", "1000/minute;0/second", "at least 1 request"),  # would shut all out
    ],
)
def test_bad_policy_input_is_shown_inline_and_changes_nothing(
    client, db, acme, field, value, message
):
    client.sign_in("olive@example.com")
    response = client.form("/settings/policy", {**GOOD, field: value}, page="/settings/policy")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html and 'class="error"' in html
    assert db.session.get(Organization, acme.id).max_live_tokens == 100
    assert (
        db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "policy.updated"))
        is None
    )


def test_every_wrong_policy_field_is_named_at_once_each_error_once(client, db, acme):
    client.sign_in("olive@example.com")
    bad = {
        "max_live_tokens": "0",
        "max_lifetime_days": "1.5",
        "rate_limit": "lots/ever",
    }
    html = client.form("/settings/policy", bad, page="/settings/policy").get_data(as_text=True)
    for field in bad:
        assert re.search(rf'class="field has-error">\s*<label for="{field}"', html), field
    assert html.count('class="error"') == len(bad)
    assert 'value="lots/ever"' in html


def test_unchanged_policy_records_nothing(client, db, acme):
    client.sign_in("olive@example.com")
    same = {
        "max_live_tokens": "100",
        "max_lifetime_days": "365",
        "rate_limit": "1000/minute;100/second",
    }
    client.form("/settings/policy", same, page="/settings/policy")
    assert (
        db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "policy.updated"))
        is None
    )


def test_policy_applies_to_new_tokens_at_once(db, acme, make_token):
    owner = db.session.scalar(sa.select(Membership).where(Membership.role == "owner"))
    actor = actor_for(owner)
    make_token(acme)
    policy.update_policy(
        acme,
        actor,
        max_live_tokens=1,
        max_lifetime_days=10,
        allow_never_expires=True,
        rate_limit="5/second",
    )
    db.session.commit()
    with pytest.raises(TokenLimitReached):
        make_token(acme, expires_in_days=5)
    db.session.rollback()
    policy.update_policy(
        acme,
        actor,
        max_live_tokens=5,
        max_lifetime_days=10,
        allow_never_expires=True,
        rate_limit="5/second",
    )
    db.session.commit()
    with pytest.raises(ValidationFailed):
        make_token(acme, expires_in_days=30)
    db.session.rollback()
    token, _ = make_token(acme, expires_in_days=None)  # never expires is now allowed
    assert token.expires_at is None


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_service_refuses_members_and_viewers(db, acme, role):
    membership = db.session.scalar(sa.select(Membership).where(Membership.role == role))
    with pytest.raises(Forbidden):
        policy.update_policy(
            acme,
            actor_for(membership),
            max_live_tokens=1,
            max_lifetime_days=1,
            allow_never_expires=False,
            rate_limit="1/second",
        )


def test_service_validates_every_field_at_once(db, acme):
    owner = db.session.scalar(sa.select(Membership).where(Membership.role == "owner"))
    with pytest.raises(ValidationFailed) as exc:
        policy.update_policy(
            acme,
            actor_for(owner),
            max_live_tokens=True,
            max_lifetime_days=0,
            allow_never_expires="yes",
            rate_limit="fast",
        )
    assert set(exc.value.details) == {
        "max_live_tokens",
        "max_lifetime_days",
        "allow_never_expires",
        "rate_limit",
    }


def test_policy_page_acts_on_the_current_organization_only(client, db, acme, make_org):
    owner = db.session.scalar(sa.select(Membership).where(Membership.role == "owner"))
    second = make_org(owner=owner.user, name="Second")
    client.sign_in("olive@example.com")
    client.form(f"/organizations/{second.id}/switch", page="/settings/policy")
    assert "Second" in client.get("/settings/policy").get_data(as_text=True)
    client.form("/settings/policy", GOOD, page="/settings/policy")
    assert db.session.get(Organization, second.id).max_live_tokens == 2
    assert db.session.get(Organization, acme.id).max_live_tokens == 100
