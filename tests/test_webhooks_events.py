"""Webhook events (issue 15): written in the transaction of the change (an outbox), one
delivery per enabled endpoint that wants the type, payloads without secrets, secrets that
the database alone cannot give, and the migration of the key policy's old URL."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from hot_path_support import owner_actor, worker_config

from app import create_app
from extensions import db as _db
from models import (
    EVENT_TYPES,
    ApiToken,
    AuditEvent,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from services import hygiene, leaks, members, policy, tokens, webhooks
from services.errors import Forbidden, ValidationFailed

ROOT = Path(__file__).resolve().parent.parent


def _events(db, type_: str | None = None) -> list[WebhookEvent]:
    query = sa.select(WebhookEvent).order_by(WebhookEvent.created_at, WebhookEvent.id)
    if type_:
        query = query.where(WebhookEvent.type == type_)
    return list(db.session.scalars(query))


def _deliveries(db, event: WebhookEvent) -> list[WebhookDelivery]:
    return list(
        db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id))
    )


@pytest.fixture
def org(db, make_org):
    return make_org()


@pytest.fixture
def endpoint(db, org):
    endpoint, _ = webhooks.create_endpoint(
        org, owner_actor(org), url="https://hooks.example.com/all", events=list(EVENT_TYPES)
    )
    db.session.commit()
    return endpoint


def test_a_committed_change_has_its_event_and_a_rolled_back_one_never_does(
    db, org, endpoint, make_token
):
    tokens.create_token(
        org,
        owner_actor(org),
        name="rolled back",
        environment="sandbox",
        role="viewer",
        expires_at=tokens.expiry_from_days(30),
    )
    db.session.rollback()
    assert _events(db) == []

    token, secret = make_token(org, name="kept")
    [event] = _events(db, "token.created")
    assert event.payload["data"]["token"]["id"] == token.id
    assert event.payload["id"] == event.id and event.payload["type"] == "token.created"
    [delivery] = _deliveries(db, event)
    assert (delivery.endpoint_id, delivery.status, delivery.attempts) == (
        endpoint.id,
        "pending",
        0,
    )
    assert secret not in json.dumps(event.payload)


def test_every_token_event_names_the_token_and_carries_no_secret(db, org, endpoint, make_token):
    token, first = make_token(org, name="ci")
    second = tokens.rotate_token(token, owner_actor(org), grace_seconds=3600)
    db.session.commit()
    leaks.report_leaks([second])
    db.session.commit()
    types = [e.type for e in _events(db)]
    assert types == ["token.created", "token.rotated", "token.revoked", "token.leaked"]
    for event in _events(db):
        text = json.dumps(event.payload)
        assert first not in text and second not in text
        assert "hash" not in text and token.secret_hash not in text
        assert event.payload["data"]["token"]["prefix"] == token.prefix
        assert set(event.payload) == {"id", "type", "created", "organization_id", "actor", "data"}
    rotated = _events(db, "token.rotated")[0].payload
    assert rotated["data"]["previous_secret_expires_at"].endswith("Z")
    assert rotated["actor"]["type"] == "user"
    assert _events(db, "token.revoked")[0].payload["data"]["reason"] == "leaked"


def test_member_removed_policy_updated_and_expiring_events(
    db, org, endpoint, make_member, make_token
):
    from tests.test_members import actor_for

    member = make_member(org, "member")
    token, _ = make_token(org, actor_for(member), role="writer", expires_in_days=3)
    assert hygiene.notify_expiring() == 1
    members.remove_member(member, owner_actor(org))
    policy.update_policy(
        org,
        owner_actor(org),
        max_live_tokens=5,
        max_lifetime_days=365,
        allow_never_expires=False,
        rate_limit=org.rate_limit,
    )
    db.session.commit()
    [expiring] = _events(db, "token.expiring")
    assert expiring.payload["data"]["token"]["id"] == token.id
    assert expiring.payload["actor"] == {"type": "system", "label": "expiry check"}
    [removed] = _events(db, "member.removed")
    assert removed.payload["data"] == {
        "member": {"id": member.id, "email": member.user.email, "role": "member"},
        "revoked_token_ids": [token.id],
    }
    from blueprints.api.schemas import EVENT_MODELS

    EVENT_MODELS["member.removed"].model_validate(removed.payload)
    [updated] = _events(db, "policy.updated")
    assert updated.payload["data"]["changes"]["max_live_tokens"] == {"from": 100, "to": 5}


def test_only_enabled_endpoints_of_the_organization_that_want_the_type_get_it(
    db, org, make_org, make_token
):
    actor = owner_actor(org)
    wants, _ = webhooks.create_endpoint(
        org, actor, url="https://a.example.com/", events=["token.created"]
    )
    webhooks.create_endpoint(org, actor, url="https://b.example.com/", events=["token.revoked"])
    webhooks.create_endpoint(
        org, actor, url="https://c.example.com/", events=["token.created"], enabled=False
    )
    other = make_org(name="Other")
    webhooks.create_endpoint(
        other, owner_actor(other), url="https://d.example.com/", events=["token.created"]
    )
    db.session.commit()
    make_token(org)
    [event] = _events(db)
    assert [d.endpoint_id for d in _deliveries(db, event)] == [wants.id]
    assert event.organization_id == org.id


def test_no_endpoint_no_rows(db, org, make_token):
    make_token(org)
    assert _events(db) == []


def test_the_secret_is_shown_once_derived_never_stored(app, db, org):
    endpoint, secret = webhooks.create_endpoint(
        org, owner_actor(org), url="https://hooks.example.com/x", events=["token.created"]
    )
    db.session.commit()
    assert secret.startswith("whsec_") and len(secret) == 6 + 64
    row = db.session.execute(
        sa.select(WebhookEndpoint.__table__).where(WebhookEndpoint.id == endpoint.id)
    ).one()
    assert all(secret[6:] not in str(value) for value in row)
    assert webhooks.secret_for(endpoint.secret_salt) == secret
    app.config["WEBHOOK_SIGNING_KEY"] = "another server key"
    assert webhooks.secret_for(endpoint.secret_salt) != secret  # the database alone: no secret
    audit = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "webhook.created"))
    assert "hooks.example.com" not in json.dumps(audit.details)
    assert audit.target_label == endpoint.id  # not the host: a subdomain can be a secret too


def test_rolling_keeps_the_old_secret_signing_for_24_hours(db, org):
    from datetime import timedelta

    from models import utcnow

    endpoint, old = webhooks.create_endpoint(
        org, owner_actor(org), url="https://hooks.example.com/x", events=["token.created"]
    )
    now = utcnow()
    new = webhooks.roll_secret(endpoint, owner_actor(org), now=now)
    assert new != old
    assert webhooks.signing_secrets(endpoint, now + timedelta(hours=23)) == [new, old]
    assert webhooks.signing_secrets(endpoint, now + timedelta(hours=24, seconds=1)) == [new]
    header = webhooks.sign(b"{}", [new, old], 1700000000)
    assert header.startswith("t=1700000000,v1=") and header.count("v1=") == 2


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_manage_endpoints(db, org, make_member, role):
    from tests.test_members import actor_for

    with pytest.raises(Forbidden):
        webhooks.create_endpoint(
            org,
            actor_for(make_member(org, role)),
            url="https://hooks.example.com/",
            events=["token.created"],
        )


def test_bad_endpoints_name_every_wrong_field(db, org):
    with pytest.raises(ValidationFailed) as exc:
        webhooks.create_endpoint(
            org, owner_actor(org), url="ftp://x", events=["token.nope"], enabled="yes"
        )
    assert set(exc.value.details) == {"url", "events", "enabled"}
    with pytest.raises(ValidationFailed):
        webhooks.create_endpoint(org, owner_actor(org), url="https://x.example/", events=[])


# ---------------------------------------------------------------- the migration of 0004


def test_the_policy_url_migrates_into_an_endpoint_that_keeps_its_secret(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    app = create_app(worker_config(url), instance_path=str(tmp_path / "inst"))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="0002")
        with _db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, name, created_at, max_live_tokens, "
                    "max_lifetime_days, allow_never_expires, rate_limit, webhook_url) VALUES "
                    "(7, 'Old', '2026-01-01 00:00:00', 100, 365, 0, '10/second', :url), "
                    "(8, 'None', '2026-01-01 00:00:00', 100, 365, 0, '10/second', NULL)"
                ),
                {"url": "https://hooks.example.com/old"},
            )
        upgrade(directory=str(ROOT / "migrations"), revision="0004")
        [endpoint] = _db.session.scalars(sa.select(WebhookEndpoint)).all()
        assert (endpoint.organization_id, endpoint.url, endpoint.events, endpoint.enabled) == (
            7,
            "https://hooks.example.com/old",
            ["token.expiring"],
            True,
        )
        # The receiver keeps the secret it had: HMAC(key, "keysmith webhook <org id>").
        key = app.config["TOKEN_HMAC_KEY"].encode()
        legacy = hmac.new(key, b"keysmith webhook 7", hashlib.sha256).hexdigest()
        assert webhooks.secret_for(endpoint.secret_salt) == legacy
        assert "webhook_url" not in sa.inspect(_db.engine).get_columns("organizations")
        _db.session.remove()

        downgrade(directory=str(ROOT / "migrations"), revision="0002")
        with _db.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, webhook_url FROM organizations ORDER BY id"))
            assert rows.all() == [(7, "https://hooks.example.com/old"), (8, None)]
        _db.engine.dispose()


def test_token_rows_keep_no_webhook_state(db):
    assert "expiry_webhook_sent_at" not in ApiToken.__table__.columns


def test_every_payload_is_what_the_openapi_document_says(client, db, org, endpoint, make_token):
    """Each event type has its body in the document's `webhooks`; real payloads validate
    against those models, which forbid any field they do not name."""
    from blueprints.api.schemas import EVENT_MODELS

    doc = client.get("/api/v1/openapi.json").get_json()
    assert set(doc["webhooks"]) == {*EVENT_TYPES, "ping"}
    token, _ = make_token(org, expires_in_days=3)
    tokens.rotate_token(token, owner_actor(org), grace_seconds=60)
    hygiene.notify_expiring()
    policy.update_policy(
        org,
        owner_actor(org),
        max_live_tokens=9,
        max_lifetime_days=365,
        allow_never_expires=False,
        rate_limit=org.rate_limit,
    )
    tokens.revoke_token(token, owner_actor(org), reason="leaked")
    webhooks.send_test_event(endpoint, owner_actor(org))
    db.session.commit()
    seen = set()
    for event in _events(db):
        EVENT_MODELS[event.type].model_validate(event.payload)
        schema = doc["webhooks"][event.type]["post"]["requestBody"]["content"]
        assert schema["application/json"]["schema"]["$ref"].endswith(
            EVENT_MODELS[event.type].__name__
        )
        seen.add(event.type)
    assert seen == {*EVENT_TYPES} - {"member.removed"} | {"ping"}
