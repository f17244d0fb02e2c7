"""services/tokens.py: every rule about tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import TOKEN_ROLE_RANK, ApiToken, AuditEvent, utcnow
from services import secrets as token_secrets
from services import tokens
from services.actor import Actor
from services.errors import (
    AuthFailed,
    Conflict,
    DuplicateName,
    Forbidden,
    NotFound,
    TokenLimitReached,
    ValidationFailed,
)
from tests.conftest import owner_actor


@pytest.fixture
def org(make_org):
    return make_org()


@pytest.fixture
def owner(org):
    return owner_actor(org)


def actor_for(membership) -> Actor:
    return Actor(
        organization=membership.organization, membership=membership, ip="10.0.0.1", user_agent="t"
    )


def create(org, actor, **kwargs):
    kwargs.setdefault("name", "ci")
    kwargs.setdefault("environment", "sandbox")
    kwargs.setdefault("role", "writer")
    kwargs.setdefault("expires_at", utcnow() + timedelta(days=30))
    return tokens.create_token(org, actor, **kwargs)


def events(db, token):
    return db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.target_id == token.id).order_by(AuditEvent.id)
    ).all()


# ---------------------------------------------------------------- create


def test_create_stores_only_a_hash_and_the_secret_verifies(db, org, owner):
    token, secret = create(org, owner, scopes=["tokens:read"], type="ci")
    db.session.commit()
    assert secret not in (token.secret_hash, token.prefix) and secret.startswith(token.prefix)
    assert token.secret_hash == token_secrets.hash_secret(secret, "test-token-hmac-key")
    assert tokens.verify(secret).id == token.id
    (event,) = events(db, token)
    assert (event.action, event.actor_label, event.environment, event.ip, event.user_agent) == (
        "token.created",
        owner.label,
        "sandbox",
        "127.0.0.1",
        "pytest",
    )
    assert secret not in str(event.details)


def test_recorder_is_an_alias_of_writer(db, org, owner):
    token, _ = create(org, owner, role="recorder")
    assert token.role == "writer"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"role": "root"}, "role"),
        ({"type": "robot"}, "type"),
        ({"environment": "staging"}, "environment"),
        ({"scopes": ["tokens:fly"]}, "scopes"),
        ({"expires_at": None}, "expires_at"),
    ],
)
def test_create_refuses_bad_input_and_makes_nothing(db, org, owner, kwargs, field):
    with pytest.raises(ValidationFailed) as info:
        create(org, owner, **kwargs)
    assert field in info.value.details
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


def test_create_reports_every_bad_field_at_once(org, owner):
    with pytest.raises(ValidationFailed) as info:
        create(org, owner, name="", role="root", type="robot", expires_at=utcnow() - timedelta(1))
    assert set(info.value.details) == {"name", "role", "type", "expires_at"}


def test_name_of_100_characters_is_fine(org, owner):
    token, _ = create(org, owner, name="n" * 100)
    assert len(token.name) == 100


def test_expiry_in_the_past_or_beyond_the_policy_is_refused(org, owner):
    now = utcnow()
    for expires_at in (now - timedelta(seconds=1), now + timedelta(days=367)):
        with pytest.raises(ValidationFailed):
            create(org, owner, expires_at=expires_at, now=now)
    create(org, owner, expires_at=now + timedelta(days=365), now=now)


def test_never_expires_only_where_the_policy_allows(db, org, owner):
    with pytest.raises(ValidationFailed):
        create(org, owner, expires_at=None)
    org.allow_never_expires = True
    token, _ = create(org, owner, expires_at=None)
    assert token.expires_at is None


def test_expiry_choices_follow_the_policy(db, org):
    assert tokens.expiry_choices(org) == ["30", "60", "90", "180", "365", "custom"]
    org.max_lifetime_days, org.allow_never_expires = 90, True
    assert tokens.expiry_choices(org) == ["30", "60", "90", "custom", "never"]
    with pytest.raises(ValidationFailed) as info:
        tokens.expiry_from_choice(org, "180")
    assert "at most 90 days" in info.value.details["expires_in_days"]
    assert tokens.expiry_from_choice(org, "never") is None


def test_token_limit_counts_live_tokens_of_both_environments(db, org, owner):
    org.max_live_tokens = 2
    create(org, owner, name="a")
    expired, _ = create(org, owner, name="b", environment="production")
    with pytest.raises(TokenLimitReached) as info:
        create(org, owner, name="c")
    assert info.value.code == "token_limit_reached"
    tokens.revoke_token(expired, owner)
    create(org, owner, name="c")


def test_expired_tokens_do_not_count_against_the_limit(db, org, owner):
    org.max_live_tokens = 1
    now = utcnow()
    create(org, owner, name="a", expires_at=now + timedelta(days=1), now=now)
    create(org, owner, name="b", now=now + timedelta(days=2), expires_at=now + timedelta(days=9))


def test_duplicate_live_name_in_same_environment_is_refused(db, org, owner):
    first, _ = create(org, owner, name="deploy")
    with pytest.raises(DuplicateName) as info:
        create(org, owner, name="deploy")
    assert info.value.code == "duplicate_name" and "name" in info.value.details
    create(org, owner, name="deploy", environment="production")  # other environment: fine
    tokens.revoke_token(first, owner)
    create(org, owner, name="deploy")  # a revoked token frees its name


def test_database_index_enforces_live_names_too(db, org, owner):
    """The partial unique index catches a race that the service's check cannot see."""
    first, _ = create(org, owner, name="deploy")
    second, _ = create(org, owner, name="other")
    db.session.commit()
    with pytest.raises(DuplicateName):
        second.name = "deploy"
        tokens._flush_checking_name(second)


