"""Issue 8's page parts: "I found this token", hygiene badges and filters, the IP allowlist,
the leak banner."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import ApiToken, AuditEvent, Organization, utcnow
from services import hygiene, leaks, token_list
from services import secrets as token_secrets
from services import tokens as token_service
from tests.conftest import owner_actor

PAGE = "/connections/api-tokens"
HX = {"HX-Request": "true"}
SECRET = re.compile(r"ks_(?:sbx|prod)_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}")


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com", name="Olive Owner")


@pytest.fixture
def org(make_org, owner):
    return make_org(owner=owner)


@pytest.fixture
def signed_in(client, org, owner):
    client.sign_in(owner.email)
    return client


def html_of(response) -> str:
    return response.get_data(as_text=True)


def row_names(html: str) -> set[str]:
    return set(re.findall(r'class="token-name">([^<]+)</a>', html))


# ---------------------------------------------------------------- search: filtering


def test_search_filters_by_name_prefix_type_and_creator_in_one_environment(
    signed_in, org, make_token, make_member, db
):
    member = make_member(org, role="member")
    deploy, _ = make_token(org, name="GitHub Deploy", type="ci")
    make_token(org, name="billing sync", type="integration")
    by_member, _ = make_token(org, owner_actor(org), name="nightly")
    by_member.created_by_label = member.user.email
    db.session.commit()
    make_token(org, name="deploy in prod", environment="production")

    def names(q: str) -> set[str]:
        return row_names(html_of(signed_in.get(PAGE, query_string={"q": q})))

    assert names("deploy") == {"GitHub Deploy"}  # case-insensitive; production not searched
    assert names(deploy.prefix[:12].lower()) >= {"GitHub Deploy"}
    assert names(deploy.prefix) == {"GitHub Deploy"}
    assert names("integr") == {"billing sync"}
    assert names(member.user.email.split("@")[0]) == {"nightly"}
    assert names("%") == set()  # LIKE wildcards are literal
    assert names("no such thing") == set()
    assert "No sandbox tokens match" in html_of(signed_in.get(PAGE, query_string={"q": "zzz"}))


def test_htmx_search_answers_the_region_and_pushes_a_clean_url(signed_in, org, make_token):
    make_token(org, name="alpha")
    make_token(org, name="beta")
    response = signed_in.get(f"{PAGE}?environment=sandbox&q=alp&filter=", headers=HX)
    html = html_of(response)
    assert response.status_code == 200
    assert "<html" not in html and 'id="tokens-region"' in html
    assert row_names(html) == {"alpha"}
    assert response.headers["HX-Push-Url"] == f"{PAGE}?environment=sandbox&q=alp"
    assert "1 token matches “alp”" in html


def test_history_restore_gets_the_whole_page(signed_in):
    headers = {**HX, "HX-History-Restore-Request": "true"}
    assert "<html" in html_of(signed_in.get(f"{PAGE}?q=x", headers=headers))


@pytest.mark.parametrize(
    "query, message",
    [
        ({"q": "x" * 201}, "at most 200 characters"),
        ({"q": "dep\x00loy"}, "control characters"),
        ({"filter": "stale"}, "Filter by"),
    ],
    ids=["overlong", "nul", "unknown-filter"],
)
def test_bad_search_input_is_a_clear_inline_400_showing_every_token(
    signed_in, org, make_token, query, message
):
    make_token(org, name="deploy")
    make_token(org, name="other")
    for headers in ({}, HX):
        response = signed_in.get(PAGE, query_string=query, headers=headers)
        html = html_of(response)
        assert response.status_code == 400
        assert message in html and 'role="alert"' in html
        assert row_names(html) == {"deploy", "other"}
    assert "\x00" not in html


def _bulk_tokens(db, org: Organization, count: int, start: int = 0) -> None:
    """Insert rows directly: creating 2,000 tokens through the service would take minutes."""
    now = utcnow()
    owner_id = org.memberships[0].user_id
    db.session.execute(
        sa.insert(ApiToken),
        [
            {
                "id": f"bulk{i:012d}",
                "organization_id": org.id,
                "environment": "sandbox",
                "name": f"bulk-{i}",
                "role": ("admin", "writer", "viewer")[i % 3],
                "scopes": [],
                "type": ("generic", "ci")[i % 2],
                "active": True,
                "prefix": f"ks_sbx_bulk{i:04d}",
                "secret_hash": "0" * 64,
                "created_at": now - timedelta(days=40 if i % 4 == 0 else 1),
                "updated_at": now,
                "expires_at": now + timedelta(days=3 if i % 5 == 0 else 60),
                "revoked_at": now if i % 7 == 0 else None,
                "created_by_user_id": owner_id,
                "created_by_label": "owner@example.com",
            }
            for i in range(start, start + count)
        ],
    )
    db.session.commit()


def _statements(db, client, url: str) -> int:
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = client.get(url)
        assert response.status_code == 200, html_of(response)[:500]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    return len(statements)


@pytest.mark.parametrize(
    "url",
    [
        PAGE,
        f"{PAGE}?q=bulk-1",
        f"{PAGE}?q=ks_sbx_bulk0003",
        f"{PAGE}?filter=expiring",
        f"{PAGE}?filter=unused&q=CI",
    ],
)
def test_search_runs_the_same_statements_for_2000_tokens_as_for_10(signed_in, org, db, url):
    _bulk_tokens(db, org, 10)
    few = _statements(db, signed_in, url)
    _bulk_tokens(db, org, 1990, start=10)
    many = _statements(db, signed_in, url)
    assert few == many


def test_a_huge_environment_renders_one_page_with_true_counts(signed_in, org, db):
    _bulk_tokens(db, org, 2000)
    html = html_of(signed_in.get(PAGE))
    assert len(row_names(html)) == token_list.PER_PAGE
    assert 'rel="next"' in html and "of 2,000 shown" in html
    # The one you need is a search away.
    assert row_names(html_of(signed_in.get(PAGE, query_string={"q": "bulk-1999"}))) == {"bulk-1999"}


# ---------------------------------------------------------------- search: "I found this token"


def test_a_pasted_secret_of_this_organization_names_its_token_with_a_revoke(
    signed_in, org, make_token, db
):
    token, secret = make_token(org, name="leaky", environment="production")
    for headers in ({}, HX):
        response = signed_in.get(PAGE, query_string={"q": f"  {secret}\r\n"}, headers=headers)
        html = html_of(response)
        assert response.status_code == 200
        assert "This is the secret of" in html and "“leaky”" in html
        assert f'action="{PAGE}/{token.id}/revoke"' in html and 'name="csrf_token"' in html
        assert secret not in html  # the box shows the prefix back, never the secret
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["HX-Push-Url"] == f"{PAGE}?environment=sandbox&q={token.prefix}"
    # The one-click revoke is the existing route.
    revoke = signed_in.form(f"{PAGE}/{token.id}/revoke", {"environment": "production"}, page=PAGE)
    assert revoke.status_code == 200
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).revoked_at is not None
    again = html_of(signed_in.get(PAGE, query_string={"q": secret}))
    assert "It is revoked: it no longer works" in again


def test_the_search_box_posts_so_a_pasted_secret_is_never_in_a_url(signed_in, org, make_token):
    token, secret = make_token(org, name="Deploy bot")
    csrf = signed_in.csrf_token(PAGE)
    form = {"csrf_token": csrf, "environment": "sandbox"}

    plain = signed_in.post(f"{PAGE}/search", data={**form, "q": secret})
    assert plain.status_code == 200  # answered in place: no redirect to a URL with the secret
    assert "This is the secret of" in html_of(plain) and secret not in html_of(plain)
    assert plain.headers["Cache-Control"] == "no-store"

    htmx = signed_in.post(f"{PAGE}/search", data={**form, "q": secret}, headers=HX)
    assert secret not in htmx.headers["HX-Push-Url"]
    assert token.prefix in htmx.headers["HX-Push-Url"]
    assert "<html" not in html_of(htmx)

    # Anything else is shown at its bookmarkable address.
    named = signed_in.post(f"{PAGE}/search", data={**form, "q": "Deploy"})
    assert named.status_code == 303
    assert named.headers["Location"] == f"{PAGE}?environment=sandbox&q=Deploy"

    assert signed_in.post(f"{PAGE}/search", data={"q": secret}).status_code == 400  # no CSRF


def test_a_previous_secret_in_its_grace_period_is_found_too(signed_in, org, make_token, db):
    token, old = make_token(org, name="rolled")
    token_service.rotate_token(token, owner_actor(org), grace_seconds=3600)
    db.session.commit()
    html = html_of(signed_in.get(PAGE, query_string={"q": old}))
    assert "This is the previous secret of" in html and "rotation grace" in html


def test_another_organizations_secret_prefix_or_id_reveals_nothing(
    signed_in, make_org, make_token, db
):
    other_org = make_org(name="Other")
    other, secret = make_token(other_org, name="their-secret-token")
    cases = {
        secret: "No token of this organization matches",
        other.prefix: "No token of this organization has this prefix",
        other.id: None,
    }
    for q, message in cases.items():
        response = signed_in.get(PAGE, query_string={"q": q})
        html = html_of(response)
        assert response.status_code == 200
        assert "their-secret-token" not in html and other.id not in html.replace(q, "")
        if message:
            assert message in html
        assert row_names(html) == set()
    assert secret not in html_of(signed_in.get(PAGE, query_string={"q": secret}))
    db.session.expire_all()
    assert db.session.get(ApiToken, other.id).revoked_at is None


def test_a_secret_that_does_not_match_is_not_called_the_token(signed_in, org, make_token):
    token, _ = make_token(org, name="real")
    forged = token_secrets.new_secret("sandbox", token.id)  # right id, right checksum, wrong secret
    html = html_of(signed_in.get(PAGE, query_string={"q": forged}))
    assert "This secret does not work" in html
    assert "This is the secret of" not in html and "Revoke “real”…" not in html


def test_a_mistyped_secret_is_refused_by_its_checksum(signed_in, org, make_token):
    _, secret = make_token(org, name="real")
    mistyped = secret[:-1] + ("x" if secret[-1] != "x" else "y")  # always a different last char
    html = html_of(signed_in.get(PAGE, query_string={"q": mistyped}))
    assert "Not a valid Keysmith secret" in html and "real" not in row_names(html)


def test_a_prefix_as_the_page_shows_it_or_a_bare_id_finds_the_token(signed_in, org, make_token):
    token, _ = make_token(org, name="found-me")
    for q in (f"{token.prefix}…", token.prefix, token.id):
        html = html_of(signed_in.get(PAGE, query_string={"q": q}))
        assert "“found-me”" in html and "Revoke “found-me”…" in html, q
        assert row_names(html) == {"found-me"}


def test_a_viewer_sees_which_token_it_is_but_no_revoke(client, org, make_token, make_member):
    _, secret = make_token(org, name="leaky")
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = html_of(client.get(PAGE, query_string={"q": secret}))
    assert "This is the secret of" in html and "Revoke “leaky”…" not in html
    assert "Ask an owner, an admin or owner@example.com to revoke it." in html


# ---------------------------------------------------------------- hygiene badges and filters


@pytest.fixture
def hygiene_tokens(org, make_token, db):
    expiring, _ = make_token(org, name="expiring-soon", expires_in_days=3)
    unused, _ = make_token(org, name="never-used")
    unused.created_at = utcnow() - timedelta(days=45)
    stale, _ = make_token(org, name="last-used-long-ago")
    stale.created_at = utcnow() - timedelta(days=90)
    stale.last_used_at = utcnow() - timedelta(days=31)
    fresh, _ = make_token(org, name="fresh")
    fresh.created_at = utcnow() - timedelta(days=60)
    fresh.last_used_at = utcnow() - timedelta(days=1)
    db.session.commit()
    return {"expiring": expiring, "unused": unused, "stale": stale, "fresh": fresh}


def test_rows_carry_badges_that_open_the_fix(signed_in, hygiene_tokens):
    """ "Expires soon" opens the rotate form (it offers a new expiry): "· Renew"; "Unused"
    opens the revoke confirmation: "· Revoke…" (issue 20)."""
    html = html_of(signed_in.get(PAGE))
    expiring, unused = hygiene_tokens["expiring"], hygiene_tokens["unused"]
    rotate = f"{PAGE}/{expiring.id}/rotate?environment=sandbox"
    assert f'<a class="badge hygiene expiring" href="{rotate}" hx-get="{rotate}"' in html
    badge = html.split(f'class="badge hygiene expiring" href="{rotate}"')[1].split("</a>")[0]
    assert "· Renew</span>" in badge
    revoke = f"{PAGE}/{unused.id}/revoke?environment=sandbox"
    assert f'<a class="badge hygiene unused" href="{revoke}"' in html
    badge = html.split(f'class="badge hygiene unused" href="{revoke}"')[1].split("</a>")[0]
    assert "· Revoke…</span>" in badge
    assert "Revoke “" in html_of(signed_in.get(revoke))
    fresh_row = html.split(f'id="token-{hygiene_tokens["fresh"].id}"')[1].split("</tr>")[0]
    assert "badge hygiene" not in fresh_row
    assert html.count("badge hygiene unused") == 2  # never used, and not used for 31 days


@pytest.mark.parametrize(
    "name, expected",
    [("expiring", {"expiring-soon"}), ("unused", {"never-used", "last-used-long-ago"})],
)
def test_hygiene_filters_list_only_those_tokens(signed_in, hygiene_tokens, name, expected):
    for headers in ({}, HX):
        html = html_of(signed_in.get(PAGE, query_string={"filter": name}, headers=headers))
        assert row_names(html) == expected
        assert f'name="filter" value="{name}" form="token-search"' in html
    chips = html_of(signed_in.get(PAGE))
    assert 'Expires soon <span class="count">1</span>' in chips
    assert 'Unused <span class="count">2</span>' in chips


def test_filter_chips_keep_the_search_and_the_search_keeps_the_filter(signed_in, hygiene_tokens):
    html = html_of(signed_in.get(PAGE, query_string={"q": "never", "filter": "unused"}))
    assert row_names(html) == {"never-used"}
    assert f'href="{PAGE}?environment=sandbox&amp;q=never&amp;filter=expiring"' in html
    assert f'href="{PAGE}?environment=sandbox&amp;q=never"' in html  # "All"


def test_rotate_form_from_a_badge_works_with_and_without_javascript(signed_in, hygiene_tokens, db):
    token = hygiene_tokens["expiring"]
    url = f"{PAGE}/{token.id}/rotate?environment=sandbox"
    fragment = html_of(signed_in.get(url, headers=HX))
    assert "<html" not in fragment and 'id="rotate-form"' in fragment
    assert "Rotate “expiring-soon”" in fragment and "It expires in" in fragment
    page = html_of(signed_in.get(url))
    assert "<html" in page and 'name="grace_period_seconds"' in page
    response = signed_in.form(
        f"{PAGE}/{token.id}/rotate",
        {"environment": "sandbox", "grace_period_seconds": "86400"},
        page=url,
    )
    assert response.status_code == 200
    secret = SECRET.search(html_of(response)).group(0)
    assert token_service.verify(secret).id == token.id
    unused_form = html_of(signed_in.get(f"{PAGE}/{hygiene_tokens['unused'].id}/rotate"))
    assert "never been used" in unused_form and "revoke it</a> instead" in unused_form


def test_viewers_see_badges_without_the_rotate_link(client, org, hygiene_tokens, make_member):
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = html_of(client.get(PAGE))
    assert (
        '<span class="badge hygiene expiring"' in html
        and '<span class="badge hygiene unused"' in html
    )
    assert "· Renew" not in html and "· Revoke…" not in html and "Rotate…" not in html
    assert client.get(f"{PAGE}/{hygiene_tokens['expiring'].id}/rotate").status_code == 403


def test_badges_follow_the_hygiene_predicates(hygiene_tokens):
    now = utcnow()
    assert hygiene.badges(hygiene_tokens["expiring"], now) == ("expiring",)
    assert hygiene.badges(hygiene_tokens["unused"], now) == ("unused",)
    assert hygiene.badges(hygiene_tokens["fresh"], now) == ()


# ---------------------------------------------------------------- IP allowlist


@pytest.fixture
def token(org, make_token):
    token, _ = make_token(org, name="deploy", role="writer")
    return token


def allowlist(client, token_id: str, text: str, headers=None):
    return client.form(
        f"{PAGE}/{token_id}/allowlist",
        {"allowed_ips": text},
        page=f"{PAGE}/{token_id}",
        headers=headers or {},
    )


def test_owner_sets_and_clears_the_allowlist_audited(signed_in, token, db):
    response = allowlist(signed_in, token.id, "203.0.113.7\n10.0.0.0/8, 2001:db8::/32")
    assert response.status_code == 302
    html = html_of(signed_in.get(response.headers["Location"]))
    assert "IP allowlist saved." in html and "<code>10.0.0.0/8</code>" in html
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).allowed_ips == [
        "203.0.113.7/32",
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
    event = db.session.scalar(
        sa.select(AuditEvent).where(
            AuditEvent.action == "token.updated", AuditEvent.target_id == token.id
        )
    )
    assert event.details["allowed_ips"]["to"][0] == "203.0.113.7/32"
    cleared = allowlist(signed_in, token.id, "", HX)
    assert cleared.status_code == 200 and "Any address may use this token" in html_of(cleared)
    assert "<html" not in html_of(cleared) and 'id="allowlist"' in html_of(cleared)
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).allowed_ips is None


@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_an_invalid_range_keeps_what_was_typed_and_changes_nothing(signed_in, token, db, headers):
    token_service.update_token(token, owner_actor(token.organization), allowed_ips=["10.0.0.1"])
    db.session.commit()
    typed = "192.168.0.0/16\n10.0.0.300/8"
    response = allowlist(signed_in, token.id, typed, headers)
    html = html_of(response)
    assert response.status_code == 400
    assert "&#39;10.0.0.300/8&#39; is not an IP address or CIDR range" in html
    assert "192.168.0.0/16\n10.0.0.300/8</textarea>" in html
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).allowed_ips == ["10.0.0.1/32"]


def test_token_page_shows_the_allowlist_and_last_used_ip(signed_in, token, db):
    token.last_used_ip = "198.51.100.4"
    token.allowed_ips = ["198.51.100.0/24"]
    db.session.commit()
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    assert '<code class="last-ip">198.51.100.4</code>' in html
    assert "<li><code>198.51.100.0/24</code></li>" in html
    assert "198.51.100.0/24</textarea>" in html


def test_viewer_sees_it_read_only_and_a_forged_post_gets_403(client, org, token, make_member, db):
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = html_of(client.get(f"{PAGE}/{token.id}"))
    assert "IP allowlist" in html and "<textarea" not in html
    assert allowlist(client, token.id, "10.0.0.0/8").status_code == 403
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).allowed_ips is None


def test_member_edits_own_tokens_allowlist_only(client, org, token, make_member, db):
    member = make_member(org, role="member")
    client.sign_in(member.user.email)
    assert allowlist(client, token.id, "10.0.0.0/8").status_code == 403
    actor = owner_actor(org)
    own, _ = token_service.create_token(
        org,
        type(actor)(organization=org, membership=member),
        name="mine",
        environment="sandbox",
        role="writer",
        expires_at=token_service.expiry_from_days(30),
    )
    db.session.commit()
    assert allowlist(client, own.id, "10.0.0.0/8").status_code == 302


def test_allowlist_needs_csrf_and_the_current_organization(
    signed_in, token, make_org, make_token, db
):
    response = signed_in.post(f"{PAGE}/{token.id}/allowlist", data={"allowed_ips": "10.0.0.1"})
    assert response.status_code == 400
    other, _ = make_token(make_org(name="Other"))
    assert allowlist(signed_in, other.id, "10.0.0.1").status_code == 404
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).allowed_ips is None


def test_create_form_takes_allowed_ips(signed_in, db):
    form = {
        "name": "restricted",
        "environment": "sandbox",
        "role": "writer",
        "type": "ci",
        "expires_in_days": "90",
    }
    bad = signed_in.form(PAGE, {**form, "allowed_ips": "not-an-ip"}, page=PAGE)
    assert bad.status_code == 400 and "is not an IP address or CIDR range" in html_of(bad)
    assert "not-an-ip</textarea>" in html_of(bad)
    assert db.session.scalar(sa.select(ApiToken).where(ApiToken.name == "restricted")) is None
    good = signed_in.form(PAGE, {**form, "allowed_ips": "10.1.0.0/16"}, page=PAGE)
    assert good.status_code == 200
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.name == "restricted"))
    assert token.allowed_ips == ["10.1.0.0/16"]


# ---------------------------------------------------------------- leak banner


BANNER = "reported leaked and revoked"


def test_a_reported_leak_shows_the_banner_to_admins_only(client, org, make_token, make_member, db):
    _, secret = make_token(org, name="leaked")
    admin, member, viewer = (make_member(org, role=r) for r in ("admin", "member", "viewer"))
    client.sign_in(admin.user.email)
    assert BANNER not in html_of(client.get(PAGE))
    assert leaks.report_leaks([secret]).revoked == 1
    db.session.commit()
    html = html_of(client.get(PAGE))
    assert BANNER in html and ">Dismiss</button>" in html
    for person in (member, viewer):
        client.post("/logout", data={"csrf_token": client.csrf_token(PAGE)})
        client.sign_in(person.user.email)
        assert BANNER not in html_of(client.get(PAGE))


def test_an_admin_dismisses_the_banner_for_everyone_audited(
    client, org, make_token, make_member, db
):
    _, secret = make_token(org, name="leaked")
    leaks.report_leaks([secret])
    db.session.commit()
    admin = make_member(org, role="admin")
    client.sign_in(admin.user.email)
    response = client.form(
        "/organizations/leak-alert/dismiss", {"next": f"{PAGE}?environment=production"}, page=PAGE
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{PAGE}?environment=production"
    assert BANNER not in html_of(client.get(PAGE))
    db.session.expire_all()
    assert db.session.get(Organization, org.id).leak_alert_at is None
    event = db.session.scalar(
        sa.select(AuditEvent).where(AuditEvent.action == "leak_alert.dismissed")
    )
    assert event.actor_label == admin.user.email and event.organization_id == org.id


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_dismiss(client, org, make_member, db, role):
    org.leak_alert_at = utcnow()
    db.session.commit()
    person = make_member(org, role=role)
    client.sign_in(person.user.email)
    assert client.form("/organizations/leak-alert/dismiss", page=PAGE).status_code == 403
    db.session.expire_all()
    assert db.session.get(Organization, org.id).leak_alert_at is not None


def test_dismiss_needs_csrf_and_ignores_a_foreign_next(signed_in, org, db):
    org.leak_alert_at = utcnow()
    db.session.commit()
    assert signed_in.post("/organizations/leak-alert/dismiss").status_code == 400
    db.session.expire_all()
    assert db.session.get(Organization, org.id).leak_alert_at is not None
    response = signed_in.form(
        "/organizations/leak-alert/dismiss", {"next": "https://evil.example/"}, page=PAGE
    )
    assert response.headers["Location"] == PAGE
