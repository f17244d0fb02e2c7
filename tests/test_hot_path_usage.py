"""Last used and requests per day (SPEC §2): buffered per worker, no write per request,
written by a flush that adds up across flushes and workers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hot_path_support import statements, worker_config, writes

from app import create_app
from extensions import db as _db
from models import ApiToken, TokenUsage
from services import tokens, usage


def usage_rows(db, token_id: str) -> dict:
    return {
        row.day: row.count
        for row in db.session.scalars(sa.select(TokenUsage).where(TokenUsage.token_id == token_id))
    }


def fresh(db, token_id: str) -> ApiToken:
    db.session.expire_all()
    return db.session.get(ApiToken, token_id)


def test_requests_write_nothing_until_the_flush(make_org, make_token, db):
    org = make_org()
    token, secret = make_token(org)
    token_id = token.id
    at = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

    with statements(db.engine) as seen:
        for i in range(50):
            verified = tokens.verify(secret)
            usage.record_use(verified, f"10.0.0.{i % 3}", now=at + timedelta(seconds=i))

    assert writes(seen) == []
    assert usage_rows(db, token_id) == {}
    assert fresh(db, token_id).last_used_at is None

    assert usage.flush() == 1

    assert usage_rows(db, token_id) == {at.date(): 50}
    token = fresh(db, token_id)
    assert token.last_used_at == at + timedelta(seconds=49)
    assert token.last_used_ip == "10.0.0.1"


def test_flushes_add_up_per_day(make_org, make_token, db):
    org = make_org()
    token, _ = make_token(org)
    monday = datetime(2026, 5, 4, 23, 59, tzinfo=UTC)
    tuesday = monday + timedelta(minutes=2)

    for _ in range(3):
        usage.record_use(token, "10.0.0.1", now=monday)
    usage.flush()
    for _ in range(2):
        usage.record_use(token, "10.0.0.1", now=monday)
    usage.record_use(token, "10.0.0.2", now=tuesday)
    usage.flush()

    assert usage_rows(db, token.id) == {monday.date(): 5, tuesday.date(): 1}
    assert fresh(db, token.id).last_used_ip == "10.0.0.2"


def test_an_older_flush_does_not_move_last_used_back(make_org, make_token, db):
    org = make_org()
    token, _ = make_token(org)
    newer = datetime(2026, 5, 4, 12, 5, tzinfo=UTC)
    usage.record_use(token, "10.0.0.9", now=newer)
    usage.flush()

    usage.record_use(token, "10.0.0.1", now=newer - timedelta(minutes=1))
    usage.flush()

    token = fresh(db, token.id)
    assert (token.last_used_at, token.last_used_ip) == (newer, "10.0.0.9")
    assert usage_rows(db, token.id) == {newer.date(): 2}


def test_two_workers_counts_add_up(make_org, make_token, db, backend, database_urls, tmp_path):
    org = make_org()
    token, secret = make_token(org)
    token_id = token.id
    other = create_app(worker_config(database_urls[backend]), instance_path=str(tmp_path / "w2"))
    at = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

    for _ in range(7):
        usage.record_use(tokens.verify(secret), "10.0.0.1", now=at)
    with other.app_context():
        for _ in range(5):
            usage.record_use(tokens.verify(secret), "10.0.0.2", now=at + timedelta(seconds=1))
        usage.flush()
        _db.session.remove()
        _db.engine.dispose()
    usage.flush()

    assert usage_rows(db, token_id) == {at.date(): 12}
    assert fresh(db, token_id).last_used_ip == "10.0.0.2"


def test_a_request_after_the_interval_has_the_flush_thread_write(make_org, make_token, db):
    org = make_org()
    token, _ = make_token(org)
    token_id = token.id
    usage.record_use(token, "10.0.0.1")
    assert usage_rows(db, token_id) == {}

    usage._buffer().next_flush = time.monotonic() - 1  # a minute has passed
    usage.record_use(token, "10.0.0.1")

    deadline = time.monotonic() + 10
    while sum(usage_rows(db, token_id).values()) < 2:
        assert time.monotonic() < deadline, "the flush thread never wrote the usage"
        time.sleep(0.05)
        db.session.rollback()  # see the other connection's commit
    assert usage.pending() == 0
    # Written by the worker's own thread, never by the request's (issue 16).
    assert usage._buffer().flushed_by == "keysmith-usage-flush"


def test_usage_of_a_token_gone_from_the_database_is_dropped(make_org, make_token, db):
    org = make_org()
    token, _ = make_token(org)

    class Gone:
        id = "NoSuchToken00000"

    usage.record_use(Gone(), "10.0.0.1")
    usage.record_use(token, "10.0.0.1")
    usage.flush()

    assert sum(usage_rows(db, token.id).values()) == 1
    assert usage.pending() == 0


def test_flush_with_nothing_buffered_writes_nothing(app, db):
    with statements(db.engine) as seen:
        assert usage.flush() == 0
    assert seen == []


def _whoami(client, secret: str):
    response = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    return response


def test_api_requests_write_nothing_until_the_flush(client, make_org, make_token, db):
    org = make_org()
    token, secret = make_token(org)
    token_id = token.id

    with statements(db.engine) as seen:
        statuses = [_whoami(client, secret).status_code for _ in range(10)]

    assert statuses == [200] * 10
    assert writes(seen) == []
    assert usage_rows(db, token_id) == {}

    usage.flush()

    assert sum(usage_rows(db, token_id).values()) == 10
    assert fresh(db, token_id).last_used_ip == "127.0.0.1"


def test_api_refuses_a_revoked_token_at_once(client, make_org, make_token, db):
    from hot_path_support import owner_actor

    org = make_org()
    token, secret = make_token(org)
    assert _whoami(client, secret).status_code == 200

    tokens.revoke_token(token, owner_actor(org))
    db.session.commit()

    response = _whoami(client, secret)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "token_revoked"


def test_a_token_that_goes_quiet_is_still_written_within_the_interval(make_org, make_token, db):
    """The worker's timer writes what it holds, even when no further request comes."""
    usage._buffer().interval = 0.3  # this app's worker flushes every 0.3 s instead of 60
    org = make_org()
    token, secret = make_token(org)
    token_id = token.id
    for _ in range(5):
        usage.record_use(tokens.verify(secret), "198.51.100.9")
    deadline = time.monotonic() + 10
    while sum(usage_rows(db, token_id).values()) < 5:
        assert time.monotonic() < deadline, "the timer never wrote the usage"
        time.sleep(0.1)
        db.session.rollback()  # see the other connection's commit
    assert fresh(db, token_id).last_used_ip == "198.51.100.9"
