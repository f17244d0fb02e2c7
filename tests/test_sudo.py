"""Sudo mode (SPEC §1, issue 14): changing the key policy, roles or members, and creating or
rotating an admin-role token ask for the password (and code) again when it was not given in
the last 10 minutes, then carry on with what was submitted."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pyotp
import sqlalchemy as sa

from models import ApiToken, Membership, Organization, UserSession, utcnow
from tests.conftest import PASSWORD

POLICY = "/settings/policy"
PAGE = "/connections/api-tokens"


def _policy(**changes):
    form = {"max_live_tokens": "100", "max_lifetime_days": "365",
            "rate_limit": "1000/minute;100/second", "webhook_url": ""}  # fmt: skip
    return {**form, **changes}


def _long_ago(db):
    """The password was last given 11 minutes ago in every session."""
    db.session.execute(
        sa.update(UserSession).values(authenticated_at=utcnow() - timedelta(minutes=11))
    )
    db.session.commit()


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def test_a_policy_change_asks_again_then_carries_on_with_what_was_submitted(
    client, db, make_org, make_user
):
    org = make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    assert client.form(POLICY, _policy(max_live_tokens="50"), page=POLICY).status_code == 302
    _long_ago(db)

    asked = client.form(POLICY, _policy(max_live_tokens="40"), page=POLICY)
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Confirm access" in html
    assert db.session.get(Organization, org.id).max_live_tokens == 50  # not yet
    carried = _hidden(html)
    assert carried["max_live_tokens"] == "40"

    wrong = client.post(POLICY, data={**carried, "sudo_password": "not it"})
    assert wrong.status_code == 401 and "That is not your password." in wrong.get_data(as_text=True)
    assert db.session.get(Organization, org.id).max_live_tokens == 50

    done = client.post(POLICY, data={**carried, "sudo_password": PASSWORD})
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(Organization, org.id).max_live_tokens == 40
    # Not asked again for 10 minutes.
    assert client.form(POLICY, _policy(max_live_tokens="30"), page=POLICY).status_code == 302


def test_role_changes_and_removals_ask_again_htmx_included(
    client, db, make_org, make_user, make_member
):
    org = make_org(owner=make_user(email="ada@example.com"))
    bob = make_member(org, "member", make_user(email="bob@example.com"))
    client.sign_in("ada@example.com")
    _long_ago(db)
    url = f"/settings/members/{bob.id}/role"
    htmx = client.form(url, {"role": "viewer"}, page="/settings/members",
                       headers={"HX-Request": "true"})  # fmt: skip
    assert htmx.headers["HX-Retarget"] == "#main" and "Confirm access" in htmx.get_data(
        as_text=True
    )
    assert "<html" not in htmx.get_data(as_text=True)
    assert db.session.get(Membership, bob.id).role == "member"
    removal = client.form(f"/settings/members/{bob.id}/remove", page="/settings/members")
    assert "Confirm access" in removal.get_data(as_text=True)
    assert db.session.get(Membership, bob.id) is not None


def test_only_admin_role_tokens_ask_again(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    _long_ago(db)
    base = {"environment": "sandbox", "type": "ci", "expires_in_days": "90"}
    writer = client.form(PAGE, {**base, "name": "w", "role": "writer"}, page=PAGE)
    assert writer.status_code == 200 and "Confirm access" not in writer.get_data(as_text=True)
    admin = client.form(PAGE, {**base, "name": "a", "role": "admin"}, page=PAGE)
    assert "Confirm access" in admin.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 1
    done = client.post(
        PAGE, data={**_hidden(admin.get_data(as_text=True)), "sudo_password": PASSWORD}
    )
    assert done.status_code == 200 and "ks_sbx_" in done.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 2

    _long_ago(db)
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.role == "admin"))
    rotate = client.form(f"{PAGE}/{token.id}/rotate", {"grace_period_seconds": "0"}, page=PAGE)
    assert "Confirm access" in rotate.get_data(as_text=True)


def test_with_two_factor_the_code_is_asked_too(client, db, make_org, make_user):
    org = make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    setup = client.get("/settings/account/two-factor").get_data(as_text=True)
    totp = pyotp.TOTP(re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', setup).group(1))
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', setup).group(1)
    client.post("/settings/account/two-factor", data={"code": totp.now(), "csrf_token": token})
    _long_ago(db)
    asked = client.form(POLICY, _policy(max_live_tokens="20"), page=POLICY)
    carried = _hidden(asked.get_data(as_text=True))
    assert 'name="sudo_code"' in asked.get_data(as_text=True)
    no_code = client.post(POLICY, data={**carried, "sudo_password": PASSWORD})
    assert no_code.status_code == 401
    done = client.post(POLICY, data={**carried, "sudo_password": PASSWORD,
                                     "sudo_code": totp.at(time.time() + 30)})  # fmt: skip
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(Organization, org.id).max_live_tokens == 20


def test_invites_and_two_factor_changes_ask_again_too(client, db, make_org, make_user):
    """From an attack review: a stale session invited a second address as owner (then used
    it to remove the owner), enrolled its own authenticator, or turned two-factor off."""
    from models import Invite

    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    _long_ago(db)
    invited = client.form(
        "/settings/members",
        {"email": "eve@evil.example", "role": "owner"},
        page="/settings/members",
    )
    assert "Confirm access" in invited.get_data(as_text=True)
    assert "/invites/" not in invited.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invite)) == 0
    setup = "/settings/account/two-factor"
    client.get(setup)
    enrol = client.form(setup, {"code": "123456"}, page=setup)
    assert "Confirm access" in enrol.get_data(as_text=True)
    disable = client.form(
        "/settings/account/two-factor/disable", {"current_password": PASSWORD}, page=setup
    )
    assert "Confirm access" in disable.get_data(as_text=True)


def test_a_confirmation_from_a_stale_tab_does_not_land_in_another_organization(
    client, db, make_org, make_user
):
    """Asked to confirm in organization A (htmx, whose header named A), the person switches
    to B in another tab, then confirms in the first: the change must not be made in B."""
    ada = make_user(email="ada@example.com")
    first = make_org(owner=ada, name="First")
    second = make_org(owner=ada, name="Second")
    client.sign_in("ada@example.com")
    token = client.csrf_token(POLICY)
    client.post(f"/organizations/{first.id}/switch", data={"csrf_token": token})
    _long_ago(db)
    asked = client.post(
        POLICY,
        data={**_policy(max_live_tokens="7"), "csrf_token": token},
        headers={"HX-Request": "true", "X-Keysmith-Org": str(first.id)},
    )
    assert "Confirm access" in asked.get_data(as_text=True)
    carried = _hidden(asked.get_data(as_text=True))
    client.post(f"/organizations/{second.id}/switch", data={"csrf_token": token})

    stale = client.post(POLICY, data={**carried, "sudo_password": PASSWORD})
    assert stale.status_code == 409
    db.session.expire_all()
    assert db.session.get(Organization, second.id).max_live_tokens == 100
    assert db.session.get(Organization, first.id).max_live_tokens == 100


def test_a_plain_form_from_a_stale_tab_does_not_change_another_organization(
    client, db, make_org, make_user
):
    """Without JavaScript (no X-Keysmith-Org header), the policy form of organization A,
    submitted after another tab switched to B, must not change B's policy."""
    ada = make_user(email="ada@example.com")
    first = make_org(owner=ada, name="First")
    second = make_org(owner=ada, name="Second")
    client.sign_in("ada@example.com")
    token = client.csrf_token(POLICY)
    client.post(f"/organizations/{first.id}/switch", data={"csrf_token": token})
    html = client.get(POLICY).get_data(as_text=True)
    fields = _hidden(html)
    assert fields["organization_id"] == str(first.id)
    client.post(f"/organizations/{second.id}/switch", data={"csrf_token": token})
    stale = client.post(POLICY, data={**_policy(max_live_tokens="7"), **fields})
    assert stale.status_code == 409
    db.session.expire_all()
    assert db.session.get(Organization, second.id).max_live_tokens == 100
    fresh = client.form(POLICY, _policy(max_live_tokens="7"), page=POLICY)
    assert fresh.status_code == 302  # the page of the current organization still works
