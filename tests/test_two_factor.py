"""Two-factor sign-in (SPEC §1, issue 14): enrolment with a QR code, sign-in with a code that
pyotp computes here, single-use recovery codes, and a throttle on the codes."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
import sqlalchemy as sa

from models import ApiToken, AuditEvent, RecoveryCode, TwoFactor
from tests.conftest import PASSWORD

PAGE = "/connections/api-tokens"
SETUP = "/settings/account/two-factor"


@pytest.fixture
def app_config(limit_storage):
    return {**limit_storage}


def _enrol(client) -> tuple[pyotp.TOTP, list[str]]:
    page = client.get(SETUP)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert 'src="data:image/svg+xml;base64,' in html
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', html).group(1)
    totp = pyotp.TOTP(secret)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    done = client.post(SETUP, data={"code": totp.now(), "csrf_token": token})  # the same page
    assert done.status_code == 200, done.get_data(as_text=True)
    codes = re.findall(
        r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", done.get_data(as_text=True)
    )
    return totp, codes


def _next_code(totp: pyotp.TOTP) -> str:
    return totp.at(time.time() + 30)


def _password_step(client, email="ada@example.com", password=PASSWORD):
    return client.form("/login", {"email": email, "password": password})


def test_enrolment_then_a_sign_in_asks_for_the_code(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    wrong = client.form(SETUP, {"code": "000000"}, page=SETUP)  # (a fresh secret per visit)
    assert wrong.status_code == 400 and "That code is not right" in wrong.get_data(as_text=True)
    totp, codes = _enrol(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = db.session.scalar(sa.select(TwoFactor))
    assert stored.confirmed_at is not None and totp.secret not in stored.secret_sealed
    hashes = db.session.scalars(sa.select(RecoveryCode.code_hash)).all()
    assert len(hashes) == 10 and not set(codes) & set(hashes)
    client.form("/logout", page="/settings/account")

    step = _password_step(client)
    assert step.status_code == 302 and step.headers["Location"] == "/login/two-factor"
    assert client.get(PAGE).status_code == 302  # the password alone opens nothing
    bad = client.form("/login/two-factor", {"code": "123456"}, page="/login/two-factor")
    assert bad.status_code == 401
    # The code of the next 30 s (one step of clock drift is allowed): the current one was
    # used to confirm, and a code works once.
    good = client.form("/login/two-factor", {"code": _next_code(totp)}, page="/login/two-factor")
    assert good.status_code == 302 and good.headers["Location"] == PAGE
    assert client.get(PAGE).status_code == 200
    actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert "user.two_factor_enabled" in actions and actions.count("user.signed_in") == 2


def test_a_code_works_once(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    totp, _ = _enrol(client)
    client.form("/logout", page="/settings/account")
    # The code used to confirm cannot sign in again, in this browser or another.
    other = app.test_client()
    _password_step(other)
    replay = other.form("/login/two-factor", {"code": totp.now()}, page="/login/two-factor")
    assert replay.status_code == 401


def test_recovery_codes_sign_in_once_each(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    _, codes = _enrol(client)
    client.form("/logout", page="/settings/account")
    _password_step(client)
    used = client.form("/login/two-factor", {"code": codes[0].upper()}, page="/login/two-factor")
    assert used.status_code == 302
    assert "9 left" in client.get(PAGE).get_data(as_text=True)
    client.form("/logout", page=PAGE)
    _password_step(client)
    again = client.form("/login/two-factor", {"code": codes[0]}, page="/login/two-factor")
    assert again.status_code == 401


def test_guessing_codes_is_throttled(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    totp, _ = _enrol(client)
    client.form("/logout", page="/settings/account")
    _password_step(client)
    for i in range(10):
        guess = client.form("/login/two-factor", {"code": f"{i:06d}"}, page="/login/two-factor")
        assert guess.status_code == 401
    locked = client.form("/login/two-factor", {"code": "999999"}, page="/login/two-factor")
    assert locked.status_code == 429 and "Retry-After" in locked.headers


def test_the_code_step_cannot_be_reached_without_the_password(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    response = client.get("/login/two-factor")
    assert response.status_code == 302 and response.headers["Location"] == "/login"


def test_turning_it_off_needs_the_password(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    _enrol(client)
    page = "/settings/account"
    wrong = client.form("/settings/account/two-factor/disable", {"current_password": "nope"},
                        page=page)  # fmt: skip
    assert wrong.status_code == 400 and db.session.scalar(sa.select(TwoFactor)) is not None
    off = client.form("/settings/account/two-factor/disable", {"current_password": PASSWORD},
                      page=page)  # fmt: skip
    assert off.status_code == 302 and db.session.scalar(sa.select(TwoFactor)) is None
    client.form("/logout", page=page)
    client.sign_in("ada@example.com")  # the password alone again


def test_a_password_step_is_void_once_the_password_changes(app, client, db, make_org, make_user):
    """Someone who learnt the old password and reached the code step must not finish it
    after the owner (or an operator) changed the password: the step belongs to a password."""
    from services import accounts

    owner = make_user(email="ada@example.com")
    make_org(owner=owner)
    client.sign_in("ada@example.com")
    totp, _codes = _enrol(client)
    client.form("/logout", page="/settings/account")
    step = _password_step(client)
    assert step.status_code == 302 and step.headers["Location"] == "/login/two-factor"
    accounts.set_password(
        db.session.get(type(owner), owner.id), "a new and long passphrase 7", via="test"
    )
    db.session.commit()
    html = client.get("/login").get_data(as_text=True)  # the session's CSRF token
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    late = client.post("/login/two-factor", data={"code": _next_code(totp), "csrf_token": csrf})
    assert late.status_code == 302 and late.headers["Location"] == "/login"
    assert client.get("/login/two-factor").headers["Location"] == "/login"
    assert client.get(PAGE).status_code == 302  # not signed in


def test_an_operator_can_turn_it_off(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    _enrol(client)
    result = app.test_cli_runner().invoke(
        args=["keysmith", "reset-password", "ada@example.com", "--two-factor-off"]
    )
    assert result.exit_code == 0, result.output
    assert db.session.scalar(sa.select(TwoFactor)) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RecoveryCode)) == 0


def _policy_form(**changes):
    form = {"max_live_tokens": "100", "max_lifetime_days": "365", "rate_limit":
            "1000/minute;100/second", "webhook_url": ""}  # fmt: skip
    return {**form, **changes}


def test_an_organization_may_require_it_and_members_without_it_are_sent_to_set_it_up(
    app, client, db, make_org, make_user, make_member
):
    from models import Organization

    org = make_org(owner=make_user(email="ada@example.com"))
    make_member(org, "member", make_user(email="bob@example.com"))
    client.sign_in("ada@example.com")
    policy = "/settings/policy"
    refused = client.form(policy, _policy_form(require_two_factor="y"), page=policy)
    assert refused.status_code == 400
    assert "Turn on two-factor sign-in for yourself first" in refused.get_data(as_text=True)
    _enrol(client)
    saved = client.form(policy, _policy_form(require_two_factor="y"), page=policy)
    assert saved.status_code == 302
    db.session.expire_all()
    assert db.session.get(Organization, org.id).require_two_factor is True
    assert client.get(PAGE).status_code == 200  # the owner has it

    bob = app.test_client()
    bob.sign_in("bob@example.com")
    sent = bob.get(PAGE)
    assert sent.status_code == 302 and sent.headers["Location"] == SETUP
    assert "requires two-factor sign-in" in bob.get("/settings/account").get_data(as_text=True)
    htmx = bob.get(PAGE, headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"] == SETUP
    token = bob.csrf_token("/settings/account")
    create = bob.post(PAGE, data={"csrf_token": token, "name": "x", "environment": "sandbox",
                      "role": "viewer", "type": "generic", "expires_in_days": "30"})  # fmt: skip
    assert create.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0
    _enrol(bob)
    assert bob.get(PAGE).status_code == 200
    changes = db.session.scalars(
        sa.select(AuditEvent.details).where(AuditEvent.action == "policy.updated")
    ).all()
    assert {"require_two_factor": {"from": False, "to": True}} in changes
