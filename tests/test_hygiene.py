"""Expiring and unused tokens, the `token.expiring` audit event and the signed webhook."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import sqlalchemy as sa

from models import AuditEvent, utcnow
from services import hygiene


@pytest.fixture
def app_config():
    """The receiver listens on loopback: these tests opt in as an operator would."""
    return {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_ALLOW_HTTP": True}


@pytest.fixture
def webhook_receiver():
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_expiring_tokens_are_noted_once_and_posted_signed(
    db, make_org, make_token, webhook_receiver
):
    url, received = webhook_receiver
    org = make_org(webhook_url=url)
    soon, _ = make_token(org, name="soon", expires_in_days=3)
    make_token(org, name="later", expires_in_days=30)

    notices = hygiene.notify_expiring()
    db.session.commit()
    assert notices.tokens == 1
    assert notices.deliver() == 1
    db.session.commit()

    events = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "token.expiring")
    ).all()
    assert [(e.target_id, e.actor_label) for e in events] == [(soon.id, "expiry check")]
    headers, body = received[0]
    payload = json.loads(body)
    assert payload["type"] == "token.expiring"
    assert [t["name"] for t in payload["tokens"]] == ["soon"]
    timestamp, signature = (
        part.split("=", 1)[1] for part in headers["Keysmith-Signature"].split(",")
    )
    expected = hmac.new(
        hygiene.webhook_secret(org).encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(signature, expected)

    # Run again (as cron would): nothing new.
    again = hygiene.notify_expiring()
    assert again.tokens == 0 and again.webhooks == []


def test_a_notice_that_did_not_arrive_is_sent_again_by_the_next_run(
    db, make_org, make_token, webhook_receiver
):
    url, received = webhook_receiver
    org = make_org(webhook_url="http://127.0.0.1:9/nothing-listens")
    soon, _ = make_token(org, name="soon", expires_in_days=1)
    notices = hygiene.notify_expiring()
    db.session.commit()
    assert notices.tokens == 1 and notices.deliver() == 0  # reported, not raised
    db.session.commit()

    org.webhook_url = url  # the receiver is back
    db.session.commit()
    retry = hygiene.notify_expiring()
    db.session.commit()
    assert retry.tokens == 0  # audited once only
    assert retry.deliver() == 1
    db.session.commit()
    assert [t["id"] for t in json.loads(received[0][1])["tokens"]] == [soon.id]
    events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "token.expiring"))
    assert len(events.all()) == 1

    # Delivered: the run after that sends nothing.
    assert hygiene.notify_expiring().webhooks == []


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


def test_the_webhook_secret_survives_a_token_key_rotation_when_pinned(app, make_org):
    org = make_org()
    before = hygiene.webhook_secret(org)
    old_key = app.config["TOKEN_HMAC_KEY"]
    app.config.update(TOKEN_HMAC_KEY="a-new-key", TOKEN_HMAC_OLD_KEYS=[old_key])
    app.config["WEBHOOK_SIGNING_KEY"] = old_key  # docs/security.md, step 0
    assert hygiene.webhook_secret(org) == before
    app.config["WEBHOOK_SIGNING_KEY"] = "a-new-key"
    assert hygiene.webhook_secret(org) != before
