"""Server-side sessions (SPEC §1, issue 14): signing out ends a session for good, Settings →
Account lists and ends sessions, a password change ends the others, and an operator's reset
ends them all."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import sqlalchemy as sa
from flask_login.utils import encode_cookie
from hot_path_support import statements, writes

from models import AuditEvent, User, UserSession, utcnow
from tests.conftest import PASSWORD

PAGE = "/connections/api-tokens"
NEW_PASSWORD = "a different long passphrase"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _cookie(client, name: str) -> str | None:
    cookie = client.get_cookie(name)
    return cookie.value if cookie else None


def _signed_in_client(app, email: str, **environ):
    client = app.test_client()
    client.environ_base.update(environ)
    client.sign_in(email)
    return client


def _rows(db) -> list[UserSession]:
    return list(db.session.scalars(sa.select(UserSession).order_by(UserSession.id)))


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    assert client.get(PAGE).status_code == 200
    copied = _cookie(client, "ks_session")
    assert copied

    signed_out = client.form("/logout", page=PAGE)
    assert signed_out.status_code == 302
    assert _cookie(client, "ks_session") is None
    assert _rows(db) == []

    client.set_cookie("ks_session", copied)  # the attacker's copy, same browser and address
    replayed = client.get(PAGE)
    assert replayed.status_code == 302 and "/login" in replayed.headers["Location"]


def test_the_cookie_carries_only_an_opaque_id_and_the_database_only_its_hash(
    client, db, make_org, make_user
):
    org = make_org(owner=make_user(email="ada@example.com"))
    response = client.sign_in("ada@example.com")
    client.get(PAGE)
    session_id = _cookie(client, "ks_session")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
    assert _cookie(client, "session") is None  # the signed cookie of before sign-in is gone
    set_cookie = ";".join(response.headers.getlist("Set-Cookie"))
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    (row,) = _rows(db)
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in row.data and session_id not in row.id_hash
    assert f'"org_id": {org.id}' in row.data.replace('"org_id":', '"org_id": ')


def test_an_old_signed_cookie_or_a_remember_me_cookie_signs_nobody_in(
    app, client, db, make_org, make_user
):
    user = make_user(email="ada@example.com")
    make_org(owner=user)
    # What Flask's own cookie session said for a signed-in person before sessions moved.
    signer = app.session_interface.get_signing_serializer(app)
    client.set_cookie("session", signer.dumps({"_user_id": str(user.id), "_fresh": True}))
    assert client.get(PAGE).status_code == 302
    client.set_cookie("remember_token", encode_cookie(str(user.id)))
    assert client.get(PAGE).status_code == 302
    assert _rows(db) == []


def test_account_page_lists_sessions_and_ends_another_one(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    laptop = _signed_in_client(app, "ada@example.com", REMOTE_ADDR="198.51.100.7",
                               HTTP_USER_AGENT=FIREFOX)  # fmt: skip
    client.sign_in("ada@example.com")
    page = client.get("/settings/account")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Firefox on Linux" in html and "198.51.100.7" in html
    assert html.count("This browser") == 1
    assert laptop.get(PAGE).status_code == 200

    other = next(r for r in _rows(db) if r.ip == "198.51.100.7")
    ended = client.form(f"/settings/account/sessions/{other.id}/end", page="/settings/account")
    assert ended.status_code == 302
    assert laptop.get(PAGE).status_code == 302  # signed out
    assert client.get(PAGE).status_code == 200  # still in
    assert len(_rows(db)) == 1


def test_someone_elses_session_cannot_be_ended(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    make_org(owner=make_user(email="eve@example.com"))
    victim = _signed_in_client(app, "ada@example.com")
    victims = _rows(db)[0]
    client.sign_in("eve@example.com")
    response = client.form(f"/settings/account/sessions/{victims.id}/end", page="/settings/account")
    assert response.status_code == 404
    assert victim.get(PAGE).status_code == 200


def test_sign_out_everywhere_ends_every_session_of_the_person_only(
    app, client, db, make_org, make_user
):
    make_org(owner=make_user(email="ada@example.com"))
    make_org(owner=make_user(email="bob@example.com"))
    phone = _signed_in_client(app, "ada@example.com")
    bob = _signed_in_client(app, "bob@example.com")
    client.sign_in("ada@example.com")
    response = client.form("/settings/account/sessions/end-all", page="/settings/account")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get(PAGE).status_code == 302
    assert phone.get(PAGE).status_code == 302
    assert bob.get(PAGE).status_code == 200
    assert "signed out everywhere" in client.get("/login").get_data(as_text=True)


def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(
    app, client, db, make_org, make_user
):
    make_org(owner=make_user(email="ada@example.com"))
    phone = _signed_in_client(app, "ada@example.com")
    client.sign_in("ada@example.com")
    page = "/settings/account/password"
    wrong = client.form(
        page,
        {"current_password": "not my password", "new_password": NEW_PASSWORD,
         "confirm_password": NEW_PASSWORD},
        page=page,
    )  # fmt: skip
    assert wrong.status_code == 400
    assert "That is not your current password." in wrong.get_data(as_text=True)
    assert phone.get(PAGE).status_code == 200

    changed = client.form(
        page,
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
         "confirm_password": NEW_PASSWORD},
        page=page,
    )  # fmt: skip
    assert changed.status_code == 302
    assert "1 other session signed out" in client.get("/settings/account").get_data(as_text=True)
    assert client.get(PAGE).status_code == 200  # this browser stays signed in
    assert phone.get(PAGE).status_code == 302  # every other is signed out

    fresh = app.test_client()
    refused = fresh.form("/login", {"email": "ada@example.com", "password": PASSWORD})
    assert refused.status_code == 401
    fresh.sign_in("ada@example.com", NEW_PASSWORD)
    actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert "user.password_changed" in actions


def test_last_seen_is_written_at_most_once_a_minute(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    client.get(PAGE)  # the first page makes the CSRF token, which the session keeps
    with statements(db.engine) as seen:
        for _ in range(3):
            assert client.get(PAGE).status_code == 200
    assert [s for s in writes(seen) if "user_sessions" in s] == []

    earlier = utcnow() - timedelta(minutes=2)
    db.session.execute(sa.update(UserSession).values(last_seen_at=earlier))
    db.session.commit()
    with statements(db.engine) as seen:
        client.get(PAGE, environ_base={"REMOTE_ADDR": "203.0.113.9"})
        client.get(PAGE)
    assert len([s for s in writes(seen) if "user_sessions" in s]) == 1
    (row,) = _rows(db)
    assert row.last_seen_at > earlier and row.ip == "203.0.113.9"


def test_the_json_api_never_reads_a_session(client, db, make_org, make_user, make_token):
    org = make_org(owner=make_user(email="ada@example.com"))
    _, secret = make_token(org)
    client.sign_in("ada@example.com")
    with statements(db.engine) as seen:
        response = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        cookie_only = client.get("/api/v1/whoami")
    assert response.status_code == 200 and cookie_only.status_code == 401
    assert not any("user_sessions" in s for s in seen)
    assert "Set-Cookie" not in response.headers and "Set-Cookie" not in cookie_only.headers


def test_a_timed_out_session_opens_nothing(client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    client.sign_in("ada@example.com")
    db.session.execute(sa.update(UserSession).values(last_seen_at=utcnow() - timedelta(days=15)))
    db.session.commit()
    assert client.get(PAGE).status_code == 302


def _cli(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["keysmith", *args], input=input)


def test_operator_reset_link_ends_sessions_and_works_once(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    phone = _signed_in_client(app, "ada@example.com")
    result = _cli(app, "reset-password", "ADA@example.com")
    assert result.exit_code == 0, result.stderr
    link = result.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:5000/reset-password/[A-Za-z0-9_-]{43}", link)
    assert phone.get(PAGE).status_code == 302  # signed out at once
    # The old password (it may be what leaked) stops working now, not when the link is used.
    refused = client.form("/login", {"email": "ada@example.com", "password": PASSWORD})
    assert refused.status_code == 401
    path = link.removeprefix("http://127.0.0.1:5000")
    page = client.get(path)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "ada@example.com" in page.get_data(as_text=True)

    done = client.form(
        path, {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}, page=path
    )
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    client.sign_in("ada@example.com", NEW_PASSWORD)
    again = client.get(path)
    assert again.status_code == 404
    assert "cannot be used" in again.get_data(as_text=True)


def test_operator_can_set_a_password_interactively(app, client, db, make_org, make_user):
    make_org(owner=make_user(email="ada@example.com"))
    phone = _signed_in_client(app, "ada@example.com")
    result = _cli(
        app, "reset-password", "ada@example.com", "--set",
        input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert NEW_PASSWORD not in result.stdout + result.stderr
    assert phone.get(PAGE).status_code == 302
    app.test_client().sign_in("ada@example.com", NEW_PASSWORD)


def test_reset_for_an_unknown_email_fails_clearly(app, db):
    result = _cli(app, "reset-password", "nobody@example.com")
    assert result.exit_code != 0 and "No user" in result.stderr
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
