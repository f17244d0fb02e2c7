"""Verification (SPEC §2, §8): checksum, one look-up or none from the cache, one HMAC,
no write; and a change reaches this worker at once and every other worker within 5 s."""

from __future__ import annotations

import time
import uuid
from dataclasses import FrozenInstanceError

import pytest
from hot_path_support import owner_actor, statements, worker_config, writes

from app import create_app
from extensions import db as _db
from models import ApiToken
from services import tokens
from services.errors import AuthFailed
from services.token_cache import VerifiedToken, verifier

# How long another worker may keep accepting a changed token (SPEC §2), plus slack for a
# busy test machine. The loop below stops as soon as the worker refuses.
OTHER_WORKER_DEADLINE = 5 + 3


def code_of(secret: str) -> str | None:
    try:
        tokens.verify(secret)
    except AuthFailed as exc:
        return exc.code
    return None


def test_verify_returns_an_immutable_snapshot_the_api_can_read(make_org, make_token):
    org = make_org()
    token, secret = make_token(org, name="deploy", role="writer", scopes=["tokens:read"])

    verified = tokens.verify(secret)

    assert isinstance(verified, VerifiedToken)
    assert verified.id == token.id
    assert verified.organization_id == org.id
    assert verified.organization.id == org.id
    assert (verified.environment, verified.role, verified.name) == ("sandbox", "writer", "deploy")
    assert verified.scopes == ("tokens:read",)
    assert verified.effective_scopes == frozenset({"tokens:read"})
    assert verified.status == "active"
    assert verified.created_by_user_id == token.created_by_user_id
    assert verified.created_by_user.id == token.created_by_user_id
    with pytest.raises(FrozenInstanceError):
        verified.role = "admin"  # type: ignore[misc]
    assert token.secret_hash not in repr(verified)


def test_malformed_token_is_refused_without_touching_the_database(make_org, make_token, db):
    org = make_org()
    _, secret = make_token(org)
    mistyped = secret[:-1] + ("A" if secret[-1] != "A" else "B")

    with statements(db.engine) as seen:
        assert code_of(mistyped) == "invalid_token"
        assert code_of(secret[:20]) == "invalid_token"
        assert code_of("x" * 10_000) == "invalid_token"

    assert seen == []


def test_verification_is_one_lookup_then_none_from_cache_and_never_a_write(
    make_org, make_token, db
):
    org = make_org()
    token, secret = make_token(org)
    token_id = token.id
    verifier().cache.clear()

    with statements(db.engine) as first:
        assert tokens.verify(secret).id == token_id
    with statements(db.engine) as again:
        for _ in range(20):
            assert tokens.verify(secret).id == token_id

    assert len(first) == 1 and "api_tokens" in first[0]
    assert again == []
    assert writes(first + again) == []


def test_wrong_secret_for_a_real_id_is_invalid_even_when_cached(make_org, make_token):
    org = make_org()
    token, secret = make_token(org)
    tokens.verify(secret)  # cached now
    other_env = secret.replace("ks_sbx_", "ks_prod_", 1)

    forged = tokens.token_secrets.new_secret("sandbox", token.id)
    assert code_of(forged) == "invalid_token"
    assert code_of(other_env) == "invalid_token"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda token, actor: tokens.revoke_token(token, actor), "token_revoked"),
        (lambda token, actor: tokens.suspend_token(token, actor), "token_inactive"),
        (lambda token, actor: tokens.rotate_token(token, actor, grace_seconds=0), "invalid_token"),
    ],
    ids=["revoke", "suspend", "rotate"],
)
def test_a_change_is_refused_at_once_on_the_worker_that_made_it(
    make_org, make_token, db, change, code
):
    org = make_org()
    token, secret = make_token(org)
    assert code_of(secret) is None  # now in this worker's cache

    change(token, owner_actor(org))
    db.session.commit()

    assert code_of(secret) == code


def test_resume_and_rename_are_seen_at_once(make_org, make_token, db):
    org = make_org()
    token, secret = make_token(org, name="before")
    tokens.suspend_token(token, owner_actor(org))
    db.session.commit()
    assert code_of(secret) == "token_inactive"

    tokens.resume_token(token, owner_actor(org))
    tokens.rename_token(token, owner_actor(org), name="after")
    db.session.commit()

    assert tokens.verify(secret).name == "after"