# ---------------------------------------------------------------- rotate


def test_rotate_without_grace_stops_the_old_secret_at_once(db, org, owner):
    token, old = create(org, owner)
    new = tokens.rotate_token(token, owner, grace_seconds=0)
    assert tokens.verify(new).id == token.id
    with pytest.raises(AuthFailed) as info:
        tokens.verify(old)
    assert info.value.code == "invalid_token"
    assert [e.action for e in events(db, token)] == ["token.created", "token.rotated"]


@pytest.mark.parametrize("grace", [3600, 86400, 7 * 86400])
def test_old_secret_works_until_the_grace_end_and_not_a_second_after(db, org, owner, grace):
    token, old = create(org, owner)
    now = utcnow()
    new = tokens.rotate_token(token, owner, grace_seconds=grace, now=now)
    db.session.commit()
    end = now + timedelta(seconds=grace)
    assert tokens.verify(old, now=end - timedelta(seconds=1)).id == token.id
    assert tokens.verify(new, now=end - timedelta(seconds=1)).id == token.id
    for moment in (end, end + timedelta(seconds=1)):
        with pytest.raises(AuthFailed):
            tokens.verify(old, now=moment)
    assert tokens.verify(new, now=end + timedelta(seconds=1)).id == token.id


def test_a_second_rotation_ends_the_first_grace(db, org, owner):
    token, first = create(org, owner)
    second = tokens.rotate_token(token, owner, grace_seconds=3600)
    tokens.rotate_token(token, owner, grace_seconds=3600)
    with pytest.raises(AuthFailed):
        tokens.verify(first)
    assert tokens.verify(second).id == token.id


@pytest.mark.parametrize("grace", [-1, 7 * 86400 + 1, "3600", True, 1.5])
def test_rotate_refuses_a_bad_grace(org, owner, grace):
    token, _ = create(org, owner)
    with pytest.raises(ValidationFailed):
        tokens.rotate_token(token, owner, grace_seconds=grace)


def test_grace_choices_of_the_page(org):
    assert [tokens.grace_from_choice(v) for v in ("0", "3600", "86400", "604800")] == [
        0,
        3600,
        86400,
        604800,
    ]
    with pytest.raises(ValidationFailed):
        tokens.grace_from_choice("60")


def _expired_token(db, org, owner):
    token, old = create(org, owner)
    token.expires_at = utcnow() - timedelta(days=1)
    db.session.flush()
    return token, old


