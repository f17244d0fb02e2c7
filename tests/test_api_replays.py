"""The seed systems' documented requests, replayed against our paths.

Librato:  curl -u $USER:$TOKEN -d name=x -d role=viewer https://.../v1/api_tokens
          curl -u $USER:$TOKEN -X PUT -d active=false https://.../v1/api_tokens/$ID
          curl -u $USER:$TOKEN -X DELETE https://.../v1/api_tokens/$ID
Metabase: curl -H 'x-api-key: $KEY' https://.../api/...
Metlo:    creating a key whose name exists fails; keys are deleted by name.
Metoro:   expired or revoked tokens get 401; a token without the permission gets 403.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_support import API, basic, error_code

from models import utcnow
from services import tokens as token_service
from tests.conftest import owner_actor


@pytest.fixture
def org(make_org):
    return make_org()


@pytest.fixture
def admin_secret(org, make_token):
    return make_token(org, name="librato-admin", role="admin")[1]


def test_librato_form_encoded_create_put_and_delete(client, admin_secret):
    auth = basic(admin_secret, username="ada@example.com")
    # curl -u user:token -d name=x -d role=viewer http://127.0.0.1:5000/api/v1/api_tokens
    created = client.post(f"{API}/api_tokens", data={"name": "x", "role": "viewer"}, headers=auth)
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert (body["name"], body["role"], body["active"]) == ("x", "viewer", True)
    token_id, secret = body["id"], body["token"]

    # curl -u user:token -X PUT -d active=false http://127.0.0.1:5000/api/v1/api_tokens/<id>
    updated = client.put(f"{API}/api_tokens/{token_id}", data={"active": "false"}, headers=auth)
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert updated.get_json()["active"] is False
    assert error_code(client.get(f"{API}/whoami", headers=basic(secret))) == "token_inactive"

    # curl -u user:token -X DELETE http://127.0.0.1:5000/api/v1/api_tokens/<id>
    deleted = client.delete(f"{API}/api_tokens/{token_id}", headers=auth)
    assert deleted.status_code == 204
    listed = client.get(f"{API}/api_tokens?name=x", headers=auth).get_json()
    assert listed["api_tokens"][0]["status"] == "revoked"


def test_librato_form_with_scopes_and_expiry(client, admin_secret):
    response = client.post(
        f"{API}/api_tokens",
        data={
            "name": "recorder",
            "role": "recorder",
            "scopes": "tokens:read tokens:write",
            "expires_in_days": "30",
        },
        headers=basic(admin_secret),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["role"] == "writer"
    assert body["scopes"] == ["tokens:read", "tokens:write"]


def test_metabase_x_api_key(client, admin_secret):
    response = client.get(f"{API}/api_tokens", headers={"x-api-key": admin_secret})
    assert response.status_code == 200
    assert response.get_json()["api_tokens"][0]["name"] == "librato-admin"


def test_metlo_duplicate_name_and_delete_by_name(client, admin_secret):
    headers = {"X-API-Key": admin_secret}
    assert (
        client.post(f"{API}/api_tokens", json={"name": "ingest"}, headers=headers).status_code
        == 201
    )
    duplicate = client.post(f"{API}/api_tokens", json={"name": "ingest"}, headers=headers)
    assert duplicate.status_code == 400
    assert error_code(duplicate) == "duplicate_name"
    assert client.delete(f"{API}/api_tokens?name=ingest", headers=headers).status_code == 204
    # Revoked, the name is free again.
    assert (
        client.post(f"{API}/api_tokens", json={"name": "ingest"}, headers=headers).status_code
        == 201
    )
    missing = client.delete(f"{API}/api_tokens?name=never-existed", headers=headers)
    assert missing.status_code == 404
    assert error_code(missing) == "not_found"


def test_metoro_401_for_expired_and_revoked(client, db, org, make_token):
    expired, expired_secret = make_token(org, name="old")
    expired.expires_at = utcnow() - timedelta(minutes=1)
    revoked, revoked_secret = make_token(org, name="gone")
    token_service.revoke_token(revoked, owner_actor(org))
    db.session.commit()
    for secret, code in ((expired_secret, "token_expired"), (revoked_secret, "token_revoked")):
        response = client.get(f"{API}/api_tokens", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 401
        assert error_code(response) == code
        assert "WWW-Authenticate" in response.headers


def test_metoro_403_for_a_missing_permission(client, org, make_token):
    _, secret = make_token(org, name="reader", role="viewer")
    response = client.post(
        f"{API}/api_tokens", json={"name": "x"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_librato_form_with_an_empty_expiry_means_never_where_allowed(client, db, org, make_token):
    org.allow_never_expires = True
    db.session.commit()
    # Only a token that never expires may make one that never does (SPEC §2).
    admin_secret = make_token(org, name="librato-admin", role="admin", expires_in_days=None)[1]
    response = client.post(
        f"{API}/api_tokens",
        data={"name": "forever", "expires_at": "", "expires_in_days": ""},
        headers=basic(admin_secret),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["expires_at"] is None
    response = client.post(
        f"{API}/api_tokens",
        data={"name": "default", "expires_in_days": ""},
        headers=basic(admin_secret),
    )
    assert response.get_json()["expires_at"] is not None
