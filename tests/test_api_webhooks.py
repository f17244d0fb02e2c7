"""/api/v1/webhooks (issue 15, SPEC §4 and §9): admin-role tokens of owners and admins
manage the organization's endpoints; the secret is in the create answer only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code

from models import WebhookEndpoint
from services import webhooks
from tests.test_members import actor_for

URL = "https://hooks.example.com/keysmith"


@pytest.fixture
def org(make_org):
    return make_org()


@pytest.fixture
def admin(org, make_token):
    return make_token(org, name="ops", role="admin")[1]


def _create(client, caller, **body):
    return client.post(
        f"{API}/webhooks",
        json={"url": URL, "events": ["token.created"], **body},
        headers=bearer(caller),
    )


def test_create_list_get_change_and_delete_an_endpoint(client, db, org, admin):
    created = _create(client, admin, events=["token.revoked", "token.created"])
    assert created.status_code == 201, created.get_json()
    assert created.headers["Cache-Control"] == "no-store"
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and body["events"] == [
        "token.created",
        "token.revoked",
    ]
    assert body["status"] == "enabled" and created.headers["Location"] == body["href"]
    endpoint = db.session.get(WebhookEndpoint, body["id"])
    assert webhooks.secret_for(endpoint.secret_salt) == body["secret"]

    listed = client.get(f"{API}/webhooks", headers=bearer(admin)).get_json()
    assert [w["id"] for w in listed["webhooks"]] == [body["id"]]
    assert "secret" not in listed["webhooks"][0]
    one = client.get(f"{API}/webhooks/{body['id']}", headers=bearer(admin)).get_json()
    assert "secret" not in one and one["url"] == URL

    changed = client.patch(
        f"{API}/webhooks/{body['id']}", json={"enabled": False}, headers=bearer(admin)
    )
    assert changed.status_code == 200 and changed.get_json()["status"] == "disabled"
    assert changed.get_json()["events"] == ["token.created", "token.revoked"]

    deleted = client.delete(f"{API}/webhooks/{body['id']}", headers=bearer(admin))
    assert deleted.status_code == 204
    assert client.get(f"{API}/webhooks/{body['id']}", headers=bearer(admin)).status_code == 404


def test_deliveries_are_listed_newest_first(client, db, org, admin, make_token):
    endpoint_id = _create(client, admin).get_json()["id"]
    make_token(org, name="one")
    make_token(org, name="two")
    response = client.get(f"{API}/webhooks/{endpoint_id}/deliveries", headers=bearer(admin))
    deliveries = response.get_json()["deliveries"]
    assert [d["event_type"] for d in deliveries] == ["token.created", "token.created"]
    assert deliveries[0]["status"] == "pending" and deliveries[0]["attempts"] == 0


@pytest.mark.parametrize(
    ("url", "field_message"),
    [
        ("https://127.0.0.1/internal-admin/reset", "not allowed"),
        ("https://169.254.169.254/latest/meta-data/", "not allowed"),
        ("https://[::ffff:127.0.0.1]/", "not allowed"),
        ("http://hooks.example.com/", "https://"),
    ],
)
def test_refused_urls_are_validation_errors(client, db, admin, url, field_message):
    response = _create(client, admin, url=url)
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert field_message in response.get_json()["error"]["details"]["url"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


@pytest.mark.parametrize("role", ["writer", "viewer"])
def test_tokens_below_admin_are_403(client, org, make_token, role):
    _, secret = make_token(org, name=role, role=role)
    assert client.get(f"{API}/webhooks", headers=bearer(secret)).status_code == 403
    response = _create(client, secret)
    assert response.status_code == 403 and error_code(response) == "insufficient_scope"


def test_a_narrowed_admin_token_is_403(client, org, make_token):
    _, secret = make_token(org, name="narrow", role="admin", scopes=["tokens:read"])
    assert client.get(f"{API}/webhooks", headers=bearer(secret)).status_code == 403


def test_an_admin_token_of_a_member_is_403(client, db, org, make_member, make_token):
    member = make_member(org, "admin")
    _, secret = make_token(org, actor_for(member), name="theirs", role="admin")
    member.role = "member"  # demoted since: the token does no more than its owner may now
    db.session.commit()
    assert client.get(f"{API}/webhooks", headers=bearer(secret)).status_code == 403


def test_another_organizations_endpoint_is_404(client, db, admin, make_org, make_token):
    other = make_org(name="Other")
    theirs = _create(client, make_token(other, name="x", role="admin")[1]).get_json()["id"]
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"{API}/webhooks/{theirs}", headers=bearer(admin))
        assert response.status_code == 404 and error_code(response) == "not_found"
    assert client.get(f"{API}/webhooks/{theirs}/deliveries", headers=bearer(admin)).status_code == (
        404
    )
    assert db.session.get(WebhookEndpoint, theirs) is not None


def test_unknown_fields_and_forms_are_refused(client, admin):
    response = _create(client, admin, secret="mine")
    assert response.status_code == 400 and response.get_json()["error"]["details"] == {
        "secret": "Unknown field."
    }
    form = client.post(
        f"{API}/webhooks", data={"url": URL, "events": "token.created"}, headers=bearer(admin)
    )
    assert form.status_code == 415
    wrong = _create(client, admin, events=["token.nope"])
    assert wrong.status_code == 400 and "events" in wrong.get_json()["error"]["details"]