def test_an_expired_token_is_not_rotated_without_a_new_expiry(db, org, owner):
    """SPEC §2: an expired token can only be rotated with a new expiry; a plain rotation
    would hand out a secret that gets token_expired, and say the old one keeps working."""
    token, _ = _expired_token(db, org, owner)
    hash_before = token.secret_hash
    with pytest.raises(ValidationFailed) as info:
        tokens.rotate_token(token, owner, grace_seconds=0)
    assert "expires_at" in info.value.details
    assert "expired" in info.value.details["expires_at"]
    assert token.secret_hash == hash_before


def test_an_expired_token_is_renewed_with_a_new_expiry_and_its_old_secret_stays_dead(
    db, org, owner
):
    token, old = _expired_token(db, org, owner)
    now = utcnow()
    new_expiry = now + timedelta(days=30)
    new = tokens.rotate_token(token, owner, grace_seconds=0, expires_at=new_expiry, now=now)
    db.session.commit()
    assert token.expires_at == new_expiry
    assert token.previous_secret_expires_at is None
    assert tokens.verify(new).id == token.id
    with pytest.raises(AuthFailed):
        tokens.verify(old)  # renewing must not revive the expired secret
    rotated = events(db, token)[-1]
    assert rotated.action == "token.rotated"
    assert rotated.details["expires_at"]["to"].startswith(new_expiry.strftime("%Y-%m-%dT%H:%M"))


def test_an_expired_token_cannot_keep_its_old_secret_for_a_grace(db, org, owner):
    token, _ = _expired_token(db, org, owner)
    with pytest.raises(ValidationFailed) as info:
        tokens.rotate_token(
            token, owner, grace_seconds=3600, expires_at=utcnow() + timedelta(days=30)
        )
    assert "grace_period_seconds" in info.value.details


def test_rotation_may_give_a_new_expiry_within_the_policy(db, org, owner):
    token, old = create(org, owner)
    later = utcnow() + timedelta(days=60)
    tokens.rotate_token(token, owner, grace_seconds=3600, expires_at=later)
    assert token.expires_at == later
    assert tokens.verify(old).id == token.id  # a live token's grace still applies
    org.max_lifetime_days = 90
    with pytest.raises(ValidationFailed) as info:
        tokens.rotate_token(token, owner, expires_at=utcnow() + timedelta(days=400))
    assert "expires_at" in info.value.details


def test_a_revoked_token_cannot_be_rotated_or_changed(db, org, owner):
    token, _ = create(org, owner)
    tokens.revoke_token(token, owner)
    with pytest.raises(Conflict):
        tokens.rotate_token(token, owner)
    for change in (tokens.suspend_token, tokens.resume_token):
        with pytest.raises(Conflict):
            change(token, owner)
    with pytest.raises(Conflict):
        tokens.rename_token(token, owner, name="x")


# ---------------------------------------------------------------- rename, suspend, resume, revoke


def test_rename_suspend_resume_revoke_each_write_an_event(db, org, owner):
    token, secret = create(org, owner)
    tokens.rename_token(token, owner, name="renamed")
    tokens.suspend_token(token, owner)
    with pytest.raises(AuthFailed) as info:
        tokens.verify(secret)
    assert info.value.code == "token_inactive"
    tokens.resume_token(token, owner)
    assert tokens.verify(secret).name == "renamed"
    tokens.revoke_token(token, owner)
    with pytest.raises(AuthFailed) as info:
        tokens.verify(secret)
    assert info.value.code == "token_revoked"
    actions = [e.action for e in events(db, token)]
    assert actions == [
        "token.created",
        "token.updated",
        "token.suspended",
        "token.resumed",
        "token.revoked",
    ]
    updated = events(db, token)[1]
    assert updated.details == {"name": {"from": "ci", "to": "renamed"}}


def test_rename_to_a_live_name_is_refused_and_same_name_changes_nothing(db, org, owner):
    token, _ = create(org, owner, name="a")
    create(org, owner, name="b")
    with pytest.raises(DuplicateName):
        tokens.rename_token(token, owner, name="b")
    tokens.rename_token(token, owner, name=" a ")
    assert [e.action for e in events(db, token)] == ["token.created"]


