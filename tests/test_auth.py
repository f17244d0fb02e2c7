"""Accounts (SPEC §1, §3): sign-up, sign-in, sign-out, the throttle, CSRF, cookies, next=."""

import re

import sqlalchemy as sa

from models import AuditEvent, Membership, Organization, User
from tests.conftest import PASSWORD


def _signup(client, **overrides):
    data = {
        "name": "Ada",
        "email": "Ada@Example.com",
        "password": PASSWORD,
        "organization": "Engines",
    }
    data.update(overrides)
    return client.form("/signup", data)


def test_signup_creates_user_and_owned_organization_and_signs_in(client, db):
    response = _signup(client)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/connections/api-tokens")
    user = db.session.scalar(sa.select(User))
    assert user.email == "ada@example.com"
    assert user.password_hash.startswith("$2b$04$")  # bcrypt, at the test cost
    org = db.session.scalar(sa.select(Organization))
    membership = db.session.scalar(sa.select(Membership))
    assert (org.name, membership.role, membership.user_id) == ("Engines", "owner", user.id)
    assert org.max_live_tokens == 100 and org.allow_never_expires is False
    page = client.get("/connections/api-tokens")
    assert page.status_code == 200
    assert "Engines" in page.get_data(as_text=True)


def test_signup_with_a_used_email_in_another_case_changes_nothing(client, db, make_user):
    make_user(email="ada@example.com")
    response = _signup(client, email="ADA@example.COM", organization="Other")
    assert response.status_code == 400
    assert "already exists" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Organization)) == 0
    assert client.get("/connections/api-tokens").status_code == 302  # nobody signed in


def test_signup_keeps_typed_values_and_names_each_bad_field(client, db):
    response = _signup(client, email="nope", password="short", name="Linus")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'value="Linus"' in html and 'value="nope"' in html
    assert "Invalid email address." in html
    assert "at least 12 characters" in html
    assert "short" not in html.replace("shortcut", "")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_login_is_case_insensitive_and_logout_needs_a_post(client, make_org, make_user):
    make_org(owner=make_user(email="grace@example.com"))
    client.sign_in("GRACE@example.com")
    assert client.get("/connections/api-tokens").status_code == 200
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    assert client.get("/connections/api-tokens").status_code == 200
    client.form("/logout", page="/connections/api-tokens")
    assert client.get("/connections/api-tokens").status_code == 302


def test_failed_sign_in_gives_the_same_answer_for_unknown_and_known_emails(client, make_user, db):
    make_user(email="known@example.com")
    known = client.form("/login", {"email": "known@example.com", "password": "wrong password!"})
    unknown = client.form("/login", {"email": "unknown@example.com", "password": "wrong password!"})
    assert known.status_code == unknown.status_code == 401
    message = "That email and password do not match an account."
    assert message in known.get_data(as_text=True) and message in unknown.get_data(as_text=True)


def test_sign_ins_and_failed_sign_ins_are_audited_without_the_password(
    client, make_org, make_user, db
):
    make_org(owner=make_user(email="audit@example.com"))
    client.form("/login", {"email": "audit@example.com", "password": "the wrong words"})
    client.sign_in("audit@example.com")
    events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.action for e in events] == ["user.sign_in_failed", "user.signed_in"]
    assert all("the wrong words" not in str(e.details) for e in events)
    assert events[0].ip == "127.0.0.1"


def test_post_without_csrf_token_is_refused_with_a_clear_page(client):
    response = client.post(
        "/signup",
        data={"name": "x", "email": "x@example.com", "password": PASSWORD, "organization": "x"},
    )
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)


def test_next_is_followed_only_to_a_local_path(client, make_org, make_user):
    make_org(owner=make_user(email="n@example.com"))
    data = {"email": "n@example.com", "password": PASSWORD}
    for target, expected in [
        ("/connections/audit-log", "/connections/audit-log"),
        ("https://evil.example/", "/connections/api-tokens"),
        ("//evil.example/", "/connections/api-tokens"),
        ("/\\evil.example", "/connections/api-tokens"),
    ]:
        client.cookie_jar.clear() if hasattr(client, "cookie_jar") else None
        token = client.csrf_token()
        response = client.post(f"/login?next={target}", data={**data, "csrf_token": token})
        assert response.status_code == 302
        assert response.headers["Location"] == expected, target
        client.form("/logout", page="/connections/api-tokens")


def test_session_cookie_is_httponly_and_samesite_lax(client, make_org, make_user):
    make_org(owner=make_user(email="c@example.com"))
    response = client.sign_in("c@example.com")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP in tests; SESSION_COOKIE_SECURE turns it on


def test_secure_cookie_when_configured(tmp_path):
    from config import Config

    config = Config(str(tmp_path), {"SECRET_KEY": "x", "SESSION_COOKIE_SECURE": "true"})
    assert config.SESSION_COOKIE_SECURE is True and config.REMEMBER_COOKIE_SECURE is True


