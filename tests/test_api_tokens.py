"""SPEC §4 endpoints on tokens: list, read, create, update, revoke, rotate; and the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code

from models import ApiToken, AuditEvent, utcnow
from services import tokens as token_service
from services.actor import Actor
from tests.conftest import owner_actor

EXPIRY = ("expires_at", "expires_in_days")
TOKEN_FIELDS = {
    "id", "name", "environment", "role", "scopes", "type", "active", "status", "prefix",
    "created_at", "updated_at", "expires_at", "last_used_at", "revoked_at", "created_by",
    "created_by_type", "allowed_ips", "rate_limit", "last_used_ip", "href",
}  # fmt: skip


@pytest.fixture
def org(make_org):
    return make_org(name="Acme")


@pytest.fixture
def caller(org, make_token):
    """An admin token of the sandbox, and its secret; it lives as long as the policy allows,
    so what it creates may expire later than tokens made in a test (delegation bounds a
    child's expiry by its creator's)."""
    return make_token(org, name="caller", role="admin", expires_in_days=365)


def _get(client, secret, path, **kwargs):
    return client.get(f"{API}{path}", headers=bearer(secret), **kwargs)


# ---------------------------------------------------------------- list


def test_list_uses_librato_envelope_and_never_shows_a_secret(client, org, caller, make_token):
    _, secret = caller
    _, other_secret = make_token(org, name="other")
    response = _get(client, secret, "/api_tokens")
    assert response.status_code == 200
    body = response.get_json()
    assert body["query"] == {"found": 2, "length": 2, "offset": 0, "total": 2, "has_more": False}
    assert {t["name"] for t in body["api_tokens"]} == {"caller", "other"}
    for token in body["api_tokens"]:
        assert set(token) == TOKEN_FIELDS
        assert token["created_at"].endswith("Z")
    text = response.get_data(as_text=True)
    assert secret not in text and other_secret not in text


def test_list_pages_with_offset_and_length(client, org, caller, make_token):
    _, secret = caller
    for i in range(4):
        make_token(org, name=f"t{i}")
    body = _get(client, secret, "/api_tokens?offset=1&length=2").get_json()
    assert body["query"] == {"found": 5, "length": 2, "offset": 1, "total": 5, "has_more": True}
    assert len(body["api_tokens"]) == 2
    everything = _get(client, secret, "/api_tokens").get_json()["api_tokens"]
    assert [t["id"] for t in body["api_tokens"]] == [t["id"] for t in everything[1:3]]


@pytest.mark.parametrize(
    "query, field",
    [
        ("length=101", "length"),
        ("length=0", "length"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("status=sleeping", "status"),
        ("colour=blue", "colour"),
    ],
)
def test_list_refuses_bad_paging_and_filters(client, caller, query, field):
    response = _get(client, caller[1], f"/api_tokens?{query}")
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert field in response.get_json()["error"]["details"]


def test_list_filters_by_name_active_status_role_and_type(client, db, org, caller, make_token):
    _, secret = caller
    suspended, _ = make_token(org, name="suspended", role="viewer", type="ci")
    token_service.suspend_token(suspended, owner_actor(org))
    revoked, _ = make_token(org, name="revoked", role="writer")
    token_service.revoke_token(revoked, owner_actor(org))
    expired, _ = make_token(org, name="expired", role="viewer")
    expired.expires_at = utcnow() - timedelta(days=1)
    db.session.commit()

    def names(query):
        response = _get(client, secret, f"/api_tokens?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return sorted(t["name"] for t in response.get_json()["api_tokens"])

    assert names("name=suspended") == ["suspended"]
    assert names("active=false") == ["suspended"]
    assert names("status=active") == ["caller"]
    assert names("status=inactive") == ["suspended"]
    assert names("status=revoked") == ["revoked"]
    assert names("status=expired") == ["expired"]
    assert names("role=viewer") == ["expired", "suspended"]
    assert names("role=recorder") == ["revoked"]
    assert names("type=ci") == ["suspended"]
    body = _get(client, secret, "/api_tokens?role=viewer").get_json()
    assert body["query"]["found"] == 2 and body["query"]["total"] == 4


def test_list_shows_only_the_callers_environment(client, org, caller, make_token):
    make_token(org, name="prod", environment="production")
    body = _get(client, caller[1], "/api_tokens").get_json()
    assert [t["name"] for t in body["api_tokens"]] == ["caller"]
    assert body["query"]["total"] == 1


# ---------------------------------------------------------------- read


def test_get_one_token_with_href(client, org, caller, make_token):
    token, _ = make_token(org, name="read me", role="viewer")
    response = _get(client, caller[1], f"/api_tokens/{token.id}")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == TOKEN_FIELDS
    assert body["href"] == f"http://localhost{API}/api_tokens/{token.id}"
    assert body["prefix"] == token.prefix and body["status"] == "active"
    assert client.get(body["href"], headers=bearer(caller[1])).status_code == 200


def test_get_unknown_id_is_404_not_found(client, caller):
    response = _get(client, caller[1], "/api_tokens/doesnotexist")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


# ---------------------------------------------------------------- create


def test_create_answers_201_with_location_and_the_secret_once(client, db, caller):
    _, secret = caller
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "ci deploy", "role": "writer", "type": "ci", "scopes": ["tokens:read"]},
        headers=bearer(secret),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == TOKEN_FIELDS | {"token"}
    assert response.headers["Location"] == body["href"]
    assert response.headers["Cache-Control"] == "no-store"
    assert body["role"] == "writer" and body["type"] == "ci"
    assert body["scopes"] == ["tokens:read"]
    assert body["created_by"] == "caller"
    # The new secret works, and is never shown again.
    assert _get(client, body["token"], "/whoami").status_code == 200
    again = _get(client, secret, f"/api_tokens/{body['id']}").get_data(as_text=True)
    assert body["token"] not in again
    # The audit log names the token that acted.
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.target_id == body["id"]))
    assert (event.action, event.actor_type, event.actor_label) == (
        "token.created",
        "token",
        "caller",
    )


def test_create_without_expiry_expires_in_90_days(client, caller):
    body = client.post(
        f"{API}/api_tokens", json={"name": "x"}, headers=bearer(caller[1])
    ).get_json()
    assert body["role"] == "viewer" and body["type"] == "generic"
    expected = (utcnow() + timedelta(days=90)).strftime("%Y-%m-%d")
    assert body["expires_at"].startswith(expected)


def test_create_with_expires_in_days_or_an_iso_date(client, caller):
    body = client.post(
        f"{API}/api_tokens", json={"name": "a", "expires_in_days": 30}, headers=bearer(caller[1])
    ).get_json()
    assert body["expires_at"].startswith((utcnow() + timedelta(days=30)).strftime("%Y-%m-%d"))
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "b", "expires_at": "2027-01-02T03:04:05+01:00"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["expires_at"] == "2027-01-02T02:04:05Z"


def test_create_never_expiring_only_where_the_policy_allows(client, db, org, caller, make_token):
    response = client.post(
        f"{API}/api_tokens", json={"name": "forever", "expires_at": None}, headers=bearer(caller[1])
    )
    assert response.status_code == 400
    assert "expires_at" in response.get_json()["error"]["details"]
    org.allow_never_expires = True
    db.session.commit()
    # A token that itself expires cannot make one that never does (SPEC §2)...
    response = client.post(
        f"{API}/api_tokens", json={"name": "forever", "expires_at": None}, headers=bearer(caller[1])
    )
    assert response.status_code == 403
    assert "expires_at" in response.get_json()["error"]["details"]
    # ...one that never expires can.
    _, forever = make_token(org, name="forever-caller", role="admin", expires_in_days=None)
    response = client.post(
        f"{API}/api_tokens", json={"name": "forever", "expires_at": None}, headers=bearer(forever)
    )
    assert response.status_code == 201
    assert response.get_json()["expires_at"] is None


def test_create_accepts_the_recorder_alias_and_its_own_environment(client, caller):
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "rec", "role": "recorder", "environment": "sandbox"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 201
    assert response.get_json()["role"] == "writer"


def test_create_in_another_environment_is_403(client, caller):
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "p", "environment": "production"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_create_names_every_bad_field(client, caller):
    response = client.post(
        f"{API}/api_tokens",
        json={"role": "root", "type": "weird", "expires_in_days": 0, "scopes": ["x"]},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    details = response.get_json()["error"]["details"]
    assert set(details) == {"name", "role", "type", "expires_in_days", "scopes"}


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"name": "", "role": "bad"}, {"name", "role"}),
        ({"name": "   ", "role": "bad"}, {"name", "role"}),
        ({"name": "x" * 101, "role": "bad"}, {"name", "role"}),
        ({"name": "a\u202eb", "role": "bad"}, {"name", "role"}),  # an invisible bidi override
        ({"name": "x", "role": "bad", "expires_in_days": 400}, {"role", "expires_in_days"}),
        ({"name": "x", "role": "bad", "expires_at": None}, {"role", "expires_at"}),
        ({"name": "", "expires_at": "2000-01-01T00:00:00Z"}, {"name", "expires_at"}),
        ({"scopes": ["tokens:write"], "type": "weird", "name": "x"}, {"scopes", "type"}),
        ({"name": "", "expires_at": "2000-01-01T00:00Z", "expires_in_days": 0}, {"name", *EXPIRY}),
    ],
    ids=[
        "empty-name", "blank-name", "long-name", "invisible-name", "days-beyond-policy",
        "never-not-allowed", "expiry-past", "viewer-scopes", "both-expiries",
    ],
)  # fmt: skip
def test_create_names_every_bad_field_rules_of_the_service_included(client, caller, body, fields):
    response = client.post(f"{API}/api_tokens", json=body, headers=bearer(caller[1]))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert error_code(response) == "validation_error"
    assert set(response.get_json()["error"]["details"]) == fields


def test_a_form_create_names_every_bad_field(client, caller):
    response = client.post(
        f"{API}/api_tokens", data={"name": "", "role": "superuser"}, headers=bearer(caller[1])
    )
    assert response.status_code == 400
    details = response.get_json()["error"]["details"]
    assert set(details) == {"name", "role"}
    assert details["name"] == "May not be empty."


def test_a_name_is_trimmed_and_a_control_character_is_named(client, caller):
    response = client.post(
        f"{API}/api_tokens", json={"name": "  deploy  "}, headers=bearer(caller[1])
    )
    assert response.status_code == 201
    assert response.get_json()["name"] == "deploy"
    response = client.post(f"{API}/api_tokens", json={"name": "a\tb"}, headers=bearer(caller[1]))
    assert response.get_json()["error"]["details"] == {
        "name": "May not contain control characters."
    }


def test_create_refuses_unknown_fields(client, caller):
    response = client.post(
        f"{API}/api_tokens", json={"name": "x", "admin": True}, headers=bearer(caller[1])
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"admin": "Unknown field."}


def test_create_refuses_both_expiry_fields(client, caller):
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "x", "expires_in_days": 30, "expires_at": "2027-01-01T00:00:00Z"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    assert {"expires_at", "expires_in_days"} <= set(response.get_json()["error"]["details"])


def test_create_beyond_the_live_token_limit_is_token_limit_reached(client, db, org, caller):
    org.max_live_tokens = 1
    db.session.commit()
    response = client.post(f"{API}/api_tokens", json={"name": "x"}, headers=bearer(caller[1]))
    assert response.status_code == 400
    assert error_code(response) == "token_limit_reached"


def test_create_with_a_name_in_use_is_duplicate_name(client, caller):
    response = client.post(f"{API}/api_tokens", json={"name": "caller"}, headers=bearer(caller[1]))
    assert response.status_code == 400
    assert error_code(response) == "duplicate_name"
    assert "name" in response.get_json()["error"]["details"]


# ---------------------------------------------------------------- update


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_changes_what_is_sent(client, db, org, caller, make_token, method):
    token, _ = make_token(org, name="old", role="writer")
    response = getattr(client, method)(
        f"{API}/api_tokens/{token.id}",
        json={"name": "new", "role": "viewer", "scopes": ["audit:read"]},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["name"], body["role"], body["scopes"]) == ("new", "viewer", ["audit:read"])
    assert body["active"] is True
    event = db.session.scalar(
        sa.select(AuditEvent).where(
            AuditEvent.target_id == token.id, AuditEvent.action == "token.updated"
        )
    )
    assert event.actor_label == "caller"


def test_update_suspends_resumes_and_sets_expiry(client, db, org, caller, make_token):
    token, secret = make_token(org, name="t")
    url = f"{API}/api_tokens/{token.id}"
    body = client.patch(url, json={"active": False}, headers=bearer(caller[1])).get_json()
    assert (body["active"], body["status"]) == (False, "inactive")
    assert error_code(_get(client, secret, "/whoami")) == "token_inactive"
    body = client.patch(url, json={"active": True}, headers=bearer(caller[1])).get_json()
    assert body["status"] == "active"
    # A token may shorten an expiry (both tokens expire in 30 days), never lengthen it.
    sooner = (token.expires_at - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = client.patch(url, json={"expires_at": sooner}, headers=bearer(caller[1])).get_json()
    assert body["expires_at"] == sooner
    actions = db.session.scalars(
        sa.select(AuditEvent.action).where(AuditEvent.target_id == token.id)
    ).all()
    assert {"token.suspended", "token.resumed", "token.updated"} <= set(actions)


def test_update_refuses_unknown_fields_and_bad_values(client, org, caller, make_token):
    token, _ = make_token(org)
    response = client.patch(
        f"{API}/api_tokens/{token.id}",
        json={"type": "ci", "active": "maybe"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) == {"type", "active"}


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"name": "", "role": "bogus"}, {"name", "role"}),
        ({"name": "x" * 101, "active": "maybe"}, {"name", "active"}),
        ({"name": " ", "scopes": ["tokens:write"]}, {"name", "scopes"}),  # the role it keeps
        ({"role": "bogus", "expires_at": "2000-01-01T00:00:00Z"}, {"role", "expires_at"}),
    ],
)
def test_update_names_every_bad_field(client, org, caller, make_token, body, fields):
    token, _ = make_token(org, role="viewer")
    response = client.patch(f"{API}/api_tokens/{token.id}", json=body, headers=bearer(caller[1]))
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) == fields


def test_a_tokens_own_rate_limit_is_set_changed_reset_and_audited(
    client, db, org, caller, make_token
):
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "limited", "rate_limit": "100/minute;10/second"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["rate_limit"] == "100/minute;10/second"
    url = f"{API}/api_tokens/{body['id']}"
    assert client.get(url, headers=bearer(caller[1])).get_json()["rate_limit"] == (
        "100/minute;10/second"
    )
    changed = client.put(url, data={"rate_limit": "5 per 10 seconds"}, headers=bearer(caller[1]))
    assert changed.get_json()["rate_limit"] == "5 per 10 seconds"
    reset = client.patch(url, json={"rate_limit": None}, headers=bearer(caller[1]))
    assert reset.get_json()["rate_limit"] is None  # the organization's default
    events = db.session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.target_id == body["id"], AuditEvent.action == "token.updated")
        .order_by(AuditEvent.id)
    ).all()
    assert [e.details["rate_limit"] for e in events] == [
        {"from": "100/minute;10/second", "to": "5 per 10 seconds"},
        {"from": "5 per 10 seconds", "to": None},
    ]


@pytest.mark.parametrize(
    "value", ["fast", "0/minute", "10/fortnight", "1/minute;", 100, "1/minute;0/second"]
)
def test_a_bad_rate_limit_is_named_with_the_other_bad_fields(
    client, org, caller, make_token, value
):
    response = client.post(
        f"{API}/api_tokens", json={"name": "", "rate_limit": value}, headers=bearer(caller[1])
    )
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) == {"name", "rate_limit"}
    token, _ = make_token(org, name="kept")
    response = client.patch(
        f"{API}/api_tokens/{token.id}", json={"rate_limit": value}, headers=bearer(caller[1])
    )
    assert set(response.get_json()["error"]["details"]) == {"rate_limit"}


def test_a_members_token_cannot_set_the_rate_limit_of_someone_elses_token(
    client, org, make_member, make_token
):
    member = Actor(organization=org, membership=make_member(org, role="member"))
    _, member_secret = make_token(org, member, name="member cli", role="writer")
    others, _ = make_token(org, name="owners")
    response = client.patch(
        f"{API}/api_tokens/{others.id}", json={"rate_limit": "1/day"}, headers=bearer(member_secret)
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_update_unknown_id_is_404(client, caller):
    response = client.put(f"{API}/api_tokens/nope", json={"name": "x"}, headers=bearer(caller[1]))
    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.parametrize(
    "method, suffix, body",
    [("patch", "", {"name": "back"}), ("put", "", {"active": True}), ("post", "/rotate", None)],
)
def test_changing_or_rotating_a_revoked_token_says_it_is_revoked(
    client, db, org, caller, make_token, method, suffix, body
):
    token, _ = make_token(org)
    token_service.revoke_token(token, owner_actor(org))
    db.session.commit()
    response = getattr(client, method)(
        f"{API}/api_tokens/{token.id}{suffix}", json=body, headers=bearer(caller[1])
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    error = response.get_json()["error"]
    assert set(error["details"]) == {"token_id"}
    assert "revoked" in error["message"] and "revoked" in error["details"]["token_id"]


# ---------------------------------------------------------------- revoke


def test_delete_revokes_with_204_and_the_token_stays_listed(client, db, org, caller, make_token):
    token, secret = make_token(org, name="bye")
    response = client.delete(f"{API}/api_tokens/{token.id}", headers=bearer(caller[1]))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert error_code(_get(client, secret, "/whoami")) == "token_revoked"
    body = _get(client, caller[1], f"/api_tokens/{token.id}").get_json()
    assert body["status"] == "revoked" and body["revoked_at"].endswith("Z")
    # Revoking again changes nothing and still answers 204.
    assert (
        client.delete(f"{API}/api_tokens/{token.id}", headers=bearer(caller[1])).status_code == 204
    )
    events = db.session.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.target_id == token.id, AuditEvent.action == "token.revoked"
        )
    ).all()
    assert [e.actor_label for e in events] == ["caller"]


def test_delete_by_name_revokes_the_live_token_or_404(client, db, org, caller, make_token):
    token, _ = make_token(org, name="by name")
    response = client.delete(f"{API}/api_tokens?name=by%20name", headers=bearer(caller[1]))
    assert response.status_code == 204
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).is_revoked
    response = client.delete(f"{API}/api_tokens?name=by%20name", headers=bearer(caller[1]))
    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.parametrize("by", ["id", "name"])
def test_a_204_carries_no_content_type_and_no_body(client, org, caller, make_token, by):
    token, _ = make_token(org, name="no content")
    path = f"/api_tokens/{token.id}" if by == "id" else "/api_tokens?name=no%20content"
    response = client.delete(f"{API}{path}", headers=bearer(caller[1]))
    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert response.get_data() == b""
    assert "X-RateLimit-Limit" in response.headers


def test_delete_by_name_needs_a_name(client, caller):
    response = client.delete(f"{API}/api_tokens", headers=bearer(caller[1]))
    assert response.status_code == 400
    assert "name" in response.get_json()["error"]["details"]


# ---------------------------------------------------------------- rotate


def test_rotate_gives_a_new_secret_and_ends_the_old_one(client, org, caller, make_token):
    token, old = make_token(org, name="r", expires_in_days=30)  # within the caller
    response = client.post(f"{API}/api_tokens/{token.id}/rotate", headers=bearer(caller[1]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    new = response.get_json()["token"]
    assert new != old
    assert _get(client, new, "/whoami").status_code == 200
    assert error_code(_get(client, old, "/whoami")) == "invalid_token"


def test_rotate_with_a_grace_period_keeps_the_old_secret_working(client, org, caller, make_token):
    token, old = make_token(org, name="r", expires_in_days=30)  # within the caller
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"grace_period_seconds": 3600},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 200
    assert _get(client, old, "/whoami").status_code == 200
    assert _get(client, response.get_json()["token"], "/whoami").status_code == 200


def test_rotate_accepts_a_form_body(client, org, caller, make_token):
    token, _ = make_token(org, name="r", expires_in_days=30)  # within the caller
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        data={"grace_period_seconds": "86400"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 200


@pytest.mark.parametrize("grace", [-1, 7 * 86400 + 1, "soon"])
def test_rotate_refuses_a_bad_grace_period(client, org, caller, make_token, grace):
    token, _ = make_token(org, name="r")
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"grace_period_seconds": grace},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    assert "grace_period_seconds" in response.get_json()["error"]["details"]


def _expire(db, token):
    token.expires_at = utcnow() - timedelta(hours=1)
    db.session.commit()


def test_rotating_an_expired_token_without_a_new_expiry_is_refused(
    client, db, org, caller, make_token
):
    """SPEC §2: an expired token is renewed with a new expiry, never rotated into a secret
    that gets token_expired while the answer says the old one keeps working."""
    token, old = make_token(org, name="r", expires_in_days=30)
    _expire(db, token)
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"grace_period_seconds": 3600},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert "expired" in error["details"]["expires_at"]
    assert error_code(_get(client, old, "/whoami")) == "token_expired"  # nothing changed


def test_a_token_cannot_renew_an_expired_token_since_that_lengthens_its_expiry(
    client, db, org, caller, make_token
):
    token, _ = make_token(org, name="r", expires_in_days=30)
    _expire(db, token)
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"expires_in_days": 30},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"
    assert "expires_at" in response.get_json()["error"]["details"]


def test_rotate_may_shorten_the_expiry(client, db, org, caller, make_token):
    token, _ = make_token(org, name="r", expires_in_days=30)
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"expires_in_days": 7, "grace_period_seconds": 3600},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    expires = response.get_json()["expires_at"]
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).expires_at < utcnow() + timedelta(days=8)
    assert expires.endswith("Z")


def test_rotate_refuses_both_expiry_fields(client, org, caller, make_token):
    token, _ = make_token(org, name="r", expires_in_days=30)
    response = client.post(
        f"{API}/api_tokens/{token.id}/rotate",
        json={"expires_in_days": 7, "expires_at": "2099-01-01T00:00:00Z"},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) >= {"expires_at", "expires_in_days"}


# ---------------------------------------------------------------- audit events


def test_audit_events_of_the_callers_environment_newest_first(client, org, caller, make_token):
    make_token(org, name="prod one", environment="production")
    for name in ("a", "b", "c"):
        client.post(f"{API}/api_tokens", json={"name": name}, headers=bearer(caller[1]))
    body = _get(client, caller[1], "/audit_events").get_json()
    events = body["audit_events"]
    assert all(e["environment"] == "sandbox" for e in events)
    assert [e["target_label"] for e in events[:3]] == ["c", "b", "a"]
    assert events[0]["actor"] == {"type": "token", "label": "caller"}
    assert events[0]["created_at"].endswith("Z")
    assert body["query"] == {"found": 4, "length": 4, "offset": 0, "total": 4, "has_more": False}
    page = _get(client, caller[1], "/audit_events?offset=1&length=1").get_json()
    assert page["query"] == {"found": 4, "length": 1, "offset": 1, "total": 4, "has_more": True}
    assert page["audit_events"][0]["id"] == events[1]["id"]
    only = _get(client, caller[1], "/audit_events?action=token.created&length=100").get_json()
    assert only["query"]["found"] == 4
    response = _get(client, caller[1], "/audit_events?length=500")
    assert response.status_code == 400


# ---------------------------------------------------------------- permissions


def test_a_token_without_the_scope_gets_403_insufficient_scope(client, org, make_token):
    _, audit_only = make_token(org, name="auditor", role="viewer", scopes=["audit:read"])
    response = _get(client, audit_only, "/api_tokens")
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"
    assert _get(client, audit_only, "/audit_events").status_code == 200
    _, tokens_only = make_token(org, name="lister", role="viewer", scopes=["tokens:read"])
    assert error_code(_get(client, tokens_only, "/audit_events")) == "insufficient_scope"


def test_a_viewer_token_cannot_write(client, org, make_token):
    target, _ = make_token(org, name="target")
    _, viewer = make_token(org, name="viewer", role="viewer")
    for method, path, body in [
        ("post", "/api_tokens", {"name": "x"}),
        ("patch", f"/api_tokens/{target.id}", {"name": "y"}),
        ("put", f"/api_tokens/{target.id}", {"active": False}),
        ("delete", f"/api_tokens/{target.id}", None),
        ("post", f"/api_tokens/{target.id}/rotate", None),
        ("delete", "/api_tokens?name=target", None),
    ]:
        response = getattr(client, method)(f"{API}{path}", json=body, headers=bearer(viewer))
        assert response.status_code == 403, (method, path)
        assert error_code(response) == "insufficient_scope"


def test_permission_comes_before_validation(client, org, make_token):
    """A viewer token is told 403, never what the key policy or the fields allow."""
    target, _ = make_token(org, name="target")
    _, viewer = make_token(org, name="viewer", role="viewer")
    bad = {"name": "", "expires_in_days": 400, "colour": "red"}
    for method, path, body in [
        ("post", "/api_tokens", bad),
        ("patch", f"/api_tokens/{target.id}", bad),
        ("post", f"/api_tokens/{target.id}/rotate", {"grace_period_seconds": -1}),
    ]:
        response = getattr(client, method)(f"{API}{path}", json=body, headers=bearer(viewer))
        assert response.status_code == 403, (method, path, response.get_data(as_text=True))
        assert error_code(response) == "insufficient_scope"


def test_a_members_token_changes_only_tokens_its_member_created(
    client, org, make_member, make_token
):
    membership = make_member(org, role="member")
    member_actor = Actor(organization=org, membership=membership)
    own, _ = make_token(org, member_actor, name="mine", role="writer")
    _, member_secret = make_token(org, member_actor, name="member cli", role="writer")
    others, _ = make_token(org, name="owners")
    ok = client.patch(
        f"{API}/api_tokens/{own.id}", json={"name": "mine 2"}, headers=bearer(member_secret)
    )
    assert ok.status_code == 200
    refused = client.patch(
        f"{API}/api_tokens/{others.id}", json={"name": "taken"}, headers=bearer(member_secret)
    )
    assert refused.status_code == 403
    assert error_code(refused) == "insufficient_scope"


def test_an_integral_number_written_with_a_fraction_is_an_integer(client, caller):
    """JSON Schema's integer includes 30.0, which some clients send (the document says
    integer; schemathesis found it refused)."""
    response = client.post(
        f"{API}/api_tokens",
        json={"name": "float days", "expires_in_days": 30.0},
        headers=bearer(caller[1]),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    rotated = client.post(
        f"{API}/api_tokens/{response.get_json()['id']}/rotate",
        json={"grace_period_seconds": 60.0},
        headers=bearer(caller[1]),
    )
    assert rotated.status_code == 200
    half = client.post(
        f"{API}/api_tokens",
        json={"name": "half", "expires_in_days": 30.5},
        headers=bearer(caller[1]),
    )
    assert half.status_code == 400
