"""The API's organization and creator's membership come from the verification cache
(SPEC §8: authenticating costs little), yet a token never does more than its creator may
do now: a change is seen at once on the worker that made it, within 5 s on the others."""

from __future__ import annotations

import time
import uuid
from dataclasses import FrozenInstanceError

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code
from hot_path_support import another_worker, statements

from extensions import db as _db
from models import Membership
from services import members, policy
from services.actor import Actor
from services.token_cache import token_access

OTHER_WORKER_DEADLINE = 5 + 3  # SPEC §2's 5 s, plus slack for a busy test machine
READ_SCOPES = ["audit:read", "members:read", "tokens:read"]


@pytest.fixture
def org(make_org):
    return make_org(name="Cached")


def _scopes(client, secret: str) -> list[str]:
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["scopes"]


def _owner(org) -> Actor:
    membership = _db.session.scalar(
        sa.select(Membership).where(
            Membership.organization_id == org.id, Membership.role == "owner"
        )
    )
    return Actor(organization=org, membership=membership, ip="127.0.0.1")


def test_a_cached_token_authenticates_without_any_sql(client, db, org, make_token):
    _, secret = make_token(org)
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200

    with statements(db.engine) as seen:
        response = client.get(f"{API}/whoami", headers=bearer(secret))

    assert response.status_code == 200
    assert response.get_json()["organization"] == {"id": org.id, "name": "Cached"}
    assert seen == []


def test_the_cached_rows_read_like_the_rows_and_cannot_be_changed(db, org, make_token):
    token, _ = make_token(org)
    access = token_access(org.id, token.created_by_user_id)

    assert access is not None and access.membership is not None
    assert (access.organization.id, access.organization.name) == (org.id, "Cached")
    assert access.organization.max_live_tokens == org.max_live_tokens
    assert access.membership.role == "owner"
    assert access.membership.user.id == token.created_by_user_id
    # What a snapshot does not hold (a relationship) is read from the session's row.
    assert [m.id for m in access.organization.memberships] == [access.membership.id]
    with pytest.raises(FrozenInstanceError):
        access.membership.role = "viewer"  # type: ignore[misc]
    assert token_access(org.id, None).membership is None  # no creating member


def _set_role(member: Membership, role: str) -> None:
    """Change a role through the ORM, not the members service: a demotion there also revokes
    the tokens the new role could not have made (tests/test_delegation.py), and these tests
    are about the cache seeing the role of a token's creator."""
    member.role = role
    _db.session.flush()


def test_a_lowered_role_is_seen_at_once(client, db, org, make_member, make_token):
    member = make_member(org, role="admin")
    _, secret = make_token(org, Actor(organization=org, membership=member), role="admin")
    assert "tokens:write" in _scopes(client, secret)

    _set_role(member, "viewer")
    db.session.commit()

    assert _scopes(client, secret) == READ_SCOPES
    response = client.post(f"{API}/api_tokens", json={"name": "no"}, headers=bearer(secret))
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_a_role_given_back_is_seen_at_once(client, db, org, make_member, make_token):
    member = make_member(org, role="member")
    _, secret = make_token(org, Actor(organization=org, membership=member), role="writer")
    _set_role(member, "viewer")
    db.session.commit()
    assert _scopes(client, secret) == READ_SCOPES

    _set_role(member, "member")
    db.session.commit()

    assert _scopes(client, secret) == [*READ_SCOPES, "tokens:write"]


def test_a_removed_member_is_refused_at_once(client, db, org, make_member, make_token):
    member = make_member(org, role="admin")
    _, secret = make_token(org, Actor(organization=org, membership=member))
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200

    members.remove_member(member, _owner(org))
    db.session.commit()

    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_revoked"


def test_a_membership_deleted_by_a_bulk_statement_is_refused_at_once(
    client, db, org, make_member, make_token
):
    member = make_member(org, role="admin")
    _, secret = make_token(org, Actor(organization=org, membership=member))
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200

    # Not through the members service (its tokens stay unrevoked): the cache must still see it.
    db.session.execute(sa.delete(Membership).where(Membership.id == member.id))
    db.session.commit()

    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 401
    assert error_code(response) == "token_revoked"


def test_a_rolled_back_role_change_changes_nothing(client, db, org, make_member, make_token):
    member = make_member(org, role="admin")
    _, secret = make_token(org, Actor(organization=org, membership=member))
    assert "tokens:write" in _scopes(client, secret)

    _set_role(member, "viewer")
    db.session.flush()
    db.session.rollback()

    assert "tokens:write" in _scopes(client, secret)


def test_a_policy_rate_limit_is_applied_at_once(client, db, org, make_token):
    _, secret = make_token(org)
    first = client.get(f"{API}/whoami", headers=bearer(secret))
    assert first.headers["X-RateLimit-Limit"] == "100"  # 1000/minute;100/second

    policy.update_policy(
        org,
        _owner(org),
        max_live_tokens=org.max_live_tokens,
        max_lifetime_days=org.max_lifetime_days,
        allow_never_expires=org.allow_never_expires,
        rate_limit="7/minute",
    )
    db.session.commit()

    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.headers["X-RateLimit-Limit"] == "7"


@pytest.fixture
def app_config(limit_storage):
    """The same key prefix for both workers, so they share Redis's change counter."""
    return {"RATELIMIT_KEY_PREFIX": f"keysmith-test-{uuid.uuid4().hex[:12]}", **limit_storage}


def test_a_lowered_role_reaches_another_worker_within_five_seconds(
    app, backend, database_urls, app_config, tmp_path, db, org, make_member, make_token
):
    other = another_worker(database_urls[backend], str(tmp_path / "w2"), **app_config)
    try:
        other_client = other.test_client()
        member = make_member(org, role="admin")
        _, secret = make_token(org, Actor(organization=org, membership=member))
        assert "tokens:write" in _scopes(other_client, secret)  # cached on the other worker

        _set_role(member, "viewer")
        db.session.commit()
        changed = time.monotonic()

        seen = _scopes(other_client, secret)
        while seen != READ_SCOPES and time.monotonic() - changed < OTHER_WORKER_DEADLINE:
            time.sleep(0.05)
            seen = _scopes(other_client, secret)
        assert seen == READ_SCOPES, (
            f"the other worker still saw the old role after {time.monotonic() - changed:.1f} s"
        )
    finally:
        with other.app_context():
            _db.engine.dispose()


def test_the_api_never_reads_nor_sets_the_session_cookie(
    client, db, make_user, make_org, make_token
):
    user = make_user(email="grace@example.com")
    org = make_org(owner=user)
    _, secret = make_token(org)
    client.sign_in("grace@example.com")

    for response in (
        client.get(f"{API}/whoami", headers=bearer(secret)),
        client.get(f"{API}/whoami"),
        client.get(f"{API}/no-such-endpoint", headers=bearer(secret)),
        client.post(f"{API}/api_tokens", json={"name": "x"}),
    ):
        assert "Set-Cookie" not in response.headers
        assert "Cookie" not in response.headers.get("Vary", "")
    # The pages still have their session.
    assert client.get("/connections/api-tokens").status_code == 200
