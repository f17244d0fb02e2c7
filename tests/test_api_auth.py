"""SPEC §4 authentication: three ways to present a token, the 401 codes, no cookies."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from api_support import API, basic, bearer, error_code

from models import Membership, utcnow
from services import tokens as token_service
from services.actor import Actor
from tests.conftest import owner_actor


@pytest.fixture
def org(make_org):
    return make_org(name="Acme")


@pytest.mark.parametrize(
    "headers_for",
    [
        bearer,
        lambda secret: {"X-API-Key": secret},
        lambda secret: basic(secret, username="anyone@example.com"),
        lambda secret: basic(secret, username=""),
        lambda secret: basic("", username=secret),  # Stripe's `curl -u <token>:`
    ],
    ids=["bearer", "x-api-key", "basic", "basic-empty-username", "basic-token-as-username"],
)
def test_each_way_of_presenting_the_token_authenticates(client, org, make_token, headers_for):
    token, secret = make_token(org, name="deploy", role="writer")
    response = client.get(f"{API}/whoami", headers=headers_for(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["token"]["id"] == token.id
    assert body["organization"] == {"id": org.id, "name": "Acme"}
    assert body["environment"] == "sandbox"
    assert body["role"] == "writer"
    assert body["scopes"] == ["audit:read", "members:read", "tokens:read", "tokens:write"]
    assert "token" not in body["token"]  # never the secret again


def test_whoami_scopes_never_exceed_the_creators_current_role(
    client, db, org, make_member, make_token
):
    membership = make_member(org, role="admin")
    actor = Actor(organization=org, membership=membership)
    _, secret = make_token(org, actor, role="admin")
    membership.role = "viewer"
    db.session.commit()
    body = client.get(f"{API}/whoami", headers=bearer(secret)).get_json()
    assert body["role"] == "admin"  # as stored
    assert body["effective_role"] == "viewer"  # as it acts now
    assert body["scopes"] == ["audit:read", "members:read", "tokens:read"]
    response = client.post(f"{API}/api_tokens", json={"name": "x"}, headers=bearer(secret))
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


@pytest.mark.parametrize(
    "member_role, token_role, effective",
    [
        ("owner", "admin", "admin"),
        ("admin", "admin", "admin"),
        ("member", "admin", "writer"),
        ("member", "viewer", "viewer"),
        ("viewer", "writer", "viewer"),
    ],
)
def test_whoami_effective_role_is_the_token_role_capped_by_its_creators_role_now(
    client, db, org, make_member, make_token, member_role, token_role, effective
):
    membership = make_member(org, role="admin")
    _, secret = make_token(org, Actor(organization=org, membership=membership), role=token_role)
    membership.role = member_role
    db.session.commit()
    body = client.get(f"{API}/whoami", headers=bearer(secret)).get_json()
    assert (body["role"], body["effective_role"]) == (token_role, effective)


def test_missing_token_gets_401_missing_token_with_www_authenticate(client, org):
    response = client.get(f"{API}/whoami")
    assert response.status_code == 401
    assert error_code(response) == "missing_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_session_cookie_never_authenticates_the_api(client, db, make_user, make_org):
    user = make_user(email="ada@example.com")
    make_org(owner=user)
    client.sign_in("ada@example.com")
    assert client.get("/connections/api-tokens").status_code != 401  # signed in on pages
    response = client.get(f"{API}/api_tokens")
    assert response.status_code == 401
    assert error_code(response) == "missing_token"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "not-a-token",
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # fails the checksum
        lambda s: s[:-8],  # truncated
        lambda s: "",
    ],
    ids=["garbage", "typo", "truncated", "empty"],
)
def test_a_wrong_token_gets_401_invalid_token(client, org, make_token, mangle):
    _, secret = make_token(org)
    response = client.get(f"{API}/whoami", headers=bearer(mangle(secret)))
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("scheme", ["Digest", "token", "Token", "ApiKey"])
def test_an_unknown_authorization_scheme_gets_401_naming_bearer(client, org, make_token, scheme):
    _, secret = make_token(org, name=f"scheme-{scheme}")
    response = client.get(f"{API}/whoami", headers={"Authorization": f"{scheme} {secret}"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    message = response.get_json()["error"]["message"]
    assert f"'{scheme}'" in message and "Authorization: Bearer <token>" in message
    assert secret not in response.get_data(as_text=True)


def test_expired_token_gets_401_token_expired(client, db, org, make_token):
    token, secret = make_token(org)
    token.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_expired"
    assert "WWW-Authenticate" in response.headers


def test_revoked_token_gets_401_token_revoked(client, db, org, make_token):
    token, secret = make_token(org)
    token_service.revoke_token(token, owner_actor(org))
    db.session.commit()
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_revoked"


def test_suspended_token_gets_401_token_inactive_until_resumed(client, db, org, make_token):
    token, secret = make_token(org)
    token_service.suspend_token(token, owner_actor(org))
    db.session.commit()
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_inactive"
    token_service.resume_token(token, owner_actor(org))
    db.session.commit()
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200


def test_token_of_a_member_who_left_gets_401_token_revoked(
    client, db, org, make_member, make_token
):
    membership = make_member(org, role="member")
    _, secret = make_token(org, Actor(organization=org, membership=membership), role="writer")
    db.session.execute(sa.delete(Membership).where(Membership.id == membership.id))
    db.session.commit()
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_revoked"


def test_each_authenticated_request_is_reported_to_usage(client, org, make_token, monkeypatch):
    from services import usage

    seen = []
    monkeypatch.setattr(usage, "record_use", lambda token, ip: seen.append((token.id, ip)))
    token, secret = make_token(org)
    client.get(f"{API}/whoami", headers=bearer(secret))
    client.get(f"{API}/whoami")  # no token: nothing to record
    assert seen == [(token.id, "127.0.0.1")]


def test_the_api_needs_no_csrf_token(client, org, make_token):
    _, secret = make_token(org)
    response = client.post(
        f"{API}/api_tokens", data={"name": "no csrf here"}, headers=bearer(secret)
    )
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_bare_authorization_header_is_told_the_scheme_is_missing(client, org, make_token):
    _, secret = make_token(org, name="bare")
    response = client.get(f"{API}/whoami", headers={"Authorization": secret})
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    assert "Bearer" in response.get_json()["error"]["message"]