def test_suspending_twice_records_once_and_revoking_twice_changes_nothing(db, org, owner):
    token, _ = create(org, owner)
    tokens.suspend_token(token, owner)
    tokens.suspend_token(token, owner)
    tokens.revoke_token(token, owner)
    first = token.revoked_at
    tokens.revoke_token(token, owner, now=utcnow() + timedelta(hours=1))
    assert token.revoked_at == first
    assert [e.action for e in events(db, token)].count("token.suspended") == 1
    assert [e.action for e in events(db, token)].count("token.revoked") == 1


def test_revoke_ends_a_grace_and_its_secret_is_told_token_revoked(db, org, owner):
    token, old = create(org, owner)
    new = tokens.rotate_token(token, owner, grace_seconds=3600)
    tokens.revoke_token(token, owner)
    db.session.commit()
    for secret in (old, new):
        with pytest.raises(AuthFailed) as info:
            tokens.verify(secret)
        assert info.value.code == "token_revoked"
    # An hour later, when the grace would have ended, it is still refused as revoked.
    with pytest.raises(AuthFailed) as info:
        tokens.verify(old, now=utcnow() + timedelta(hours=2))
    assert info.value.code == "token_revoked"


def test_a_secret_whose_grace_ended_before_the_revocation_stays_invalid(db, org, owner):
    token, old = create(org, owner)
    start = utcnow() - timedelta(hours=2)
    tokens.rotate_token(token, owner, grace_seconds=3600, now=start)
    tokens.revoke_token(token, owner)
    db.session.commit()
    with pytest.raises(AuthFailed) as info:
        tokens.verify(old)
    assert info.value.code == "invalid_token"


# ---------------------------------------------------------------- verify


def test_a_bad_checksum_is_refused_without_a_database_query(db, org, owner, app):
    token, secret = create(org, owner)
    db.session.commit()
    broken = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    statements = []
    listener = lambda *args: statements.append(args)  # noqa: E731
    sa.event.listen(db.engine, "before_cursor_execute", listener)
    try:
        for bad in (broken, secret[:-3], secret + "x", "", "ks_sbx_nope", secret.upper()):
            with pytest.raises(AuthFailed) as info:
                tokens.verify(bad)
            assert info.value.code == "invalid_token"
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", listener)
    assert statements == []


def test_a_well_formed_secret_of_no_token_or_wrong_secret_is_invalid(db, org, owner):
    token, secret = create(org, owner)
    stranger = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    impostor = token_secrets.new_secret("sandbox", token.id)  # right id, wrong random part
    other_env = token_secrets.new_secret("production", token.id)
    for bad in (stranger, impostor, other_env):
        with pytest.raises(AuthFailed) as info:
            tokens.verify(bad)
        assert info.value.code == "invalid_token"


def test_an_expired_token_gets_token_expired(db, org, owner):
    now = utcnow()
    token, secret = create(org, owner, expires_at=now + timedelta(days=1), now=now)
    assert tokens.verify(secret, now=now + timedelta(hours=23)).id == token.id
    with pytest.raises(AuthFailed) as info:
        tokens.verify(secret, now=now + timedelta(days=1))
    assert info.value.code == "token_expired"


def test_verification_accepts_an_old_hmac_key(app, db, org, owner):
    token, secret = create(org, owner)
    app.config["TOKEN_HMAC_OLD_KEYS"] = ["test-token-hmac-key"]
    app.config["TOKEN_HMAC_KEY"] = "a-new-key"
    assert tokens.verify(secret).id == token.id


# ---------------------------------------------------------------- permissions (SPEC §1)


