"""The 5-second delivery timeout is a wall-clock limit (security review of issue 15): a
receiver that trickles its answer a byte at a time, within every socket timeout, still
ends the delivery in about 5 s as a failure; and a worker whose claim has run out neither
posts nor records over the worker that claimed the delivery after it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hot_path_support import owner_actor
from webhook_support import start_receiver, start_trickler

from models import WebhookDelivery, utcnow
from services import outbound, webhooks

# A status line and headers, a byte every 0.5 s: 20 s in all, each read well in time.
TRICKLED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def app_config():
    return {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_ALLOW_HTTP": True}


@pytest.fixture
def org(make_org):
    return make_org()


@pytest.fixture
def trickler():
    trickler = start_trickler(TRICKLED, interval=0.5)
    yield trickler
    trickler.stop()


@pytest.fixture
def receiver():
    receiver = start_receiver()
    yield receiver
    receiver.stop()


def _delivery(db) -> WebhookDelivery:
    db.session.expire_all()
    return db.session.scalars(sa.select(WebhookDelivery)).one()


def test_a_trickling_receiver_ends_the_delivery_in_5_seconds_as_a_failure(db, org, trickler):
    endpoint, _ = webhooks.create_endpoint(
        org, owner_actor(org), url=trickler.url(), events=["token.created"]
    )
    webhooks.send_test_event(endpoint, owner_actor(org))
    db.session.commit()
    started = time.monotonic()
    run = webhooks.deliver_due()
    elapsed = time.monotonic() - started
    assert run.retrying == 1 and trickler.connections == 1
    assert elapsed <= 6, elapsed
    delivery = _delivery(db)
    assert (delivery.status, delivery.last_status_code) == ("pending", None)
    assert delivery.last_error == "timed out"
    assert 4500 <= delivery.last_duration_ms <= 6000


def test_a_trickled_tls_handshake_is_cut_at_the_deadline_too(app):
    # A TLS record header promising 16 KiB of handshake, then its bytes one by one.
    trickler = start_trickler(b"\x16\x03\x03\x40\x00" + b"\x02" * 100, interval=0.2)
    try:
        started = time.monotonic()
        result = outbound.post(trickler.url(scheme="https"), b"{}", {}, timeout=1.0)
        assert time.monotonic() - started < 1.6
        assert not result.ok and result.error == "timed out"
    finally:
        trickler.stop()


def test_the_deadline_counts_the_lookup(app, monkeypatch, receiver):
    real = outbound._resolve

    def slow(host, port, timeout, *args, **kwargs):
        time.sleep(0.6)
        return real(host, port, timeout, *args, **kwargs)

    monkeypatch.setattr(outbound, "_resolve", slow)
    receiver.delay = 2
    started = time.monotonic()
    result = outbound.post(receiver.url(), b"{}", {}, timeout=1.0)
    assert time.monotonic() - started < 1.4  # not 0.6 + a fresh 1.0
    assert result.error == "timed out"


def test_the_lease_outlasts_a_whole_batch():
    batch = webhooks.BATCH * outbound.TIMEOUT_SECONDS
    assert 3 * timedelta(seconds=batch) + webhooks.POST_MARGIN <= webhooks.LEASE


def test_a_worker_whose_claim_ran_out_does_not_post_the_attempt_another_worker_has(
    db, org, receiver
):
    endpoint, _ = webhooks.create_endpoint(
        org, owner_actor(org), url=receiver.url(), events=["token.created"]
    )
    webhooks.send_test_event(endpoint, owner_actor(org))
    db.session.commit()
    start = utcnow()
    first = webhooks.claim(start)  # worker A, stalled until its lease is over
    later = start + webhooks.LEASE + timedelta(seconds=1)
    second = webhooks.claim(later)  # worker B
    assert list(first) == list(second) and list(second.values()) == [2]

    assert webhooks.deliver_claimed(first, later).attempted == 0  # A checks first
    assert receiver.requests == []
    assert webhooks.deliver_claimed(second, later).succeeded == 1
    assert len(receiver.requests) == 1
    assert webhooks.deliver_claimed(first, later).attempted == 0  # nor once B is done
    assert len(receiver.requests) == 1


def test_a_claim_near_the_end_of_its_lease_is_not_posted(db, org, receiver):
    endpoint, _ = webhooks.create_endpoint(
        org, owner_actor(org), url=receiver.url(), events=["token.created"]
    )
    webhooks.send_test_event(endpoint, owner_actor(org))
    db.session.commit()
    start = utcnow()
    claimed = webhooks.claim(start)
    late = start + webhooks.LEASE - webhooks.POST_MARGIN + timedelta(seconds=1)
    assert webhooks.deliver_claimed(claimed, late).attempted == 0
    assert receiver.requests == []


def test_a_late_answer_does_not_overwrite_the_attempt_of_the_worker_after(db, org, receiver):
    endpoint, _ = webhooks.create_endpoint(
        org, owner_actor(org), url=receiver.url(), events=["token.created"]
    )
    webhooks.send_test_event(endpoint, owner_actor(org))
    db.session.commit()
    start = utcnow()
    [(delivery_id, attempts)] = webhooks.claim(start).items()  # worker A posts, slowly
    late_attempt = webhooks._attempt(db.session.get(WebhookDelivery, delivery_id), attempts)
    db.session.rollback()
    later = start + webhooks.LEASE + timedelta(seconds=1)
    assert webhooks.deliver_due(later).succeeded == 1  # worker B, after A's lease

    failure = outbound.Result(None, b"", 5000, "timed out")
    assert webhooks._record_result(late_attempt, failure, later) == "lost"
    delivery = _delivery(db)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 2, 200)
    assert delivery.last_error is None
