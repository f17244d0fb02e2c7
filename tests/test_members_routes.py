"""Settings → Members over HTTP: the SPEC §1 table by route, htmx fragments, removal."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from models import ApiToken, AuditEvent, Invite, Membership
from tests.test_members import actor_for

ROLES = ("owner", "admin", "member", "viewer")


@pytest.fixture
def team(db, make_org, make_member, make_user):
    """An organization with one person of each role, and one more member to act on."""
    owner_user = make_user(email="owner@example.com", name="Olive Owner")
    org = make_org(owner=owner_user, name="Acme")
    people = {"owner": db.session.scalar(sa.select(Membership))}
    for role in ("admin", "member", "viewer"):
        people[role] = make_member(org, role, user=make_user(email=f"{role}@example.com"))
    people["target"] = make_member(
        org, "member", user=make_user(email="target@example.com", name="Tess Target")
    )
    return org, people


def _act(client, action: str, people) -> object:
    target = people["target"].id
    page = "/settings/policy"
    if action == "invite":
        return client.form(
            "/settings/members", {"email": "new@example.com", "role": "viewer"}, page=page
        )
    if action == "change_role":
        return client.form(f"/settings/members/{target}/role", {"role": "viewer"}, page=page)
    if action == "remove":
        return client.form(f"/settings/members/{target}/remove", page=page)
    if action == "change_policy":
        data = {"max_live_tokens": "7", "max_lifetime_days": "30", "rate_limit": "5/second"}
        return client.form("/settings/policy", data, page=page)
    if action == "see_audit_log":
        return client.get("/connections/audit-log")
    raise AssertionError(action)


ACTIONS = ("invite", "change_role", "remove", "change_policy", "see_audit_log")
MATRIX = [
    (role, action, role in ("owner", "admin") or action == "see_audit_log")
    for role in ROLES
    for action in ACTIONS
]


@pytest.mark.parametrize(("role", "action", "allowed"), MATRIX)
def test_permission_table_by_route(client, db, team, role, action, allowed):
    org, people = team
    client.sign_in(f"{role}@example.com")
    response = _act(client, action, people)
    if allowed:
        assert response.status_code in (200, 302), response.get_data(as_text=True)[:500]
    else:
        assert response.status_code == 403
        db.session.expire_all()
        assert db.session.get(Membership, people["target"].id).role == "member"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 0
        assert db.session.get(type(org), org.id).max_live_tokens == 100
        assert (
            db.session.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.action.in_(
                        [
                            "member.invited",
                            "member.role_changed",
                            "member.removed",
                            "policy.updated",
                        ]
                    )
                )
            )
            == 0
        )


def test_members_page_lists_people_tokens_and_invites(client, db, team, make_token):
    org, people = team
    make_token(org, actor_for(people["target"]), role="writer")
    make_token(org, actor_for(people["target"]), role="writer")
    client.sign_in("owner@example.com")
    client.form(
        "/settings/members",
        {"email": "pending@example.com", "role": "member"},
        page="/settings/members",
    )
    html = client.get("/settings/members").get_data(as_text=True)
    row = re.search(rf'<tr id="member-{people["target"].id}".*?</tr>', html, re.S).group(0)
    assert "Tess Target" in row and "target@example.com" in row
    assert '<span class="num">2</span>' in row
    assert "pending@example.com" in html and "Revoke invite" in html
    assert "<time" in row  # joined, relative with exact title


def test_members_page_runs_the_same_queries_for_5_or_25_members(
    client, db, team, make_member, make_token, app
):
    org, people = team
    client.sign_in("owner@example.com")

    def count_queries() -> int:
        statements = []
        engine = db.engine

        def listen(*args):
            statements.append(args[2])

        sa.event.listen(engine, "before_cursor_execute", listen)
        try:
            assert client.get("/settings/members").status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", listen)
        return len(statements)

    few = count_queries()
    for _ in range(20):
        member = make_member(org, "member")
        make_token(org, actor_for(member), role="writer")
    assert count_queries() == few


def test_invite_shows_a_single_use_link_not_cached(client, db, team):
    client.sign_in("admin@example.com")
    response = client.form(
        "/settings/members",
        {"email": "Grace@example.com", "role": "member"},
        page="/settings/members",
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    link = re.search(
        r'<code id="invite-link">(http://localhost/invites/[\w-]+)</code>', html
    ).group(1)
    invite = db.session.scalar(sa.select(Invite))
    assert link.rsplit("/", 1)[1] not in invite.token_hash
    # The link is shown once: the members page afterwards does not show it.
    assert link not in client.get("/settings/members").get_data(as_text=True)


def test_invite_over_htmx_answers_the_invites_fragment(client, db, team):
    client.sign_in("owner@example.com")
    response = client.form(
        "/settings/members",
        {"email": "h@example.com", "role": "viewer"},
        page="/settings/members",
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert "<html" not in html and 'id="invites"' in html and 'id="invite-link"' in html
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("who", "data", "message"),
    [
        ("owner", {"email": "nope", "role": "member"}, "Enter a valid email address."),
        ("owner", {"email": "member@example.com", "role": "member"}, "already a member"),
        ("admin", {"email": "x@example.com", "role": "owner"}, "above your own"),
    ],
)
def test_invite_bad_input_is_shown_inline_and_changes_nothing(client, db, team, who, data, message):
    client.sign_in(f"{who}@example.com")
    response = client.form("/settings/members", data, page="/settings/members")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html and 'class="error"' in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 0


def test_second_invite_for_a_pending_email_is_refused(client, db, team):
    client.sign_in("owner@example.com")
    data = {"email": "twice@example.com", "role": "member"}
    assert client.form("/settings/members", data, page="/settings/members").status_code == 200
    response = client.form("/settings/members", data, page="/settings/members")
    assert response.status_code == 400
    assert "already has a pending invite" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 1


def test_cancel_invite(client, db, team):
    client.sign_in("owner@example.com")
    client.form(
        "/settings/members", {"email": "c@example.com", "role": "member"}, page="/settings/members"
    )
    invite = db.session.scalar(sa.select(Invite))
    response = client.form(
        f"/settings/members/invites/{invite.id}/cancel", page="/settings/members"
    )
    assert response.status_code == 302
    db.session.refresh(invite)
    assert invite.cancelled_at is not None
    assert f'id="invite-{invite.id}"' not in client.get("/settings/members").get_data(as_text=True)


def test_role_change_over_htmx_swaps_the_row(client, db, team):
    org, people = team
    client.sign_in("admin@example.com")
    target = people["target"]
    response = client.form(
        f"/settings/members/{target.id}/role",
        {"role": "viewer"},
        page="/settings/members",
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html and f'id="member-{target.id}"' in html and "Saved" in html
    assert db.session.get(Membership, target.id).role == "viewer"
    [event] = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "member.role_changed")
    )
    assert event.details == {"role": {"from": "member", "to": "viewer"}}
    assert event.actor_label == "admin@example.com"


@pytest.mark.parametrize(
    ("who", "target", "role", "status", "message"),
    [
        ("admin", "owner", "viewer", 403, None),
        ("admin", "target", "owner", 400, "above your own"),
        ("owner", "owner", "admin", 400, "at least one owner"),
        ("owner", "target", "emperor", 400, "Not a valid choice"),
    ],
)
def test_role_change_refusals(client, db, team, who, target, role, status, message):
    org, people = team
    client.sign_in(f"{who}@example.com")
    member = people[target]
    before = member.role
    response = client.form(
        f"/settings/members/{member.id}/role", {"role": role}, page="/settings/members"
    )
    assert response.status_code == status
    if message:
        assert message in response.get_data(as_text=True)
    assert db.session.get(Membership, member.id).role == before


def test_member_of_another_organization_is_404(client, db, team, make_org, make_member):
    other = make_org(name="Elsewhere")
    stranger = make_member(other, "member")
    client.sign_in("owner@example.com")
    for url in (f"/settings/members/{stranger.id}/role", f"/settings/members/{stranger.id}/remove"):
        response = client.form(url, {"role": "viewer"}, page="/settings/members")
        assert response.status_code == 404
    assert client.get(f"/settings/members/{stranger.id}/remove").status_code == 404
    assert db.session.get(Membership, stranger.id).role == "member"


def test_removal_confirms_with_tokens_then_revokes_them_and_ends_the_session(
    app, client, db, team, make_token
):
    org, people = team
    target = people["target"]
    target_id = target.id
    tokens = [
        make_token(org, actor_for(target), role="writer", name=f"tess-{i}")[0] for i in range(2)
    ]
    # The removed member is signed in elsewhere.
    theirs = app.test_client()
    theirs.sign_in("target@example.com")
    assert theirs.get("/settings/members").status_code == 200

    client.sign_in("admin@example.com")
    confirm = client.get(f"/settings/members/{target_id}/remove").get_data(as_text=True)
    assert "tess-0" in confirm and "tess-1" in confirm and "revoke 2 tokens" in confirm
    response = client.form(f"/settings/members/{target_id}/remove", page="/settings/members")
    assert response.status_code == 302
    assert "2 tokens they created were revoked" in client.get("/settings/members").get_data(
        as_text=True
    )

    for token in tokens:
        assert db.session.get(ApiToken, token.id).revoked_reason == "member_removed"
    assert db.session.get(Membership, target_id) is None
    actions = [e.action for e in db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[-3:] == ["token.revoked", "token.revoked", "member.removed"]
    # Their very next request no longer sees the organization.
    after = theirs.get("/settings/members")
    assert after.status_code == 302  # offered to start an organization of their own
    assert after.headers["Location"] == "/organizations/new"
    offer = theirs.get("/organizations/new").get_data(as_text=True)
    assert "not a member of any organization" in offer and "Acme" not in offer


def test_removed_member_with_another_organization_falls_back_to_it(
    app, client, db, team, make_org, make_user
):
    org, people = team
    target = people["target"]
    own = make_org(owner=target.user, name="Tess Own Org")
    theirs = app.test_client()
    theirs.sign_in("target@example.com")
    theirs.form(f"/organizations/{org.id}/switch", page="/settings/members")
    assert "Acme" in theirs.get("/settings/members").get_data(as_text=True)
    client.sign_in("owner@example.com")
    client.form(f"/settings/members/{target.id}/remove", page="/settings/members")
    html = theirs.get("/settings/members").get_data(as_text=True)
    assert own.name in html and "Tess Target" in html  # their own org's members
    assert "owner@example.com" not in html


def test_admin_cannot_remove_an_owner_and_last_owner_stays(app, client, db, team):
    org, people = team
    client.sign_in("admin@example.com")
    owner = people["owner"]
    page = client.get(f"/settings/members/{owner.id}/remove").get_data(as_text=True)
    assert "Admins cannot remove an owner" in page
    assert (
        client.form(f"/settings/members/{owner.id}/remove", page="/settings/members").status_code
        == 403
    )
    owner_client = app.test_client()
    owner_client.sign_in("owner@example.com")
    response = owner_client.form(f"/settings/members/{owner.id}/remove", page="/settings/members")
    assert response.status_code == 400
    assert "at least one owner" in response.get_data(as_text=True)
    assert db.session.get(Membership, owner.id) is not None


def test_admin_cannot_cancel_an_owner_invite(app, client, db, team):
    org, people = team
    owner = app.test_client()
    owner.sign_in("owner@example.com")
    owner.form(
        "/settings/members", {"email": "co@example.com", "role": "owner"}, page="/settings/members"
    )
    invite = db.session.scalar(sa.select(Invite))
    client.sign_in("admin@example.com")
    html = client.get("/settings/members").get_data(as_text=True)
    assert "co@example.com" in html and "Revoke invite for co@example.com" not in html
    response = client.form(
        f"/settings/members/invites/{invite.id}/cancel", page="/settings/members"
    )
    assert response.status_code == 403
    assert db.session.get(Invite, invite.id).cancelled_at is None


def test_invite_error_over_htmx_keeps_what_was_typed_in_the_fragment(client, db, team):
    client.sign_in("owner@example.com")
    response = client.form(
        "/settings/members",
        {"email": "member@example.com", "role": "admin"},
        page="/settings/members",
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert "<html" not in html and 'id="invites"' in html
    assert "already a member" in html and 'value="member@example.com"' in html
    assert 'id="invite-link"' not in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 0


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_the_team_without_controls(client, team, role):
    client.sign_in(f"{role}@example.com")
    html = client.get("/settings/members").get_data(as_text=True)
    assert "Tess Target" in html and "Olive Owner" in html
    assert "Invite a teammate" not in html and "Remove…" not in html
    assert 'name="role"' not in html