@pytest.mark.parametrize(
    ("role", "own", "others"),
    [
        ("owner", True, True),
        ("admin", True, True),
        ("member", True, False),
        ("viewer", False, False),
    ],
)
def test_permission_matrix(db, org, owner, make_member, role, own, others):
    membership = owner.membership if role == "owner" else make_member(org, role=role)
    actor = actor_for(membership)
    someone = actor_for(make_member(org, role="admin"))
    theirs, _ = create(org, someone, name="theirs")
    if role == "viewer":
        with pytest.raises(Forbidden):
            create(org, actor, name="mine")
        mine, _ = create(org, owner if role != "owner" else someone, name="mine")
        mine.created_by_user_id = membership.user_id  # as if made before a demotion
    else:
        mine, _ = create(org, actor, name="mine")

    for token, allowed in ((mine, own), (theirs, others)):
        assert tokens.can_manage(actor, token) is allowed
        changes = [
            lambda t: tokens.rename_token(t, actor, name=t.name + "-2"),
            lambda t: tokens.suspend_token(t, actor),
            lambda t: tokens.resume_token(t, actor),
            lambda t: tokens.rotate_token(t, actor, grace_seconds=0),
            lambda t: tokens.revoke_token(t, actor),
        ]
        for change in changes:
            if allowed:
                change(token)
            else:
                with pytest.raises(Forbidden):
                    change(token)
        assert token.is_revoked is allowed


def test_viewer_gets_forbidden_before_any_validation(org, make_member):
    viewer = actor_for(make_member(org, role="viewer"))
    with pytest.raises(Forbidden):
        create(org, viewer, name="", role="root")
    with pytest.raises(Forbidden):
        tokens.create_token_from_form(
            org,
            viewer,
            name="",
            environment="x",
            role="x",
            scopes=None,
            type="x",
            expires_in_days="x",
        )


def test_a_token_never_grants_more_than_it_has_nor_outside_its_environment(db, org, owner):
    writer, _ = create(org, owner, name="writer", role="writer")
    as_token = Actor(organization=org, membership=owner.membership, token=writer)
    with pytest.raises(Forbidden):
        create(org, as_token, name="x", role="admin")
    # Creating elsewhere is a permission it lacks; no existing id is involved.
    with pytest.raises(Forbidden):
        create(org, as_token, name="x", environment="production")
    prod, _ = create(org, owner, name="prod", environment="production")
    with pytest.raises(NotFound):
        tokens.suspend_token(prod, as_token)
    child, _ = create(org, as_token, name="child", role="viewer", expires_at=writer.expires_at)
    assert child.created_by_label == "writer" and child.created_by_token_id == writer.id


# ---------------------------------------------------------------- queries


def test_get_token_or_404_is_scoped_to_organization_and_environment(db, org, owner, make_org):
    token, _ = create(org, owner)
    other_org = make_org(name="Other")
    assert tokens.get_token_or_404(org, None, token.id) is token
    assert tokens.get_token_or_404(org, "sandbox", token.id) is token
    for scope in ((org, "production"), (other_org, None), (other_org, "sandbox")):
        with pytest.raises(NotFound):
            tokens.get_token_or_404(*scope, token.id)
    with pytest.raises(NotFound):
        tokens.get_token_or_404(org, None, "nope")


def test_requests_per_day_fills_missing_days_with_zero(db, org, owner):
    from models import TokenUsage

    token, _ = create(org, owner)
    today = utcnow().date()
    db.session.add_all(
        [
            TokenUsage(token_id=token.id, day=today, count=5),
            TokenUsage(token_id=token.id, day=today - timedelta(days=29), count=2),
            TokenUsage(token_id=token.id, day=today - timedelta(days=30), count=100),
        ]
    )
    db.session.flush()
    usage = tokens.requests_per_day(token, today=today)
    assert len(usage) == 30 and usage[0] == (today - timedelta(days=29), 2)
    assert usage[-1] == (today, 5) and sum(c for _, c in usage) == 7


@pytest.mark.parametrize(
    ("member_role", "allowed"),
    [("owner", "admin"), ("admin", "admin"), ("member", "writer")],
)
def test_a_member_gives_a_token_at_most_what_their_role_allows(
    db, org, make_member, member_role, allowed
):
    membership = make_member(org, role=member_role)
    actor = Actor(organization=org, membership=membership)
    for role in ("admin", "writer", "viewer"):
        if TOKEN_ROLE_RANK[role] > TOKEN_ROLE_RANK[allowed]:
            with pytest.raises(Forbidden) as refused:
                create(org, actor, name=f"{member_role}-{role}", role=role)
            assert "role" in refused.value.details
        else:
            token, _ = create(org, actor, name=f"{member_role}-{role}", role=role)
            assert token.role == role
