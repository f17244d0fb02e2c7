"""Accepting an invite at /invites/<token> (SPEC §1, §3): every kind of visitor, every dead link."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import AuditEvent, Invite, Membership, User, utcnow
from services import members
from tests.conftest import PASSWORD
from tests.test_members import actor_for


@pytest.fixture
def invited(db, make_org, make_user):
    """Acme, owned by Olive, with a pending invite for grace@example.com as admin."""
    org = make_org(owner=make_user(email="olive@example.com", name="Olive"), name="Acme")
    owner = db.session.scalar(sa.select(Membership))
    invite, secret = members.invite(org, actor_for(owner), email="grace@example.com", role="admin")
    db.session.commit()
    return org, invite, f"/invites/{secret}"


def test_new_person_gives_name_and_password_and_is_signed_in_with_the_org(client, db, invited):
    org, invite, url = invited
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Join Acme" in html and "grace@example.com" in html and "Olive" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert 'autocomplete="new-password"' in html and 'autocomplete="name"' in html
    response = client.form(url, {"name": "Grace", "password": PASSWORD}, page=url)
    assert response.status_code == 302
    user = db.session.scalar(sa.select(User).where(User.email == "grace@example.com"))
    membership = db.session.scalar(sa.select(Membership).where(Membership.user_id == user.id))
    assert (membership.organization_id, membership.role) == (org.id, "admin")
    members_page = client.get("/settings/members").get_data(as_text=True)
    assert "Acme" in members_page and "Invite a teammate" in members_page  # admin now
    [joined] = db.session.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.action == "member.joined", AuditEvent.actor_label == "grace@example.com"
        )
    )
    assert joined.details["via"] == "invite" and joined.details["role"] == "admin"
    # The link works once.
    client.form("/logout", page="/settings/members")
    again = client.get(url)
    assert again.status_code == 410
    assert "already been used" in again.get_data(as_text=True)


def test_new_person_short_password_is_refused_inline(client, db, invited):
    _, _, url = invited
    response = client.form(url, {"name": "Grace", "password": "short"}, page=url)
    assert response.status_code == 400
    assert "at least 12 characters" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(User).where(User.email == "grace@example.com")) is None
    assert db.session.scalar(sa.select(Invite)).accepted_at is None


def test_signed_in_person_with_that_email_accepts_with_a_button(
    client, db, invited, make_org, make_user
):
    org, invite, url = invited
    grace = make_user(email="grace@example.com", name="Grace")
    make_org(owner=grace, name="Grace Own")
    client.sign_in("grace@example.com")
    html = client.get(url).get_data(as_text=True)
    assert "Accept invite" in html
    response = client.form(url, page=url)
    assert response.status_code == 302
    # The invited organization is now the current one.
    assert "Acme" in client.get("/settings/policy").get_data(as_text=True).split("<main")[0]
    assert (
        db.session.scalar(
            sa.select(Membership).where(
                Membership.user_id == grace.id, Membership.organization_id == org.id
            )
        ).role
        == "admin"
    )


def test_signed_in_person_with_another_email_is_refused(client, db, invited, make_org, make_user):
    _, _, url = invited
    make_org(owner=make_user(email="mallory@example.com"), name="Other")
    client.sign_in("mallory@example.com")
    page = client.get(url)
    assert page.status_code == 403
    assert "is for <strong>grace@example.com</strong>" in page.get_data(as_text=True)
    assert client.form(url, page="/settings/members").status_code == 403
    assert db.session.scalar(sa.select(Invite)).accepted_at is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Membership)) == 2


def test_existing_account_not_signed_in_is_sent_to_sign_in_and_back(client, db, invited, make_user):
    org, _, url = invited
    make_user(email="grace@example.com", name="Grace")
    html = client.get(url).get_data(as_text=True)
    assert "Sign in to accept" in html
    assert "/login?next=/invites/" in html
    # A forged join form cannot take over the existing account.
    response = client.form(url, {"name": "Evil", "password": "x" * 20}, page=url)
    assert response.status_code == 200
    assert "Sign in to accept" in response.get_data(as_text=True)
    login = client.form(f"/login?next={url}", {"email": "grace@example.com", "password": PASSWORD})
    assert login.headers["Location"] == url
    assert client.form(url, page=url).status_code == 302
    assert db.session.scalar(
        sa.select(Membership).where(
            Membership.organization_id == org.id, Membership.role == "admin"
        )
    )


def test_cancelled_expired_and_unknown_links_get_clear_pages(client, db, invited):
    org, invite, url = invited
    assert client.get("/invites/not-a-real-link").status_code == 404
    invite.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    expired = client.get(url)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    invite = db.session.get(Invite, invite.id)
    invite.expires_at = utcnow() + timedelta(days=1)
    invite.cancelled_at = utcnow()
    db.session.commit()
    for response in (
        client.get(url),
        client.form(url, {"name": "G", "password": PASSWORD}, page="/login"),
    ):
        assert response.status_code == 410
        assert "cancelled" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(User).where(User.email == "grace@example.com")) is None


def test_an_accepted_invite_cannot_be_claimed_again(db, invited, make_user):
    org, invite, _ = invited
    grace = make_user(email="grace@example.com")
    members.accept_invite(invite, grace)
    with pytest.raises(members.InviteGone):
        members.accept_invite(invite, grace)
    db.session.commit()
    assert (
        db.session.scalar(
            sa.select(sa.func.count()).select_from(Membership).where(Membership.user_id == grace.id)
        )
        == 1
    )


def test_a_double_clicked_join_makes_one_account_and_never_a_500(app, db, invited):
    """Simultaneous posts of the same new-person link: one account, one membership."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, url = invited

    def opened(_: int):  # each browser opens the link before anyone submits
        client = app.test_client()
        html = client.get(url).get_data(as_text=True)
        token = html.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        return client, {"name": "Grace", "password": PASSWORD, "csrf_token": token}

    def join(opened) -> int:
        client, form = opened
        return client.post(url, data=form).status_code

    browsers = [opened(i) for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(join, browsers))
    assert statuses.count(302) == 1
    # The others see "sign in to accept" (the account exists now) or "already used".
    assert all(status in (200, 400, 410) for status in statuses if status != 302), statuses
    db.session.expire_all()
    grace = db.session.scalars(sa.select(User).where(User.email == "grace@example.com")).all()
    assert len(grace) == 1
    assert (
        len(
            db.session.scalars(sa.select(Membership).where(Membership.user_id == grace[0].id)).all()
        )
        == 1
    )