def test_a_change_rolled_back_leaves_the_token_working(make_org, make_token, db):
    org = make_org()
    token, secret = make_token(org)
    tokens.verify(secret)

    tokens.revoke_token(token, owner_actor(org))
    db.session.rollback()

    assert code_of(secret) is None


def test_the_cache_keeps_a_token_no_longer_than_its_lifetime(make_org, make_token):
    org = make_org()
    token, secret = make_token(org)
    cache = verifier().cache
    assert cache.ttl <= 5
    start = time.monotonic()
    tokens.verify(secret)

    assert cache.get(token.id, start + 0.5) is not None
    assert cache.get(token.id, start + cache.ttl + 0.01) is None


def test_the_cache_is_bounded(make_org, make_token):
    org = make_org()
    cache = verifier().cache
    cache.max_entries = 3
    made = [make_token(org) for _ in range(5)]
    for _, secret in made:
        tokens.verify(secret)

    assert len(cache) == 3
    assert cache.get(made[0][0].id) is None
    assert cache.get(made[-1][0].id) is not None


@pytest.fixture
def app_config(limit_storage):
    """The same key prefix for both workers, so they share Redis's change counter."""
    return {
        "RATELIMIT_KEY_PREFIX": f"keysmith-test-{uuid.uuid4().hex[:12]}",
        **limit_storage,
    }


@pytest.fixture
def other_worker(app, backend, database_urls, app_config, tmp_path):
    """A second app on the same database (and Redis): another gunicorn worker, in effect."""
    other = create_app(
        worker_config(database_urls[backend], **app_config), instance_path=str(tmp_path / "w2")
    )
    yield other
    with other.app_context():
        _db.engine.dispose()


def _code_on(worker, secret: str) -> str | None:
    with worker.app_context():
        try:
            return code_of(secret)
        finally:
            _db.session.remove()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda token, actor: tokens.revoke_token(token, actor), "token_revoked"),
        (lambda token, actor: tokens.suspend_token(token, actor), "token_inactive"),
    ],
    ids=["revoke", "suspend"],
)
def test_a_change_reaches_another_worker_within_five_seconds(
    make_org, make_token, db, other_worker, change, code
):
    org = make_org()
    token, secret = make_token(org)
    assert _code_on(other_worker, secret) is None  # cached on the other worker
    assert code_of(secret) is None  # and on this one

    change(token, owner_actor(org))
    db.session.commit()
    changed = time.monotonic()

    assert code_of(secret) == code
    seen = _code_on(other_worker, secret)
    while seen is None and time.monotonic() - changed < OTHER_WORKER_DEADLINE:
        time.sleep(0.05)
        seen = _code_on(other_worker, secret)
    assert seen == code, (
        f"the other worker still accepted the token after {time.monotonic() - changed:.1f} s"
    )


def test_a_token_created_on_one_worker_works_at_once_on_another(make_org, make_token, other_worker):
    org = make_org()
    _, secret = make_token(org)

    assert _code_on(other_worker, secret) is None


def test_revoked_token_row_keeps_its_record(make_org, make_token, db):
    org = make_org()
    token, _ = make_token(org)
    tokens.revoke_token(token, owner_actor(org))
    db.session.commit()

    assert db.session.get(ApiToken, token.id).status == "revoked"


def test_verification_keeps_working_when_redis_is_down(make_org, make_token, app):
    """Redis only speeds up invalidation; without it the 5-second lifetime still holds."""
    from services.token_cache import Verifier

    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    app.extensions.pop("keysmith_token_cache", None)
    assert isinstance(verifier(), Verifier) and verifier().notices is not None
    org = make_org()
    token, secret = make_token(org)

    assert tokens.verify(secret).id == token.id
    tokens.revoke_token(token, owner_actor(org))
    _db.session.commit()  # announcing fails quietly; this worker still forgets at once

    assert code_of(secret) == "token_revoked"


def test_a_rolled_back_change_is_not_served_from_the_cache(db, make_org, make_token):
    from services import tokens
    from services.errors import AuthFailed
    from tests.conftest import owner_actor

    org = make_org()
    token, secret = make_token(org)
    assert tokens.verify(secret).status == "active"  # now cached
    tokens.suspend_token(token, owner_actor(org))
    with pytest.raises(AuthFailed) as info:  # this session sees its own change at once
        tokens.verify(secret)
    assert info.value.code == "token_inactive"
    db.session.rollback()
    assert tokens.verify(secret).status == "active"  # the suspension never happened
