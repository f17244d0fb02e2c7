"""A token never does more than it may: no raising roles, no other environment, no other
organization. Ids outside the token's scope are 404 on every method, never 403."""

from __future__ import annotations

import pytest
from api_support import API, bearer, error_code


@pytest.fixture
def org(make_org):
    return make_org(name="Ours")


def _every_method(client, secret, token_id):
    return {
        "GET": client.get(f"{API}/api_tokens/{token_id}", headers=bearer(secret)),
        "PUT": client.put(
            f"{API}/api_tokens/{token_id}", json={"name": "mine now"}, headers=bearer(secret)
        ),
        "PATCH": client.patch(
            f"{API}/api_tokens/{token_id}", json={"active": False}, headers=bearer(secret)
        ),
        "ROTATE": client.post(f"{API}/api_tokens/{token_id}/rotate", headers=bearer(secret)),
        "DELETE": client.delete(f"{API}/api_tokens/{token_id}", headers=bearer(secret)),
    }


def test_a_writer_token_cannot_create_an_admin_token(client, org, make_token):
    _, writer = make_token(org, name="writer", role="writer")
    response = client.post(
        f"{API}/api_tokens", json={"name": "escalate", "role": "admin"}, headers=bearer(writer)
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"
    ok = client.post(
        f"{API}/api_tokens", json={"name": "peer", "role": "writer"}, headers=bearer(writer)
    )
    assert ok.status_code == 201


def test_a_writer_token_cannot_raise_a_token_to_admin(client, org, make_token):
    _, writer = make_token(org, name="writer", role="writer")
    target, _ = make_token(org, name="target", role="viewer")
    response = client.patch(
        f"{API}/api_tokens/{target.id}", json={"role": "admin"}, headers=bearer(writer)
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_a_writer_token_cannot_rotate_suspend_or_revoke_an_admin_token(client, db, org, make_token):
    """Rotating an admin token would hand the writer the admin secret."""
    admin, admin_secret = make_token(org, name="admin", role="admin")
    _, writer = make_token(org, name="writer", role="writer")
    _, narrow = make_token(org, name="narrow", role="writer", scopes=["tokens:write"])
    for secret in (writer, narrow):
        for method, response in _every_method(client, secret, admin.id).items():
            if method == "GET":
                continue
            assert response.status_code == 403, (method, response.get_json())
            assert error_code(response) == "insufficient_scope"
            assert "token" not in response.get_json()
    db.session.refresh(admin)
    assert (admin.name, admin.status) == ("admin", "active")
    still = client.get(f"{API}/whoami", headers=bearer(admin_secret))
    assert still.status_code == 200  # its secret was not rotated away
    # A peer (same role, no wider scopes) may be managed.
    # (It expires before the writer: rotating hands over a secret that must not outlive it.)
    peer, _ = make_token(
        org, name="peer", role="writer", scopes=["tokens:read"], expires_in_days=10
    )
    rotated = client.post(f"{API}/api_tokens/{peer.id}/rotate", headers=bearer(writer))
    assert rotated.status_code == 200


def test_a_token_cannot_grant_scopes_it_lacks(client, org, make_token):
    _, narrow = make_token(
        org, name="narrow", role="writer", scopes=["tokens:read", "tokens:write"]
    )
    response = client.post(
        f"{API}/api_tokens", json={"name": "wide", "role": "writer"}, headers=bearer(narrow)
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_a_sandbox_token_cannot_see_or_touch_production(client, db, org, make_token):
    _, sandbox = make_token(org, name="sbx", role="admin")
    production, production_secret = make_token(org, name="prod", environment="production")
    for method, response in _every_method(client, sandbox, production.id).items():
        assert response.status_code == 404, method
        assert error_code(response) == "not_found"
    listed = client.get(f"{API}/api_tokens", headers=bearer(sandbox)).get_json()
    assert production.id not in {t["id"] for t in listed["api_tokens"]}
    events = client.get(f"{API}/audit_events", headers=bearer(sandbox)).get_json()
    assert production.id not in {e["target_id"] for e in events["audit_events"]}
    gone = client.delete(f"{API}/api_tokens?name=prod", headers=bearer(sandbox))
    assert gone.status_code == 404
    assert client.get(f"{API}/whoami", headers=bearer(production_secret)).status_code == 200


def test_another_organizations_ids_are_404_on_every_method(client, org, make_org, make_token):
    _, ours = make_token(org, name="ours", role="admin")
    theirs_org = make_org(name="Theirs")
    theirs, theirs_secret = make_token(theirs_org, name="theirs")
    for method, response in _every_method(client, ours, theirs.id).items():
        assert response.status_code == 404, method
        assert error_code(response) == "not_found"
    listed = client.get(f"{API}/api_tokens?name=theirs", headers=bearer(ours)).get_json()
    assert listed["api_tokens"] == []
    events = client.get(f"{API}/audit_events", headers=bearer(ours)).get_json()
    assert all(e["target_label"] != "theirs" for e in events["audit_events"])
    assert client.delete(f"{API}/api_tokens?name=theirs", headers=bearer(ours)).status_code == 404
    body = client.get(f"{API}/whoami", headers=bearer(theirs_secret)).get_json()
    assert body["organization"]["name"] == "Theirs"


def test_a_token_made_by_a_token_is_owned_by_the_same_person(client, db, org, make_token):
    _, secret = make_token(org, name="parent", role="admin")
    child = client.post(f"{API}/api_tokens", json={"name": "child"}, headers=bearer(secret))
    assert child.get_json()["created_by"] == "parent"
    body = client.get(f"{API}/whoami", headers=bearer(child.get_json()["token"])).get_json()
    assert body["scopes"] == ["audit:read", "members:read", "tokens:read"]


def test_a_production_token_creates_in_production(client, org, make_token):
    _, production = make_token(org, name="prod admin", environment="production")
    response = client.post(f"{API}/api_tokens", json={"name": "p2"}, headers=bearer(production))
    assert response.status_code == 201
    assert response.get_json()["environment"] == "production"
    assert response.get_json()["token"].startswith("ks_prod_")
    listed = client.get(f"{API}/api_tokens", headers=bearer(production)).get_json()
    assert {t["environment"] for t in listed["api_tokens"]} == {"production"}
