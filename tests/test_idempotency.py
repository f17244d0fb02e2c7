"""Idempotency-Key on create and rotate (SPEC §4): a retry gets the first answer again,
secret included; another request with the key is refused; what is stored opens only with
the client's key; concurrent retries make one token."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code

from models import ApiToken, AuditEvent, IdempotencyKey, utcnow
from services import idempotency


@pytest.fixture
def org(make_org):
    return make_org(name="Acme")


@pytest.fixture
def caller(org, make_token):
    return make_token(org, name="caller", role="admin", expires_in_days=365)


def _create(client, secret, key, body=None, **kwargs):
    headers = {**bearer(secret), "Idempotency-Key": key}
    return client.post(f"{API}/api_tokens", json=body or {"name": "ci"}, headers=headers, **kwargs)


def _named(db, name):
    return db.session.scalars(sa.select(ApiToken).where(ApiToken.name == name)).all()


def test_a_retry_gets_the_first_answer_with_its_secret(client, db, caller):
    _, secret = caller
    key = str(uuid.uuid4())
    first = _create(client, secret, key)
    again = _create(client, secret, key)

    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.get_json()["token"] == first.get_json()["token"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Cache-Control"] == "no-store"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(_named(db, "ci")) == 1
    # The secret of the replayed answer is the token's.
    me = client.get(f"{API}/whoami", headers=bearer(again.get_json()["token"]))
    assert me.status_code == 200 and me.get_json()["token"]["name"] == "ci"


def test_the_same_json_written_otherwise_is_the_same_request(client, db, caller):
    _, secret = caller
    headers = {**bearer(secret), "Idempotency-Key": "k-1", "Content-Type": "application/json"}
    first = client.post(
        f"{API}/api_tokens", data='{"name": "ci", "role": "viewer"}', headers=headers
    )
    again = client.post(f"{API}/api_tokens", data='{"role":"viewer","name":"ci"}', headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json()["token"] == first.get_json()["token"]


def test_the_same_key_with_another_body_is_refused(client, db, caller):
    _, secret = caller
    assert _create(client, secret, "k-2", {"name": "one"}).status_code == 201
    other = _create(client, secret, "k-2", {"name": "two"})
    assert other.status_code == 400 and error_code(other) == "idempotency_mismatch"
    assert _named(db, "two") == []


def test_a_create_key_used_on_rotate_is_refused(client, db, caller, org, make_token):
    _, secret = caller
    target, _ = make_token(org, name="target", expires_in_days=30)
    assert _create(client, secret, "k-3").status_code == 201
    rotated = client.post(
        f"{API}/api_tokens/{target.id}/rotate",
        json={},
        headers={**bearer(secret), "Idempotency-Key": "k-3"},
    )
    assert rotated.status_code == 400 and error_code(rotated) == "idempotency_mismatch"


def test_a_retried_rotate_rotates_once_and_answers_the_same_secret(
    client, db, caller, org, make_token
):
    _, secret = caller
    target, old_secret = make_token(org, name="target", expires_in_days=30)
    headers = {**bearer(secret), "Idempotency-Key": "rotate-1"}
    body = {"grace_period_seconds": 0}
    first = client.post(f"{API}/api_tokens/{target.id}/rotate", json=body, headers=headers)
    again = client.post(f"{API}/api_tokens/{target.id}/rotate", json=body, headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.get_json()["token"] == first.get_json()["token"]
    rotations = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == "token.rotated", AuditEvent.target_id == target.id)
    )
    assert rotations == 1
    assert client.get(f"{API}/whoami", headers=bearer(first.get_json()["token"])).status_code == 200
    assert client.get(f"{API}/whoami", headers=bearer(old_secret)).status_code == 401


def test_keys_are_per_calling_token(client, db, org, caller, make_token):
    _, secret = caller
    _, other_secret = make_token(org, name="other caller", role="admin")
    mine = _create(client, secret, "shared-key", {"name": "mine"})
    theirs = _create(client, other_secret, "shared-key", {"name": "mine-too"})
    assert mine.status_code == theirs.status_code == 201
    assert theirs.get_json()["token"] != mine.get_json()["token"]


def test_a_validation_error_is_stored_and_answered_again(client, db, caller, org, make_token):
    _, secret = caller
    make_token(org, name="taken")
    first = _create(client, secret, "k-4", {"name": "taken"})
    assert first.status_code == 400 and error_code(first) == "duplicate_name"
    # Even once the name is free, the key answers what it answered (as Stripe's do).
    db.session.execute(sa.update(ApiToken).where(ApiToken.name == "taken").values(name="moved"))
    db.session.commit()
    again = _create(client, secret, "k-4", {"name": "taken"})
    assert again.status_code == 400 and error_code(again) == "duplicate_name"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _named(db, "taken") == []


def test_an_authentication_failure_is_not_stored(client, db, caller):
    _, secret = caller
    refused = _create(client, secret[:-1] + ("A" if secret[-1] != "A" else "B"), "k-5")
    assert refused.status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdempotencyKey)) == 0
    assert _create(client, secret, "k-5").status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_a_malformed_key_is_a_validation_error(client, db, caller, key):
    _, secret = caller
    response = _create(client, secret, key)
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert "Idempotency-Key" in response.get_json()["error"]["details"]
    assert _named(db, "ci") == []


def test_the_row_holds_neither_the_key_nor_the_secret(client, db, caller):
    caller_token, secret = caller
    key = f"my-key-{uuid.uuid4()}"
    created = _create(client, secret, key).get_json()
    (row,) = db.session.scalars(sa.select(IdempotencyKey)).all()
    stored = " ".join(str(v) for v in (row.key_hash, row.request_hash, row.sealed))
    assert key not in stored and created["token"] not in stored
    assert created["token"].encode() not in row.sealed
    # With the client's key it opens; with all the database and the server's keys hold
    # (the key's hash in place of the key), it does not.
    org_id, caller_id = row.organization_id, caller_token.id
    opened = idempotency._open(idempotency.scope_for(org_id, caller_id, key, b""), row.sealed)
    assert opened.status == 201 and created["token"] in opened.body.decode()
    guess = idempotency.scope_for(org_id, caller_id, row.key_hash, b"")
    with pytest.raises(idempotency.IdempotencyMismatch):
        idempotency._open(guess, row.sealed)


def test_a_key_older_than_24_hours_is_not_used_and_is_purged(client, db, caller):
    _, secret = caller
    first = _create(client, secret, "k-6", {"name": "daily"})
    db.session.execute(sa.update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    db.session.commit()
    # The old token holds the name: the same request now is a new one, refused by name.
    again = _create(client, secret, "k-6", {"name": "daily"})
    assert again.status_code == 400 and error_code(again) == "duplicate_name"
    assert "Idempotent-Replayed" not in again.headers
    assert first.status_code == 201

    db.session.execute(sa.update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    db.session.commit()
    assert idempotency.purge_expired() == 1
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdempotencyKey)) == 0


def test_concurrent_retries_with_one_key_make_exactly_one_token(app, db, caller):
    _, secret = caller
    start = threading.Barrier(6)
    answers = []

    def post() -> None:
        client = app.test_client()
        start.wait()
        answers.append(_create(client, secret, "race", {"name": "raced"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(_named(db, "raced")) == 1
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1
    secrets = {a.get_json()["token"] for a in answers if a.status_code == 201}
    assert len(secrets) == 1
    for a in answers:
        if a.status_code == 409:
            assert error_code(a) == "idempotency_in_progress"
