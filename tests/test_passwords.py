"""Passwords (issue 14): zxcvbn refuses easily guessed ones everywhere a password is chosen,
with its advice beside the field and what was typed kept; and sign-up is limited per address."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from models import Membership, Organization, User
from services import members
from tests.conftest import PASSWORD
from tests.test_members import actor_for

WEAK = ["password1234", "aaaaaaaaaaaa", "qwertyuiop123", "1234567890123"]
TOO_EASY = "This password is too easy to guess."


def _count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.mark.parametrize("weak", WEAK)
def test_sign_up_refuses_a_weak_password_beside_the_field_keeping_the_rest(client, db, weak):
    data = {"name": "Linus", "email": "linus@example.com", "password": weak,
            "organization": "Kernel"}  # fmt: skip
    response = client.form("/signup", data, page="/signup")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert TOO_EASY in html
    assert 'value="Linus"' in html and 'value="linus@example.com"' in html
    assert 'value="Kernel"' in html
    assert weak not in html  # a password is never sent back
    assert _count(db, User) == 0 and _count(db, Organization) == 0


def test_zxcvbns_advice_is_shown(client):
    data = {"name": "Ada", "email": "ada@example.com", "password": "password1234",
            "organization": "Engines"}  # fmt: skip
    html = client.form("/signup", data, page="/signup").get_data(as_text=True)
    assert "This is a very common password." in html


def test_a_password_made_of_ones_own_email_is_refused(client, db):
    data = {"name": "Grace Hopper", "email": "grace.hopper@example.com",
            "password": "gracehopper1", "organization": "Navy"}  # fmt: skip
    response = client.form("/signup", data, page="/signup")
    assert response.status_code == 400 and TOO_EASY in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "password",
    ["gracehopper@example.com", "grace.hopper1234", "GraceHopper2024", "example.com1234"],
)
def test_passwords_made_of_the_email_or_name_run_together_are_refused(client, db, password):
    """From an attack review: zxcvbn matches whole words, so the name and the email's parts
    are given to it joined up too."""
    data = {"name": "Grace Hopper", "email": "grace.hopper@example.com",
            "password": password, "organization": "Navy"}  # fmt: skip
    response = client.form("/signup", data, page="/signup")
    assert response.status_code == 400 and TOO_EASY in response.get_data(as_text=True)


def test_joining_by_invite_refuses_a_weak_password(client, db, make_org, make_user):
    org = make_org(owner=make_user(email="olive@example.com"))
    owner = db.session.scalar(sa.select(Membership))
    _, secret = members.invite(org, actor_for(owner), email="grace@example.com", role="member")
    db.session.commit()
    url = f"/invites/{secret}"
    response = client.form(url, {"name": "Grace", "password": "aaaaaaaaaaaa"}, page=url)
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and TOO_EASY in html and 'value="Grace"' in html
    assert client.form(url, {"name": "Grace", "password": PASSWORD}, page=url).status_code == 302


def test_changing_to_a_weak_password_is_refused(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    page = "/settings/account/password"
    response = client.form(
        page,
        {"current_password": PASSWORD, "new_password": "password1234",
         "confirm_password": "password1234"},
        page=page,
    )  # fmt: skip
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and TOO_EASY in html
    assert 'id="new_password-help"' in html  # beside the new password's field
    assert "password1234" not in html
    client.form("/logout", page="/settings/account")
    client.sign_in("ada@example.com")  # unchanged


def test_a_reset_link_refuses_a_weak_password(app, client, db, make_user):
    from services import accounts

    user = make_user(email="ada@example.com")
    _, secret = accounts.create_password_reset(user)
    db.session.commit()
    path = f"/reset-password/{secret}"
    weak = {"new_password": "aaaaaaaaaaaa", "confirm_password": "aaaaaaaaaaaa"}
    response = client.form(path, weak, page=path)
    assert response.status_code == 400 and TOO_EASY in response.get_data(as_text=True)
    assert client.get(path).status_code == 200  # the link still works


def test_the_operator_cannot_set_a_weak_password_either(app, db, make_user):
    make_user(email="ada@example.com")
    result = app.test_cli_runner().invoke(
        args=["keysmith", "reset-password", "ada@example.com", "--set"],
        input="password1234\npassword1234\n",
    )
    assert result.exit_code != 0 and "too easy to guess" in result.output


class TestSignUpThrottle:
    @pytest.fixture
    def app_config(self, limit_storage):
        return {**limit_storage, "SIGNUP_THROTTLE": "5 per hour"}  # the default

    def test_fifteen_parallel_sign_ups_from_one_address_make_five_accounts(self, app, client, db):
        def opened(i):  # every browser has its form before anyone submits
            browser = app.test_client()
            return browser, i, browser.csrf_token("/signup")

        def sign_up(opened) -> int:
            browser, i, token = opened
            data = {"name": f"Bot {i}", "email": f"bot{i}@example.com", "password": PASSWORD,
                    "organization": f"Spam {i}", "csrf_token": token}  # fmt: skip
            with app.app_context():
                response = browser.post(
                    "/signup", data=data, environ_base={"REMOTE_ADDR": "203.0.113.5"}
                )
            return response.status_code

        browsers = [opened(i) for i in range(15)]
        with ThreadPoolExecutor(max_workers=15) as pool:
            statuses = list(pool.map(sign_up, browsers))
        assert statuses.count(302) == 5 and statuses.count(429) == 10, statuses
        assert _count(db, User) == 5 and _count(db, Organization) == 5

        refused = client.form("/signup", {"name": "x", "email": "x@example.com",
                              "password": PASSWORD, "organization": "x"}, page="/signup",
                              environ_base={"REMOTE_ADDR": "203.0.113.5"})  # fmt: skip
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "Too many new accounts" in refused.get_data(as_text=True)
        elsewhere = client.form("/signup", {"name": "y", "email": "y@example.com",
                                "password": PASSWORD, "organization": "y"}, page="/signup",
                                environ_base={"REMOTE_ADDR": "203.0.113.6"})  # fmt: skip
        assert elsewhere.status_code == 302

    def test_a_sign_up_that_made_nothing_does_not_count(self, client, db):
        for _ in range(8):
            bad = {"name": "z", "email": "z@example.com", "password": "password1234",
                   "organization": "z"}  # fmt: skip
            assert client.form("/signup", bad, page="/signup").status_code == 400
        good = {"name": "z", "email": "z@example.com", "password": PASSWORD, "organization": "z"}
        assert client.form("/signup", good, page="/signup").status_code == 302
