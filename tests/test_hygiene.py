"""Expiring and unused tokens, the `token.expiring` audit event and the signed webhook."""

from datetime import timedelta

import sqlalchemy as sa

from models import AuditEvent, WebhookDelivery, WebhookEvent, utcnow
from services import hygiene, webhooks
from services.actor import system_actor


def test_expiring_tokens_are_noted_once_and_queued_for_the_endpoints_that_want_it(
    db, make_org, make_token
):
    org = make_org()
    wants, _ = webhooks.create_endpoint(
        org, system_actor(org), url="https://hooks.example.com/a", events=["token.expiring"]
    )
    webhooks.create_endpoint(
        org, system_actor(org), url="https://hooks.example.com/b", events=["token.created"]
    )
    db.session.commit()
    soon, _ = make_token(org, name="soon", expires_in_days=3)
    make_token(org, name="later", expires_in_days=30)

    assert hygiene.notify_expiring() == 1
    db.session.commit()

    events = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "token.expiring")
    ).all()
    assert [(e.target_id, e.actor_label) for e in events] == [(soon.id, "expiry check")]
    [event] = db.session.scalars(
        sa.select(WebhookEvent).where(WebhookEvent.type == "token.expiring")
    ).all()
    assert event.payload["data"]["token"]["name"] == "soon"
    deliveries = db.session.scalars(
        sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
    ).all()
    assert [d.endpoint_id for d in deliveries] == [wants.id]

    # Run again (as cron would): nothing new.
    assert hygiene.notify_expiring() == 0


def test_unused_and_expiring_predicates(db, make_org, make_token):
    org = make_org()
    now = utcnow()
    token, _ = make_token(org, expires_in_days=5)
    assert hygiene.is_expiring(token, now)
    assert not hygiene.is_unused(token, now)  # too new to call unused
    assert hygiene.is_unused(token, now + timedelta(days=31))
    token.last_used_at = now + timedelta(days=20)
    assert not hygiene.is_unused(token, now + timedelta(days=31))
    from models import ApiToken

    make_token(org, name="far", expires_in_days=60)
    expiring = db.session.scalars(sa.select(ApiToken.name).where(hygiene.expiring_filter(now)))
    assert list(expiring) == [token.name]  # the SQL filter agrees with the predicate
    unused = db.session.scalars(
        sa.select(ApiToken.name).where(hygiene.unused_filter(now + timedelta(days=31)))
    )
    assert sorted(unused) == ["far"]  # `token` was used on day 20