def test_switching_to_an_organization_one_is_not_in_gives_404(client, make_org, make_user, db):
    mine = make_org(owner=make_user(email="me@example.com"), name="Mine")
    theirs = make_org(name="Theirs")
    client.sign_in("me@example.com")
    token = client.csrf_token("/connections/api-tokens")
    assert (
        client.post(f"/organizations/{theirs.id}/switch", data={"csrf_token": token}).status_code
        == 404
    )
    assert (
        client.post(f"/organizations/{mine.id}/switch", data={"csrf_token": token}).status_code
        == 302
    )


def test_a_stale_tab_cannot_change_the_organization_switched_to_elsewhere(
    client, db, make_org, make_user
):
    from models import ApiToken

    me = make_user(email="tabs@example.com")
    first = make_org(owner=me, name="First")
    second = make_org(owner=me, name="Second")
    client.sign_in("tabs@example.com")
    token = client.csrf_token("/connections/api-tokens")
    client.post(f"/organizations/{first.id}/switch", data={"csrf_token": token})
    # A tab still showing Second submits its create form.
    form = {
        "csrf_token": token, "organization_id": str(second.id), "environment": "sandbox",
        "name": "stale", "role": "viewer", "type": "generic", "expires_in_days": "30",
    }  # fmt: skip
    stale = client.post("/connections/api-tokens", data=form)
    assert stale.status_code == 409
    assert "another organization" in stale.get_data(as_text=True)
    htmx = client.post(
        "/connections/api-tokens",
        data={**form, "organization_id": ""},
        headers={"HX-Request": "true", "X-Keysmith-Org": str(second.id)},
    )
    assert htmx.status_code == 409
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0
    fresh = client.post("/connections/api-tokens", data={**form, "organization_id": str(first.id)})
    assert fresh.status_code == 200


def test_someone_in_no_organization_is_offered_to_start_one(client, db, make_org, make_user):
    from models import Membership

    me = make_user(email="alone@example.com")
    org = make_org(owner=me)
    client.sign_in("alone@example.com")
    db.session.execute(sa.delete(Membership).where(Membership.organization_id == org.id))
    db.session.commit()

    page = client.get("/connections/api-tokens")
    assert page.status_code == 302
    assert page.headers["Location"] == "/organizations/new"
    offer = client.get("/organizations/new").get_data(as_text=True)
    assert "not a member of any organization" in offer

    bad = client.form("/organizations/new", {"name": ""}, page="/organizations/new")
    assert bad.status_code == 400
    made = client.form("/organizations/new", {"name": "Fresh Start"}, page="/organizations/new")
    assert made.status_code == 302
    assert "Fresh Start" in client.get("/connections/api-tokens").get_data(as_text=True)
    membership = db.session.scalar(sa.select(Membership).where(Membership.user_id == me.id))
    assert membership.role == "owner"


def test_sign_in_returns_to_the_organization_last_used_in_this_browser(
    client, db, make_org, make_user
):
    me = make_user(email="return@example.com")
    make_org(owner=me, name="Alpha")
    beta = make_org(owner=me, name="Beta")
    client.sign_in("return@example.com")
    token = client.csrf_token("/connections/api-tokens")
    client.post(f"/organizations/{beta.id}/switch", data={"csrf_token": token})
    client.form("/logout", page="/connections/api-tokens")
    client.sign_in("return@example.com")
    page = client.get("/connections/api-tokens").get_data(as_text=True)
    assert 'title="Switch organization">Beta</summary>' in page
    # A cookie naming an organization one is not in changes nothing.
    client.set_cookie("ks_last_org", "999999")
    client.form("/logout", page="/connections/api-tokens")
    client.sign_in("return@example.com")
    page = client.get("/connections/api-tokens").get_data(as_text=True)
    assert 'title="Switch organization">Alpha</summary>' in page


def _autocomplete(html: str) -> dict[str, str]:
    """Each input's name → its autocomplete hint, as the browser's password manager reads them."""
    hints = {}
    for tag in re.findall(r"<input\b[^>]*>", html):
        name = re.search(r'\bname="([^"]+)"', tag)
        hint = re.search(r'\bautocomplete="([^"]+)"', tag)
        if name and name.group(1) != "csrf_token":
            hints[name.group(1)] = hint.group(1) if hint else None
    return hints


def test_password_managers_are_told_which_password_is_new_and_which_is_current(client):
    signup = _autocomplete(client.get("/signup").get_data(as_text=True))
    assert signup == {
        "name": "name",
        "email": "email",
        "password": "new-password",
        "organization": "organization",
    }
    login = _autocomplete(client.get("/login").get_data(as_text=True))
    assert login == {"email": "username", "password": "current-password"}
