"""Delegation never widens (SPEC §1, §2; issue 13): each attack a hostile teammate tried,
refused, through the API, the pages, the CLI and the services, and the ceiling's dimensions
as tables.

Every test starts from what the attacker had: a membership, a token, a kept secret.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code
from hot_path_support import owner_actor

from app import create_app
from models import ApiToken, AuditEvent, Membership, utcnow
from services import members, policy
from services import tokens as token_service
from services.actor import Actor
from services.errors import Forbidden, ValidationFailed
from services.members import InviteGone

POLICY_LIMIT = "50/minute"


def _actor(membership: Membership) -> Actor:
    return Actor(organization=membership.organization, membership=membership, ip="127.0.0.1")


def _details(response) -> dict:
    return response.get_json()["error"]["details"]


def _refused(response, field: str) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    assert error_code(response) == "insufficient_scope"
    assert field in _details(response), _details(response)


def _events(db, action: str, target_id: str | None = None) -> list[AuditEvent]:
    query = sa.select(AuditEvent).where(AuditEvent.action == action)
    if target_id is not None:
        query = query.where(AuditEvent.target_id == target_id)
    return list(db.session.scalars(query.order_by(AuditEvent.id)))


@pytest.fixture
def team(db, make_org, make_user, make_member):
    """An organization whose policy allows 50 requests a minute, its owner, an admin and a
    member."""
    owner = make_user(email="owner@example.com", name="Olive Owner")
    org = make_org(owner=owner, name="Acme")
    org.rate_limit = POLICY_LIMIT
    db.session.commit()
    people = {
        "owner": db.session.scalar(sa.select(Membership).where(Membership.user_id == owner.id))
    }
    for role in ("admin", "member"):
        people[role] = make_member(org, role, user=make_user(email=f"{role}@example.com"))
    return org, people


# ---------------------------------------------------------------- rate limits


def test_a_members_writer_token_cannot_raise_its_own_limit_nor_give_children_more(
    client, team, make_token
):
    org, people = team
    token, secret = make_token(org, _actor(people["member"]), name="mine", role="writer")
    raised = client.patch(
        f"{API}/api_tokens/{token.id}",
        json={"rate_limit": "1000000/second"},
        headers=bearer(secret),
    )
    _refused(raised, "rate_limit")
    child = client.post(
        f"{API}/api_tokens",
        json={"name": "child", "role": "writer", "rate_limit": "999999999/second"},
        headers=bearer(secret),
    )
    _refused(child, "rate_limit")
    assert client.get(f"{API}/whoami", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "50"


def test_an_admin_sets_a_tokens_limit_only_within_the_policy(client, team, make_token):
    org, people = team
    _, admin = make_token(org, _actor(people["admin"]), name="admin-token", role="admin")
    above = client.post(
        f"{API}/api_tokens", json={"name": "fast", "rate_limit": "51/minute"}, headers=bearer(admin)
    )
    _refused(above, "rate_limit")
    assert POLICY_LIMIT in _details(above)["rate_limit"]
    within = client.post(
        f"{API}/api_tokens", json={"name": "slow", "rate_limit": "2/minute"}, headers=bearer(admin)
    )
    assert within.status_code == 201, within.get_data(as_text=True)
    assert within.get_json()["rate_limit"] == "2/minute"


def test_a_limited_token_cannot_raise_itself_and_its_children_inherit_its_limit(
    client, db, team, make_token
):
    org, people = team
    token, secret = make_token(org, name="limited", role="admin", rate_limit="20/minute")
    url = f"{API}/api_tokens/{token.id}"
    _refused(
        client.patch(url, json={"rate_limit": "40/minute"}, headers=bearer(secret)), "rate_limit"
    )
    _refused(client.patch(url, json={"rate_limit": None}, headers=bearer(secret)), "rate_limit")
    child = client.post(f"{API}/api_tokens", json={"name": "kid"}, headers=bearer(secret))
    assert child.status_code == 201
    assert child.get_json()["rate_limit"] == "20/minute"  # never the policy's 50/minute
    no_limit = client.post(
        f"{API}/api_tokens", json={"name": "kid2", "rate_limit": None}, headers=bearer(secret)
    )
    _refused(no_limit, "rate_limit")
    lower = client.patch(url, json={"rate_limit": "10/minute"}, headers=bearer(secret))
    assert lower.status_code == 200 and lower.get_json()["rate_limit"] == "10/minute"


def test_a_token_limit_above_a_lowered_policy_gets_the_policy(client, db, team, make_token):
    org, _ = team
    _, secret = make_token(org, name="own", rate_limit="4/minute")
    assert client.get(f"{API}/whoami", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "4"
    policy.update_policy(
        org,
        owner_actor(org),
        max_live_tokens=org.max_live_tokens,
        max_lifetime_days=org.max_lifetime_days,
        allow_never_expires=org.allow_never_expires,
        rate_limit="3/minute",
    )
    db.session.commit()
    assert client.get(f"{API}/whoami", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "3"


@pytest.mark.parametrize("app_config", [{"RATE_LIMIT_MAX": "100/minute"}])
def test_no_policy_above_the_operators_maximum(client, db, team, app_config):
    org, people = team
    with pytest.raises(ValidationFailed) as refused:
        policy.update_policy(
            org,
            _actor(people["owner"]),
            max_live_tokens=10,
            max_lifetime_days=30,
            allow_never_expires=False,
            rate_limit="1000/minute",
        )
    assert "100/minute" in refused.value.details["rate_limit"]
    client.sign_in("owner@example.com")
    page = client.form(
        "/settings/policy",
        {"max_live_tokens": "10", "max_lifetime_days": "30", "rate_limit": "101/minute"},
        page="/settings/policy",
    )
    assert page.status_code == 400
    assert "RATE_LIMIT_MAX" in page.get_data(as_text=True)
    assert 'value="101/minute"' in page.get_data(as_text=True)  # what was typed is kept


def test_every_signup_organization_is_held_to_the_operators_maximum(tmp_path):
    """RATE_LIMIT_MAX defaults to 6000/minute;300/second: the ceiling of SPEC §6."""
    app = create_app({"TESTING": True, "SECRET_KEY": "x"}, instance_path=str(tmp_path))
    assert app.config["RATE_LIMIT_MAX"] == "6000/minute;300/second"
    with app.app_context():
        assert policy.token_rate_limit("1000000/second", "1000000/second") == (
            "6000/minute;300/second"
        )


WITHIN = [
    ("5/minute", "1000/minute;100/second", True),
    ("1/second", "1000/minute;100/second", True),
    ("1000000/second", "5/minute", False),
    ("100/day", "5/minute", False),  # all 100 may come in one minute
    ("5 per 10 seconds", "100/minute;10/second", True),
    ("6000/minute;300/second", "6000/minute;300/second", True),
    ("6001/minute;300/second", "6000/minute;300/second", False),
    ("7000/hour", "6000/minute;300/second", False),  # all 7000 may come in one minute
    ("6000/hour", "6000/minute;300/second", False),  # ...or 6000 in one second
    ("300/hour", "6000/minute;300/second", True),
    ("301/second", "6000/minute;300/second", False),
]


@pytest.mark.parametrize(("limit", "ceiling", "within"), WITHIN)
def test_rate_limit_within(limit, ceiling, within):
    assert policy.rate_limit_within(limit, ceiling) is within


# ---------------------------------------------------------------- allowlists and expiry


@pytest.fixture
def confined(team, make_token):
    """An admin token of the owner, usable from 127.0.0.0/8 only (the test client's)."""
    org, _ = team
    return make_token(org, name="confined", role="admin", allowed_ips=["127.0.0.0/8"])


def test_a_confined_tokens_child_stays_inside_its_allowlist(client, confined):
    _, secret = confined
    made = client.post(f"{API}/api_tokens", json={"name": "kid"}, headers=bearer(secret))
    assert made.status_code == 201
    assert made.get_json()["allowed_ips"] == ["127.0.0.0/8"]  # inherited, not "anywhere"
    for wider in (None, [], ["0.0.0.0/0"], ["127.0.0.0/8", "10.0.0.1"]):
        response = client.post(
            f"{API}/api_tokens", json={"name": "wide", "allowed_ips": wider}, headers=bearer(secret)
        )
        _refused(response, "allowed_ips")
    narrower = client.post(
        f"{API}/api_tokens",
        json={"name": "narrow", "allowed_ips": ["127.0.0.1"]},
        headers=bearer(secret),
    )
    assert narrower.status_code == 201
    assert narrower.get_json()["allowed_ips"] == ["127.0.0.1/32"]


def test_a_confined_token_cannot_free_itself_nor_outlive_itself(client, db, confined):
    token, secret = confined
    url = f"{API}/api_tokens/{token.id}"
    for body in ({"allowed_ips": None}, {"allowed_ips": []}, {"allowed_ips": ["0.0.0.0/0"]}):
        _refused(client.patch(url, json=body, headers=bearer(secret)), "allowed_ips")
    later = (token.expires_at + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _refused(client.patch(url, json={"expires_at": later}, headers=bearer(secret)), "expires_at")
    db.session.refresh(token)
    assert token.allowed_ips == ["127.0.0.0/8"]
    sooner = (token.expires_at - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.patch(url, json={"expires_at": sooner}, headers=bearer(secret)).status_code == 200


def test_a_tokens_child_never_expires_after_it(client, db, team, make_token):
    org, _ = team
    org.allow_never_expires = True
    db.session.commit()
    token, secret = make_token(org, name="short", role="admin", expires_in_days=10)
    default = client.post(f"{API}/api_tokens", json={"name": "kid"}, headers=bearer(secret))
    assert default.status_code == 201
    assert default.get_json()["expires_at"] <= token_service._iso(token.expires_at)
    for body in ({"expires_in_days": 11}, {"expires_at": None}):
        response = client.post(
            f"{API}/api_tokens", json={"name": "long", **body}, headers=bearer(secret)
        )
        _refused(response, "expires_at")


def test_a_token_cannot_rotate_a_token_with_more_reach(client, team, make_token):
    org, _ = team
    _, secret = make_token(org, name="confined", role="writer", allowed_ips=["127.0.0.1"])
    free, _ = make_token(org, name="free", role="writer", expires_in_days=30)
    response = client.post(f"{API}/api_tokens/{free.id}/rotate", headers=bearer(secret))
    _refused(response, "allowed_ips")
    assert "token" not in response.get_json()


# ---------------------------------------------------------------- the previous secret


def test_a_previous_secret_reads_but_cannot_take_the_token_over(client, db, team, make_token):
    org, _ = team
    token, old = make_token(org, name="rolled", role="admin")
    fresh = token_service.rotate_token(token, owner_actor(org), grace_seconds=3600)
    db.session.commit()
    assert client.get(f"{API}/api_tokens", headers=bearer(old)).status_code == 200
    whoami = client.get(f"{API}/whoami", headers=bearer(old)).get_json()
    assert whoami["previous_secret"] is True and "tokens:write" not in whoami["scopes"]
    url = f"{API}/api_tokens/{token.id}"
    attempts = [
        client.post(f"{url}/rotate", json={"grace_period_seconds": 0}, headers=bearer(old)),
        client.patch(url, json={"name": "mine"}, headers=bearer(old)),
        client.post(f"{API}/api_tokens", json={"name": "x"}, headers=bearer(old)),
        client.delete(url, headers=bearer(old)),
        client.delete(f"{API}/api_tokens?name=rolled", headers=bearer(old)),
    ]
    for response in attempts:
        _refused(response, "previous_secret")
    assert client.get(f"{API}/whoami", headers=bearer(fresh)).status_code == 200
    db.session.refresh(token)
    assert (token.name, token.status) == ("rolled", "active")


# ---------------------------------------------------------------- who holds a secret


def _rotate_on_page(client, token: ApiToken, grace: str = "604800") -> str:
    page = client.form(
        f"/connections/api-tokens/{token.id}/rotate",
        {"grace_period_seconds": grace},
        page=f"/connections/api-tokens/{token.id}",
    )
    assert page.status_code == 200, page.get_data(as_text=True)
    match = re.search(r"ks_sbx_[0-9A-Za-z_]+", page.get_data(as_text=True))
    assert match
    return match.group(0)


def test_an_admin_who_kept_a_rotated_secret_loses_it_when_removed(client, db, team, make_token):
    org, people = team
    owners, _ = make_token(org, name="owner-admin", role="admin")
    client.sign_in("admin@example.com")
    kept = _rotate_on_page(client, owners)
    # With the kept secret, the admin mints a token (which counts as the owner's).
    minted = client.post(
        f"{API}/api_tokens", json={"name": "minted", "role": "admin"}, headers=bearer(kept)
    )
    assert minted.status_code == 201
    minted_secret = minted.get_json()["token"]
    assert minted.get_json()["created_by_type"] == "token"

    admin_id = people["admin"].id
    client.form("/logout", page="/connections/api-tokens")
    client.sign_in("owner@example.com")
    # The owner can see who holds the token's secret now, and who the previous one.
    own_page = client.get(f"/connections/api-tokens/{owners.id}").get_data(as_text=True)
    assert re.search(r"Secret shown to</dt><dd>admin@example.com", own_page)
    assert "previous secret: owner@example.com" in own_page
    dialog = client.get(f"/settings/members/{admin_id}/remove").get_data(as_text=True)
    assert "owner-admin" in dialog and "minted" in dialog  # listed as secrets they hold
    removed = client.form(f"/settings/members/{admin_id}/remove", page="/settings/members")
    assert removed.status_code == 302

    for secret in (kept, minted_secret):
        response = client.get(f"{API}/whoami", headers=bearer(secret))
        assert response.status_code == 401 and error_code(response) == "token_revoked"
    revoked = _events(db, "token.revoked", owners.id)
    assert revoked[-1].details == {"reason": "secret_holder_removed"}


def test_a_token_that_rotates_itself_stays_held_by_whoever_held_it(client, db, team, make_token):
    org, people = team
    owners, _ = make_token(org, name="owner-admin", role="admin")
    kept = token_service.rotate_token(owners, _actor(people["admin"]), grace_seconds=0)
    db.session.commit()
    again = client.post(
        f"{API}/api_tokens/{owners.id}/rotate",
        json={"grace_period_seconds": 0},
        headers=bearer(kept),
    )
    assert again.status_code == 200
    assert [t.id for t in members.secrets_held_by(people["admin"])] == [owners.id]
    members.remove_member(people["admin"], _actor(people["owner"]))
    db.session.commit()
    response = client.get(f"{API}/whoami", headers=bearer(again.get_json()["token"]))
    assert error_code(response) == "token_revoked"


def test_revoking_the_token_in_the_middle_does_not_hide_what_it_showed(
    client, db, team, make_token
):
    org, people = team
    admin = _actor(people["admin"])
    theirs, their_secret = make_token(org, admin, name="theirs", role="admin")
    first, _ = make_token(org, name="owner-a", role="writer", expires_in_days=300)
    second, _ = make_token(org, name="owner-b", role="writer", expires_in_days=200)
    # Their own token rotates the owner's A; with A's secret, they rotate B; then both
    # links are revoked, leaving them with B's secret only.
    a_secret = client.post(f"{API}/api_tokens/{first.id}/rotate", headers=bearer(their_secret))
    a_secret = a_secret.get_json()["token"]
    b_secret = client.post(f"{API}/api_tokens/{second.id}/rotate", headers=bearer(a_secret))
    b_secret = b_secret.get_json()["token"]
    token_service.revoke_token(first, _actor(people["owner"]))
    token_service.revoke_token(theirs, admin)
    db.session.commit()
    assert [t.name for t in members.secrets_held_by(people["admin"])] == ["owner-b"]
    members.remove_member(people["admin"], _actor(people["owner"]))
    db.session.commit()
    assert error_code(client.get(f"{API}/whoami", headers=bearer(b_secret))) == "token_revoked"


def test_a_rotation_by_someone_whose_membership_just_changed_is_refused(db, team, make_token):
    """Removal and demotion take the organization's lock before listing what they revoke;
    a create or rotation takes it too, then re-reads the actor's role."""
    org, people = team
    token, _ = make_token(org, name="owners", role="writer")
    stale = _actor(people["admin"])
    db.session.execute(
        sa.update(Membership).where(Membership.id == people["admin"].id).values(role="viewer")
    )
    with pytest.raises(Forbidden):
        token_service.rotate_token(token, stale, grace_seconds=0)
    with pytest.raises(Forbidden):
        token_service.create_token(org, stale, name="late", environment="sandbox", role="viewer")


def test_the_remover_may_keep_a_held_token_and_that_is_audited(client, db, team, make_token):
    org, people = team
    owners, _ = make_token(org, name="owner-admin", role="admin")
    fresh = token_service.rotate_token(owners, _actor(people["admin"]), grace_seconds=0)
    db.session.commit()
    client.sign_in("owner@example.com")
    admin_id = people["admin"].id
    response = client.form(
        f"/settings/members/{admin_id}/remove",
        {"held": owners.id},  # offered, and its "revoke" box unticked
        page="/settings/members",
    )
    assert response.status_code == 302
    assert client.get(f"{API}/whoami", headers=bearer(fresh)).status_code == 200
    (kept,) = _events(db, "token.kept", owners.id)
    assert kept.details["holder"] == "admin@example.com"
    assert kept.details["reason"] == "secret_holder_removed"
    removed = _events(db, "member.removed")[-1]
    assert removed.details["kept_tokens"] == [owners.id]


def test_demoting_an_admin_revokes_what_a_member_could_not_have_done(db, team, make_token):
    org, people = team
    admin = people["admin"]
    own_admin, _ = make_token(org, _actor(admin), name="their-admin", role="admin")
    own_writer, _ = make_token(org, _actor(admin), name="their-writer", role="writer")
    owners, _ = make_token(org, name="owner-writer", role="writer")
    token_service.rotate_token(owners, _actor(admin), grace_seconds=3600)
    db.session.commit()
    stake = members.tokens_at_stake(admin, new_role="member")
    assert [t.name for t in stake.created] == ["their-admin"]
    assert [t.name for t in stake.held] == ["owner-writer"]

    members.change_role(admin, _actor(people["owner"]), role="member")
    db.session.commit()
    statuses = {t.name: t.status for t in (own_admin, own_writer, owners)}
    assert statuses == {
        "their-admin": "revoked",
        "their-writer": "active",
        "owner-writer": "revoked",
    }
    changed = _events(db, "member.role_changed")[-1]
    assert set(changed.details["revoked_tokens"]) == {own_admin.id, owners.id}


def test_a_demotion_that_revokes_tokens_asks_first_on_the_page(client, db, team, make_token):
    org, people = team
    token, _ = make_token(org, _actor(people["admin"]), name="their-admin", role="admin")
    client.sign_in("owner@example.com")
    admin_id = people["admin"].id
    asked = client.form(
        f"/settings/members/{admin_id}/role", {"role": "member"}, page="/settings/members"
    )
    assert asked.status_code == 302 and "/role?role=member" in asked.headers["Location"]
    db.session.refresh(people["admin"])
    assert people["admin"].role == "admin"  # nothing changed yet
    confirm = client.get(asked.headers["Location"]).get_data(as_text=True)
    assert "their-admin" in confirm
    done = client.form(
        f"/settings/members/{admin_id}/role",
        {"role": "member", "confirmed": "1"},
        page="/settings/members",
    )
    assert done.status_code == 302
    db.session.refresh(token)
    assert token.status == "revoked"


def test_the_cli_removes_with_the_same_lists_and_keeps_on_request(app, db, team, make_token):
    org, people = team
    owners, _ = make_token(org, name="owner-admin", role="admin")
    token_service.rotate_token(owners, _actor(people["admin"]), grace_seconds=0)
    theirs, _ = make_token(org, _actor(people["admin"]), name="theirs", role="writer")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "keysmith",
            "members",
            "remove",
            "--org",
            str(org.id),
            "admin@example.com",
            "--keep",
            owners.id,
            "--yes",
        ]
    )
    assert result.exit_code == 0, result.output
    assert f"revoke\tcreated\t{theirs.id}" in result.output
    assert f"keep\tholds-secret\t{owners.id}" in result.output
    db.session.expire_all()
    assert (
        db.session.get(ApiToken, theirs.id).status,
        db.session.get(ApiToken, owners.id).status,
    ) == ("revoked", "active")
    refused = runner.invoke(
        args=[
            "keysmith",
            "members",
            "remove",
            "--org",
            str(org.id),
            "member@example.com",
            "--keep",
            theirs.id,
            "--yes",
        ]
    )
    assert refused.exit_code != 0 and "only tokens whose secrets they hold" in refused.output


# ---------------------------------------------------------------- invites


def test_invites_of_a_removed_admin_are_cancelled_and_their_links_dead(client, db, team):
    org, people = team
    invite, link = members.invite(
        org, _actor(people["admin"]), email="alt@example.com", role="admin"
    )
    db.session.commit()
    members.remove_member(people["admin"], _actor(people["owner"]))
    db.session.commit()
    db.session.refresh(invite)
    assert invite.cancelled_at is not None
    (cancelled,) = _events(db, "invite.cancelled")
    assert cancelled.details["reason"] == "inviter_removed"
    with pytest.raises(InviteGone):
        members.invite_for_link(link)
    assert client.get(f"/invites/{link}").status_code == 410


def test_a_demoted_admins_invites_above_their_new_role_are_void(db, team, make_member, make_user):
    org, people = team
    owner = people["owner"]
    second_owner = make_member(org, "owner", user=make_user(email="co@example.com"))
    to_admin, admin_link = members.invite(
        org, _actor(second_owner), email="a@example.com", role="admin"
    )
    to_owner, owner_link = members.invite(
        org, _actor(second_owner), email="o@example.com", role="owner"
    )
    db.session.commit()
    members.change_role(second_owner, _actor(owner), role="admin")
    db.session.commit()
    db.session.refresh(to_admin), db.session.refresh(to_owner)
    assert to_admin.cancelled_at is None and to_owner.cancelled_at is not None
    assert members.invite_for_link(admin_link).id == to_admin.id
    # One that escaped cancellation (sent before this check existed) is void all the same.
    to_owner.cancelled_at = None
    db.session.commit()
    with pytest.raises(InviteGone):
        members.invite_for_link(owner_link)


# ---------------------------------------------------------------- created_by


@pytest.mark.parametrize(
    "name",
    [
        "owner@example.com",
        " owner@example.com ",
        "Owner@Example.COM",
        "owner＠example.com",
        "owner@example\ua4f8com",
        "owner@example。com",
        "owner@localhost",
    ],
)
def test_a_token_named_like_an_email_is_refused(client, team, make_token, name):
    org, people = team
    _, secret = make_token(org, _actor(people["member"]), name="mine", role="writer")
    response = client.post(f"{API}/api_tokens", json={"name": name}, headers=bearer(secret))
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert "email" in _details(response)["name"]
    with pytest.raises(ValidationFailed):
        token_service.create_token(
            org, _actor(people["member"]), name=name, environment="sandbox", role="writer"
        )


def test_a_token_made_by_a_token_says_so_in_the_api_and_on_the_pages(client, team, make_token):
    org, people = team
    _, secret = make_token(org, _actor(people["member"]), name="ci-bot", role="writer")
    made = client.post(f"{API}/api_tokens", json={"name": "deploy"}, headers=bearer(secret))
    body = made.get_json()
    assert (body["created_by"], body["created_by_type"]) == ("ci-bot", "token")
    by_person = client.get(f"{API}/whoami", headers=bearer(secret)).get_json()
    assert (by_person["created_by"], by_person["created_by_type"]) == ("member@example.com", "user")
    client.sign_in("owner@example.com")
    listing = client.get("/connections/api-tokens").get_data(as_text=True)
    assert "token: ci-bot" in listing
    own_page = client.get(f"/connections/api-tokens/{body['id']}").get_data(as_text=True)
    assert "token: ci-bot" in own_page


# ---------------------------------------------------------------- the tables


CEILING_ACTORS = [
    "owner",
    "admin",
    "member",
    "owner-admin-token",
    "owner-writer-token",
    "member-writer-token",
]
# Who may choose a token's own rate limit (SPEC §2: only owners and admins).
MAY_SET_LIMIT = {
    "owner": True,
    "admin": True,
    "member": False,
    "owner-admin-token": True,
    "owner-writer-token": False,
    "member-writer-token": False,
}


def _ceiling_actor(kind: str, org, people, make_token) -> Actor:
    if "-token" not in kind:
        return _actor(people[kind])
    who, role, _ = kind.split("-", 2)
    token, _ = make_token(org, _actor(people[who]), name=kind, role=role)
    return Actor(organization=org, membership=people[who], token=token)


@pytest.mark.parametrize("kind", CEILING_ACTORS)
def test_who_may_give_a_token_its_own_rate_limit(db, team, make_token, kind):
    org, people = team
    actor = _ceiling_actor(kind, org, people, make_token)
    create = lambda: token_service.create_token(  # noqa: E731
        org, actor, name="limited", environment="sandbox", role="viewer", rate_limit="1/minute"
    )
    if MAY_SET_LIMIT[kind]:
        token, _ = create()
        assert token.rate_limit == "1/minute"
    else:
        with pytest.raises(Forbidden) as refused:
            create()
        assert "rate_limit" in refused.value.details


# Each dimension a token's child could exceed it in, with what the child asks for.
TOKEN_DIMENSIONS = [
    ("role", {"role": "admin"}),
    (
        "scopes",
        {"role": "writer", "scopes": ["audit:read", "tokens:read", "tokens:write", "members:read"]},
    ),
    ("environment", {"environment": "production"}),
    ("expires_at", {"expires_at": "far"}),
    ("allowed_ips", {"allowed_ips": ["10.0.0.0/8"]}),
    ("rate_limit", {"rate_limit": "3/minute"}),
]


@pytest.mark.parametrize(("dimension", "asked"), TOKEN_DIMENSIONS)
def test_a_tokens_child_never_exceeds_it_in_any_dimension(db, team, make_token, dimension, asked):
    org, people = team
    parent, _ = make_token(
        org,
        name="parent",
        role="writer",
        scopes=["tokens:read", "tokens:write"],
        expires_in_days=30,
        allowed_ips=["127.0.0.1"],
        rate_limit="2/minute",
    )
    actor = Actor(organization=org, membership=people["owner"], token=parent)
    asked = dict(asked)
    if asked.get("expires_at") == "far":
        asked["expires_at"] = parent.expires_at + timedelta(days=1)
    kwargs = {
        "name": "child",
        "environment": "sandbox",
        "role": "writer",
        "scopes": ["tokens:read"],
        **asked,
    }
    with pytest.raises(Forbidden) as refused:
        token_service.create_token(org, actor, **kwargs)
    assert dimension in refused.value.details, refused.value.details
    # Within every dimension, the same parent may make it.
    child, _ = token_service.create_token(
        org, actor, name="child", environment="sandbox", role="writer", scopes=["tokens:read"]
    )
    assert (child.allowed_ips, child.rate_limit) == (["127.0.0.1/32"], "2/minute")
    assert child.expires_at <= parent.expires_at


def test_nothing_a_person_may_do_today_is_lost(client, db, team, make_token):
    """A member still manages their own tokens; an admin still rotates anyone's and sets
    any allowlist or expiry the policy allows."""
    org, people = team
    own, _ = make_token(org, _actor(people["member"]), name="own", role="writer")
    member = _actor(people["member"])
    token_service.rotate_token(own, member, grace_seconds=3600)
    token_service.update_token(own, member, allowed_ips=["10.0.0.0/8"])
    token_service.update_token(own, member, allowed_ips=None)
    token_service.update_token(own, member, expires_at=utcnow() + timedelta(days=300))
    token_service.suspend_token(own, member)
    token_service.resume_token(own, member)
    owners, _ = make_token(org, name="owners", role="admin")
    token_service.rotate_token(owners, _actor(people["admin"]), grace_seconds=86400)
    token_service.update_token(owners, _actor(people["admin"]), rate_limit="1/minute")
    token_service.revoke_token(own, member)
    db.session.commit()
    assert (own.status, owners.rate_limit) == ("revoked", "1/minute")


@pytest.mark.parametrize(
    ("own", "organization", "effective"),
    [
        ("50/minute", "1000/minute;100/second", "50/minute"),
        ("50/minute", "1000/minute;10/second", "50/minute;10/second"),
        ("5000/minute", "1000/minute;100/second", "1000/minute;100/second"),
        (None, "1000/minute;100/second", "1000/minute;100/second"),
    ],
)
def test_a_lowered_policy_never_raises_a_tokens_own_narrower_limit(
    app, own, organization, effective
):
    """Attack review: a token limited to 50 a minute, under a policy whose burst was lowered
    to 10 a second, got the policy's 1000 a minute. Both bind now."""
    with app.app_context():
        assert policy.token_rate_limit(own, organization) == effective
        assert policy.rate_limit_within(effective, own or organization)
        assert policy.rate_limit_within(effective, organization)
