"""Hostile input on the account pages and the id routes: NUL bytes and other control
characters, ids past what a database integer holds, and double-clicked sign-ups. PostgreSQL
refuses NUL in text, so these ran into 500s there; each is a clear 400 (or 404) now."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from models import Organization, User
from tests.conftest import PASSWORD

SIGNUP = {"email": "ada@example.com", "name": "Ada", "organization": "Acme"}


def _count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "A\x00"),
        ("organization", "B\x00C"),
        ("email", "a\x00b@example.com"),
        ("name", "tab\there"),
    ],
)
def test_signup_with_a_control_character_is_an_inline_error(client, db, field, value):
    data = {**SIGNUP, "password": PASSWORD, field: value}
    response = client.form("/signup", data, page="/signup")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "May not contain control characters." in html
    assert 'value="Acme"' in html or field == "organization"  # what was typed stays
    assert PASSWORD not in html
    assert _count(db, User) == 0 and _count(db, Organization) == 0


@pytest.mark.parametrize("email", ["a\x00b@example.com", "owner@example.com\x00"])
def test_sign_in_with_a_nul_byte_is_an_inline_error(client, make_user, email):
    make_user("owner@example.com")
    response = client.form("/login", {"email": email, "password": PASSWORD})
    assert response.status_code == 400
    assert "May not contain control characters." in response.get_data(as_text=True)


def test_new_organization_name_with_a_nul_byte_is_an_inline_error(client, make_org, make_user, db):
    owner = make_user("owner@example.com")
    make_org(owner=owner)
    client.sign_in(owner.email)
    response = client.form("/organizations/new", {"name": "Org\x00X"}, page="/organizations/new")
    assert response.status_code == 400
    assert "May not contain control characters." in response.get_data(as_text=True)
    assert _count(db, Organization) == 1


@pytest.mark.parametrize("value", ["%00", "a%00b", "%01"])
@pytest.mark.parametrize("name", ["actor", "action", "token"])
@pytest.mark.parametrize("path", ["/connections/audit-log", "/connections/audit-log.csv"])
def test_audit_filters_with_control_characters_are_refused(
    client, make_org, make_user, path, name, value
):
    owner = make_user("owner@example.com")
    make_org(owner=owner)
    client.sign_in(owner.email)
    response = client.get(f"{path}?{name}={value}")
    assert response.status_code == 400
    assert "control characters" in response.get_data(as_text=True)


@pytest.mark.parametrize("big", ["2147483648", "99999999999999999999999"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/organizations/{}/switch"),
        ("post", "/settings/members/{}/role"),
        ("get", "/settings/members/{}/remove"),
        ("post", "/settings/members/{}/remove"),
        ("post", "/settings/members/invites/{}/cancel"),
    ],
)
def test_ids_past_a_database_integer_are_404(client, make_org, make_user, method, path, big):
    owner = make_user("owner@example.com")
    make_org(owner=owner)
    client.sign_in(owner.email)
    url = path.format(big)
    if method == "get":
        response = client.get(url)
    else:
        response = client.form(url, {"role": "admin"}, page="/settings/members")
    assert response.status_code == 404


def test_a_double_clicked_sign_up_makes_one_account_and_never_a_500(app, db):
    """Simultaneous sign-ups with one email: one account, the rest a clear refusal."""

    def opened(i: int):  # each browser opens the form before anyone submits
        client = app.test_client()
        html = client.get("/signup").get_data(as_text=True)
        token = html.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        data = {**SIGNUP, "email": "Ada@Example.com" if i % 2 else SIGNUP["email"]}
        return client, data | {"password": PASSWORD, "csrf_token": token}

    def sign_up(opened) -> int:
        client, data = opened
        return client.post("/signup", data=data).status_code

    browsers = [opened(i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(sign_up, browsers))
    assert statuses.count(302) == 1
    assert all(status == 400 for status in statuses if status != 302), statuses
    db.session.expire_all()
    assert _count(db, User) == 1


@pytest.mark.parametrize("app_config", [{"MAX_OWNED_ORGANIZATIONS": 3}])
def test_one_person_cannot_start_organizations_without_end(client, make_org, make_user, db):
    """A stranger who signs up must not fill the database with organizations (each with
    its own policy and audit log); the refusal keeps what was typed and says why."""
    owner = make_user("owner@example.com")
    make_org(owner=owner)
    client.sign_in(owner.email)
    for n in (2, 3):
        made = client.form("/organizations/new", {"name": f"Org {n}"}, page="/organizations/new")
        assert made.status_code == 302
    refused = client.form("/organizations/new", {"name": "Org 4"}, page="/organizations/new")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "You already own 3 organizations" in html and 'value="Org 4"' in html
    assert _count(db, Organization) == 3
