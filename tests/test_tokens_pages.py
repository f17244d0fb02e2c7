"""Connections → API tokens: every route, as htmx and as a plain form post."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import ApiToken, AuditEvent, TokenUsage, utcnow
from services import tokens as token_service
from tests.conftest import owner_actor

PAGE = "/connections/api-tokens"
HX = {"HX-Request": "true"}
SECRET = re.compile(r"ks_(?:sbx|prod)_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}")


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com")


@pytest.fixture
def org(make_org, owner):
    return make_org(owner=owner)


@pytest.fixture
def signed_in(client, org, owner):
    client.sign_in(owner.email)
    return client


def create_form(**overrides):
    data = {
        "name": "CI deploys",
        "environment": "sandbox",
        "role": "writer",
        "type": "ci",
        "expires_in_days": "90",
    }
    data.update(overrides)
    return data


def live_tokens(db):
    return db.session.scalars(sa.select(ApiToken).where(ApiToken.revoked_at.is_(None))).all()


# ---------------------------------------------------------------- the page


def test_empty_page_explains_tokens_and_offers_add(signed_in):
    html = signed_in.get(PAGE).get_data(as_text=True)
    assert "No sandbox tokens yet" in html
    assert "+ Add" in html
    assert 'aria-current="page">Sandbox' in html


def test_page_groups_tokens_by_access_with_scope_chips(signed_in, org, make_token):
    make_token(org, name="admin-one", role="admin")
    make_token(org, name="viewer-one", role="viewer", scopes=["audit:read"])
    make_token(org, name="prod-one", role="writer", environment="production")
    html = signed_in.get(PAGE).get_data(as_text=True)
    assert 'id="group-admin"' in html and 'id="group-viewer"' in html
    assert 'id="group-writer"' not in html  # the writer is in production
    assert "prod-one" not in html
    assert '<span class="chip" title="Custom scope">audit:read</span>' in html
    # SPEC §3's columns; Type shares Access's column and Created by Created's (issue 20: the
    # table fits 1,024 px), each named in the header and in the cell's label.
    headers = re.findall(r"<th scope=\"col\"[^>]*>(.*?)</th>", html, re.S)
    words = [re.sub(r"<[^>]+>", "", header) for header in headers]
    for column in ("Prefix", "Access", "Type", "Created by", "Status"):
        assert any(column in text for text in words), column
    assert 'data-label="Access · Type"' in html and 'data-label="Created · by"' in html
    for column in ("Name", "Created", "Last used", "Expires"):  # sortable: a link each
        header = rf'<th scope="col"[^>]*><a class="sort[^"]*" href="[^"]+"[^>]*>{column}'
        assert re.search(header, html)
    production = signed_in.get(f"{PAGE}?environment=production").get_data(as_text=True)
    assert "prod-one" in production and "admin-one" not in production


def test_revoked_tokens_sit_in_a_collapsed_group(signed_in, org, make_token, db):
    token, _ = make_token(org, name="old-one")
    token_service.revoke_token(token, owner_actor(org))
    db.session.commit()
    html = signed_in.get(PAGE).get_data(as_text=True)
    assert '<details class="revoked-group" id="revoked-group">' in html
    assert "old-one" in html.split('id="revoked-group"')[1]


def test_unknown_environment_is_a_clear_400(signed_in):
    response = signed_in.get(f"{PAGE}?environment=staging")
    assert response.status_code == 400
    assert "Choose Sandbox or Production" in response.get_data(as_text=True)


def test_page_needs_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def _count_statements(db, client, url):
    statements = []

    def count(*_args):
        statements.append(1)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    return len(statements)


def test_page_runs_the_same_statements_for_500_tokens_as_for_5(signed_in, org, db):
    def add(count, start):
        now = utcnow()
        for i in range(start, start + count):
            db.session.add(
                ApiToken(
                    id=f"bulk{i:012d}",
                    organization_id=org.id,
                    environment="sandbox",
                    name=f"bulk-{i}",
                    role=("admin", "writer", "viewer")[i % 3],
                    scopes=["tokens:read"] if i % 2 else [],
                    type="generic",
                    active=bool(i % 5),
                    prefix=f"ks_sbx_bulk{i:04d}",
                    secret_hash="0" * 64,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(days=30),
                    revoked_at=now if i % 7 == 0 else None,
                    created_by_user_id=org.memberships[0].user_id,
                    created_by_label="owner@example.com",
                )
            )
        db.session.commit()

    add(5, 0)
    few = _count_statements(db, signed_in, PAGE)
    add(495, 5)
    many = _count_statements(db, signed_in, PAGE)
    assert few == many


# ---------------------------------------------------------------- + Add


def test_add_fragment_for_htmx_and_page_without_js(signed_in):
    fragment = signed_in.get(f"{PAGE}/new?environment=production", headers=HX)
    html = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in html and 'id="add-form"' in html
    assert 'name="environment" type="hidden" value="production"' in html
    page = signed_in.get(f"{PAGE}/new?environment=production").get_data(as_text=True)
    assert "<html" in page and 'id="add-form"' in page


def test_create_plain_post_answers_200_with_the_secret_once(signed_in, db):
    response = signed_in.form(PAGE, create_form(), page=PAGE)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "<html" in html and "cannot be shown again" in html
    secret = SECRET.search(html).group(0)
    token = token_service.verify(secret)
    assert (token.name, token.role, token.type, token.environment) == (
        "CI deploys",
        "writer",
        "ci",
        "sandbox",
    )
    assert 'id="group-writer"' in html and f'id="token-{token.id}"' in html
    again = signed_in.get(PAGE).get_data(as_text=True)
    assert secret not in again and "CI deploys" in again


def test_create_htmx_answers_the_region_with_row_and_secret(signed_in):
    response = signed_in.form(PAGE, create_form(environment="production"), page=PAGE, headers=HX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert 'id="tokens-region"' in html and 'id="secret-panel"' in html
    assert SECRET.search(html).group(0).startswith("ks_prod_")
    assert "data-copy-target" in html


def test_create_accepts_recorder_and_scopes_and_custom_date(signed_in, db):
    day = (utcnow() + timedelta(days=10)).date()
    data = create_form(
        role="recorder", scopes=["tokens:read", "audit:read"], expires_in_days="custom"
    )
    data["expires_at"] = day.isoformat()
    assert signed_in.form(PAGE, data, page=PAGE).status_code == 200
    (token,) = live_tokens(db)
    assert token.role == "writer" and token.scopes == ["audit:read", "tokens:read"]
    assert token.expires_at.date() == day


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"name": "  "}, "name", "Name is required."),
        ({"name": "x" * 101}, "name", "at most 100 characters"),
        ({"role": "root"}, "role", "Role must be one of"),
        ({"type": "robot"}, "type", "Must be one of"),
        ({"environment": "staging"}, None, "Must be one of: sandbox, production"),
        ({"expires_in_days": "never"}, "expires_in_days", "requires an expiry date"),
        ({"expires_in_days": "1000"}, "expires_in_days", "Choose 30, 60"),
        ({"expires_in_days": "custom", "expires_at": "2001-01-01"}, "expires_at", "future"),
        ({"expires_in_days": "custom", "expires_at": "2999-01-01"}, "expires_at", "at most 365"),
        ({"scopes": ["tokens:write"], "role": "viewer"}, "scopes", "beyond what role"),
    ],
)
def test_create_errors_show_inline_keep_input_and_make_nothing(
    signed_in, db, overrides, field, message
):
    data = create_form(name="typed name", **{"type": "integration"})
    data.update(overrides)
    for headers in ({}, HX):
        response = signed_in.form(PAGE, data, page=PAGE, headers=headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 400
        assert message in html
        assert 'id="add-form"' in html
        if field:
            assert re.search(rf'class="field has-error">\s*<label for="{field}"', html) or (
                field == "scopes" and 'class="field has-error"' in html
            )
        if overrides.get("name") is None:
            assert 'value="typed name"' in html
        assert ("<html" in html) == (not headers)
    assert live_tokens(db) == []


def test_duplicate_name_is_refused_inline_and_reusable_after_revoke(signed_in, org, db):
    assert signed_in.form(PAGE, create_form(), page=PAGE).status_code == 200
    response = signed_in.form(PAGE, create_form(), page=PAGE)
    assert response.status_code == 400
    assert "already exists" in response.get_data(as_text=True)
    (token,) = live_tokens(db)
    signed_in.form(f"{PAGE}/{token.id}/revoke", {"environment": "sandbox"}, page=PAGE)
    assert signed_in.form(PAGE, create_form(), page=PAGE).status_code == 200


def test_token_limit_reached_shows_inline(signed_in, org, make_token, db):
    org.max_live_tokens = 1
    db.session.commit()
    make_token(org)
    response = signed_in.form(PAGE, create_form(), page=PAGE)
    assert response.status_code == 400
    assert "limit of 1 live token." in response.get_data(as_text=True)
    assert len(live_tokens(db)) == 1


def test_never_expires_offered_and_accepted_only_when_policy_allows(signed_in, org, db):
    assert 'value="never"' not in signed_in.get(f"{PAGE}/new").get_data(as_text=True)
    org.allow_never_expires = True
    db.session.commit()
    assert 'value="never"' in signed_in.get(f"{PAGE}/new").get_data(as_text=True)
    assert signed_in.form(PAGE, create_form(expires_in_days="never"), page=PAGE).status_code == 200
    assert live_tokens(db)[0].expires_at is None


def test_create_without_csrf_is_refused(signed_in, db):
    response = signed_in.post(PAGE, data=create_form())
    assert response.status_code == 400
    assert live_tokens(db) == []


# ---------------------------------------------------------------- inline actions


@pytest.fixture
def token(org, make_token):
    token, _ = make_token(org, name="deploy", role="writer")
    return token


def action(client, token_id, name, data=None, headers=None, environment="sandbox"):
    payload = {"environment": environment, **(data or {})} if environment else dict(data or {})
    return client.form(f"{PAGE}/{token_id}/{name}", payload, page=PAGE, headers=headers or {})


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_suspend_resume_rename_revoke_swap_the_row(signed_in, token, db, htmx):
    headers = HX if htmx else {}
    for name, data, check in [
        ("suspend", {}, lambda t: not t.active),
        ("resume", {}, lambda t: t.active),
        ("rename", {"name": "deploy-2"}, lambda t: t.name == "deploy-2"),
        ("revoke", {}, lambda t: t.revoked_at is not None),
    ]:
        response = action(signed_in, token.id, name, data, headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, html
        assert response.headers["Cache-Control"] == "no-store"
        assert f'id="token-{token.id}"' in html
        assert ("<html" in html) == (not htmx)
        if htmx:
            assert html.lstrip().startswith("<tr")
        db.session.expire_all()
        assert check(db.session.get(ApiToken, token.id))
    assert "Revoked" in html and "Actions for" not in html


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_rotate_answers_with_the_new_secret_and_grace(signed_in, token, db, htmx):
    response = action(
        signed_in, token.id, "rotate", {"grace_period_seconds": "3600"}, HX if htmx else {}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = SECRET.search(html).group(0)
    assert token_service.verify(secret).id == token.id
    assert "previous secret keeps working until" in html
    if htmx:
        assert response.headers["HX-Retarget"] == "#tokens-region"
        assert "<html" not in html
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).previous_secret_expires_at is not None


def test_htmx_revoke_swaps_the_row_and_the_live_count_out_of_band(
    signed_in, org, token, make_token
):
    make_token(org, name="other")
    response = action(signed_in, token.id, "revoke", headers=HX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert f'id="token-{token.id}" class="token-row status-revoked"' in html
    assert '<p id="live-count" class="muted" hx-swap-oob="true">1 live token in sandbox</p>' in html


def test_rotate_refuses_an_unknown_grace(signed_in, token):
    response = action(signed_in, token.id, "rotate", {"grace_period_seconds": "5"}, HX)
    assert response.status_code == 400
    assert "Choose none, 1 hour" in response.get_data(as_text=True)


def test_rename_error_keeps_typed_name_in_the_row(signed_in, org, token, make_token):
    make_token(org, name="taken", role="writer")
    for headers in ({}, HX):
        response = action(signed_in, token.id, "rename", {"name": "taken"}, headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 400
        assert "already exists" in html and 'value="taken"' in html
        assert '<details class="menu" open>' in html


def test_revoke_has_a_confirmation_page_without_javascript(signed_in, token):
    html = signed_in.get(f"{PAGE}/{token.id}/revoke").get_data(as_text=True)
    assert "Revoke “deploy”?" in html and 'action="/connections/api-tokens/' in html


def test_actions_need_csrf(signed_in, token, db):
    response = signed_in.post(f"{PAGE}/{token.id}/revoke", data={"environment": "sandbox"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).revoked_at is None


@pytest.mark.parametrize("name", ["rotate", "rename", "suspend", "resume", "revoke"])
def test_another_organizations_token_is_404(signed_in, make_org, make_token, db, name):
    other, _ = make_token(make_org(name="Other"))
    response = action(signed_in, other.id, name, {"name": "x", "grace_period_seconds": "0"})
    assert response.status_code == 404
    assert signed_in.get(f"{PAGE}/{other.id}").status_code == 404
    db.session.expire_all()
    assert db.session.get(ApiToken, other.id).revoked_at is None


@pytest.mark.parametrize("name", ["rotate", "rename", "suspend", "resume", "revoke"])
def test_a_token_of_another_environment_than_the_form_says_is_404(signed_in, token, name):
    response = action(
        signed_in,
        token.id,
        name,
        {"name": "x", "grace_period_seconds": "0"},
        environment="production",
    )
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["rotate", "rename", "suspend", "resume", "revoke"])
def test_viewer_sees_no_controls_and_a_forged_post_gets_403(
    client, org, token, make_member, db, name
):
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = client.get(PAGE).get_data(as_text=True)
    assert "deploy" in html and "Actions for" not in html and "+ Add" not in html
    response = action(client, token.id, name, {"name": "x", "grace_period_seconds": "0"})
    assert response.status_code == 403
    assert client.form(PAGE, create_form(), page=PAGE).status_code == 403
    assert client.get(f"{PAGE}/new").status_code == 403


def test_member_acts_on_own_tokens_only(client, org, token, make_member, db):
    member = make_member(org, role="member")
    client.sign_in(member.user.email)
    html = client.get(PAGE).get_data(as_text=True)
    assert "Actions for deploy" not in html
    assert action(client, token.id, "suspend").status_code == 403
    assert client.form(PAGE, create_form(name="mine"), page=PAGE).status_code == 200
    mine = db.session.scalar(sa.select(ApiToken).where(ApiToken.name == "mine"))
    assert "Actions for mine" in client.get(PAGE).get_data(as_text=True)
    assert action(client, mine.id, "suspend").status_code == 200


def test_member_is_offered_at_most_writer_and_a_forged_admin_is_an_inline_error(
    client, org, make_member, db
):
    member = make_member(org, role="member")
    client.sign_in(member.user.email)
    form = client.get(f"{PAGE}/new").get_data(as_text=True)
    assert 'value="writer"' in form and 'value="admin"' not in form
    for headers in ({}, HX):
        response = client.form(PAGE, create_form(role="admin"), page=PAGE, headers=headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 400
        assert re.search(r'class="field has-error">\s*<label for="role"', html)
        assert "at most the writer role" in html and 'value="CI deploys"' in html
    # Beside the other wrong fields, not after them.
    response = client.form(PAGE, create_form(role="admin", name=""), page=PAGE)
    html = response.get_data(as_text=True)
    assert "at most the writer role" in html and "Name is required" in html
    assert live_tokens(db) == []


def test_every_action_is_in_the_audit_log_with_who_where_and_how(signed_in, owner, db):
    signed_in.form(PAGE, create_form(), page=PAGE)
    (token,) = live_tokens(db)
    for name, data in [
        ("rotate", {"grace_period_seconds": "0", "stop_old_secret": "y"}),
        ("rename", {"name": "renamed"}),
        ("suspend", {}),
        ("resume", {}),
        ("revoke", {}),
    ]:
        assert action(signed_in, token.id, name, data).status_code == 200
    events = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.target_id == token.id).order_by(AuditEvent.id)
    ).all()
    assert [e.action for e in events] == [
        "token.created",
        "token.rotated",
        "token.updated",
        "token.suspended",
        "token.resumed",
        "token.revoked",
    ]
    for event in events:
        assert event.actor_label == owner.email and event.actor_user_id == owner.id
        assert event.environment == "sandbox" and event.ip == "127.0.0.1"
        assert event.user_agent.startswith("Werkzeug/")


# ---------------------------------------------------------------- a token's own page


def test_token_page_shows_metadata_chart_and_events(signed_in, token, db):
    today = utcnow().date()
    token.last_used_at = utcnow()
    token.last_used_ip = "203.0.113.9"
    db.session.add_all(
        [
            TokenUsage(token_id=token.id, day=today, count=42),
            TokenUsage(token_id=token.id, day=today - timedelta(days=3), count=7),
            TokenUsage(token_id=token.id, day=today - timedelta(days=40), count=999),
        ]
    )
    db.session.commit()
    html = signed_in.get(f"{PAGE}/{token.id}").get_data(as_text=True)
    assert "203.0.113.9" in html and token.prefix in html
    assert html.count("<rect") == 30
    assert f"{today.isoformat()}: 42 requests" in html
    assert f"{(today - timedelta(days=3)).isoformat()}: 7 requests" in html
    assert "49 in all" in html
    assert "token.created" in html
    assert "1,000 a minute, bursts of 100 a second" in html and "the key policy’s default" in html
    token.rate_limit = "5/second"
    db.session.commit()
    html = signed_in.get(f"{PAGE}/{token.id}").get_data(as_text=True)
    assert ">5 a second</span>" in html and "its own" in html


def test_token_page_and_allowlist_of_another_environment_are_404(signed_in, token, db):
    assert signed_in.get(f"{PAGE}/{token.id}?environment=sandbox").status_code == 200
    assert signed_in.get(f"{PAGE}/{token.id}?environment=production").status_code == 404
    for headers in ({}, HX):
        response = signed_in.form(
            f"{PAGE}/{token.id}/allowlist",
            {"environment": "production", "allowed_ips": "10.0.0.1"},
            page=PAGE,
            headers=headers,
        )
        assert response.status_code == 404
    db.session.refresh(token)
    assert not token.allowed_ips


def test_token_page_of_another_organization_is_404(signed_in, make_org, make_token):
    other, _ = make_token(make_org(name="Other"))
    assert signed_in.get(f"{PAGE}/{other.id}").status_code == 404
    assert signed_in.get(f"{PAGE}/{other.id}/revoke").status_code == 404


def test_viewer_sees_the_token_page_without_the_revoke_link(client, org, token, make_member):
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = client.get(f"{PAGE}/{token.id}").get_data(as_text=True)
    assert "deploy" in html and "Revoke…" not in html
    assert client.get(f"{PAGE}/{token.id}/revoke").status_code == 403


def test_revoke_confirm_page_posts_a_real_revocation(signed_in, token, db):
    html = signed_in.get(f"{PAGE}/{token.id}/revoke").get_data(as_text=True)
    token_value = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    response = signed_in.post(
        f"{PAGE}/{token.id}/revoke", data={"csrf_token": token_value, "environment": "sandbox"}
    )
    assert response.status_code == 200 and "Revoked “deploy”" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).revoked_at is not None
