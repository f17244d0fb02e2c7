"""No webhook URL, nor its host, in the audit log every role reads (security review of
issue 15): events written now name the endpoint by id, and migration 0006 scrubs the
`policy.updated` events of earlier versions, whose `webhook_url` held both full URLs."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from hot_path_support import owner_actor, worker_config

from app import create_app
from extensions import db as _db
from models import AuditEvent
from services import policy, webhooks

ROOT = Path(__file__).resolve().parent.parent
SECRET_URL = "https://u-4f9a2c.hooks.example.com/T0/B0/xoxsecret"


def test_no_audit_event_written_now_carries_the_url_or_its_host(db, make_org):
    org = make_org()
    actor = owner_actor(org)
    endpoint, _ = webhooks.create_endpoint(org, actor, url=SECRET_URL, events=["token.created"])
    webhooks.update_endpoint(
        endpoint, actor, url="https://u-77.hooks.example.com/x", events=["token.created"]
    )
    webhooks.roll_secret(endpoint, actor)
    webhooks.reveal_secret(endpoint, actor)
    delivery = webhooks.send_test_event(endpoint, actor)
    webhooks.redeliver(delivery, actor)
    policy.update_policy(
        org,
        actor,
        max_live_tokens=9,
        max_lifetime_days=365,
        allow_never_expires=False,
        rate_limit=org.rate_limit,
    )
    webhooks.delete_endpoint(endpoint, actor)
    db.session.commit()
    events = db.session.scalars(sa.select(AuditEvent)).all()
    assert {e.action for e in events} >= {
        "webhook.created",
        "webhook.updated",
        "webhook.secret_rolled",
        "webhook.secret_revealed",
        "webhook.redelivered",
        "webhook.deleted",
        "policy.updated",
    }
    for event in events:
        text = json.dumps([event.target_label, event.details])
        assert "hooks.example.com" not in text and "u-4f9a2c" not in text, event.action
    assert {e.target_label for e in events if e.target_type == "webhook"} == {endpoint.id}


@pytest.fixture
def old_database(backend, tmp_path):
    """An empty database of its own (the migration is the test), on each backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    admin = sa.make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
    name = f"keysmith_0006_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def test_migration_0006_scrubs_webhook_urls_from_old_audit_events(old_database, tmp_path):
    app = create_app(worker_config(old_database), instance_path=str(tmp_path / "inst"))
    migrations = str(ROOT / "migrations")
    with app.app_context():
        upgrade(directory=migrations, revision="0005")
        events = sa.table(
            "audit_events",
            sa.column("id", sa.Integer),
            sa.column("organization_id", sa.Integer),
            sa.column("actor_type", sa.String),
            sa.column("actor_label", sa.String),
            sa.column("action", sa.String),
            sa.column("target_type", sa.String),
            sa.column("target_id", sa.String),
            sa.column("target_label", sa.String),
            sa.column("details", sa.JSON),
            sa.column("created_at", sa.DateTime),
        )
        with _db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, name, created_at, max_live_tokens, "
                    "max_lifetime_days, allow_never_expires, rate_limit) VALUES "
                    "(1, 'Old', '2026-01-01 00:00:00', 100, 365, false, '10/second')"
                )
            )
            common = {
                "organization_id": 1,
                "actor_type": "user",
                "actor_label": "owner@example.com",
                "created_at": datetime(2026, 1, 1),
            }
            conn.execute(
                sa.insert(events),
                [
                    {
                        **common,
                        "id": 1,
                        "action": "policy.updated",
                        "target_type": "policy",
                        "target_id": "1",
                        "target_label": "Old",
                        "details": {
                            "webhook_url": {"from": None, "to": SECRET_URL},
                            "max_live_tokens": {"from": 100, "to": 9},
                        },
                    },
                    {
                        **common,
                        "id": 2,
                        "action": "policy.updated",
                        "target_type": "policy",
                        "target_id": "1",
                        "target_label": "Old",
                        "details": {"max_live_tokens": {"from": 9, "to": 10}},
                    },
                    {
                        **common,
                        "id": 3,
                        "action": "webhook.created",
                        "target_type": "webhook",
                        "target_id": "we_0123456789abcdef",
                        "target_label": "u-4f9a2c.hooks.example.com",
                        "details": {"events": ["ping"]},
                    },
                ],
            )
        upgrade(directory=migrations)
        with _db.engine.connect() as conn:
            rows = {
                row.id: (row.target_label, row.details)
                for row in conn.execute(
                    sa.select(events.c.id, events.c.target_label, events.c.details)
                )
            }
        _db.session.remove()
        _db.engine.dispose()
    assert rows == {
        1: ("Old", {"webhook_url": "changed", "max_live_tokens": {"from": 100, "to": 9}}),
        2: ("Old", {"max_live_tokens": {"from": 9, "to": 10}}),
        3: ("we_0123456789abcdef", {"events": ["ping"]}),
    }
