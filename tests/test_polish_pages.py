"""Console polish (issue 20) that a person relies on, page by page: a secret panel that
survives a failed create, words instead of raw values, the invite form's reset, focus after
a failed sign-in, and links where the text says to go somewhere."""

from __future__ import annotations

import re

import pytest

from models import utcnow
from services import tokens as token_service
from tests.conftest import owner_actor

PAGE = "/connections/api-tokens"
HX = {"HX-Request": "true"}


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


def html_of(response) -> str:
    return response.get_data(as_text=True)


def test_a_failed_create_answers_the_form_alone_so_the_secret_panel_stays(signed_in, org):
    data = {"name": "CI", "environment": "sandbox", "role": "writer", "expires_in_days": "90"}
    assert signed_in.form(PAGE, data, page=PAGE, headers=HX).status_code == 200
    response = signed_in.form(PAGE, data, page=PAGE, headers=HX)  # the same name again
    html = html_of(response)
    assert response.status_code == 400
    assert "already exists" in html and 'id="add-form"' in html
    assert 'id="secret-panel"' not in html and 'id="tokens-region"' not in html
    assert response.headers["HX-Retarget"] == "#add-form"
    assert response.headers["HX-Reswap"] == "outerHTML"


def test_the_tokens_page_says_its_rate_limit_in_words(signed_in, org, make_token):
    token, _ = make_token(org, name="ci")
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    assert "a minute" in html and "bursts of" in html
    assert "<code>1000/minute;100/second</code>" not in html


def test_the_tokens_page_tells_its_events_in_words_and_keeps_the_code(
    signed_in, org, make_token, db
):
    token, _ = make_token(org, name="ci", expires_in_days=30)
    token_service.rotate_token(token, owner_actor(org), grace_seconds=86400)
    db.session.commit()
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    assert (
        "Rotated a token’s secret" in html and '<code class="action">token.rotated</code>' in html
    )
    assert "Old secret kept working for: 24 hours" in html
    assert "86400" not in html
    assert 'data-label="When"' in html  # stacks at phone width


def test_the_audit_log_tells_actions_in_words_with_the_code_for_filtering(
    signed_in, org, make_token, db
):
    token, _ = make_token(org, name="ci", expires_in_days=30)
    token_service.rotate_token(token, owner_actor(org), grace_seconds=3600)
    token_service.update_token(token, owner_actor(org), scopes=["tokens:read"])
    db.session.commit()
    html = html_of(signed_in.get("/connections/audit-log"))
    assert "Rotated a token’s secret" in html
    assert 'href="/connections/audit-log?action=token.rotated"' in html
    assert "Old secret kept working for: 1 hour" in html
    assert "Scopes: none (all the role allows) → tokens:read" in html
    assert "grace period seconds" not in html and "[]" not in html
    assert ">Rotated a token’s secret (token.rotated)</option>" in html


def test_the_chart_has_a_y_axis(signed_in, org, make_token):
    token, _ = make_token(org, name="ci")
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    assert 'class="chart-y muted"' in html


def test_after_an_invite_the_form_is_back_to_the_default_role(signed_in):
    response = signed_in.form(
        "/settings/members", {"email": "new@example.com", "role": "admin"}, page="/settings/members"
    )
    html = html_of(response)
    assert response.status_code == 200
    assert re.search(r'<option selected value="member">|<option value="member" selected', html)
    assert not re.search(r'<option selected value="admin">|<option value="admin" selected', html)
    assert "Revoke invite" in html and ">Cancel</button>" not in html


def test_the_invite_page_has_no_stray_space_before_the_full_stop(client, org, owner, db):
    from services import members

    _, secret = members.invite(org, owner_actor(org), email="guest@example.com", role="admin")
    db.session.commit()
    html = html_of(client.get(f"/invites/{secret}"))
    assert "as <strong>Admin</strong>." in html


def test_a_failed_sign_in_puts_focus_on_the_password(client, owner):
    response = client.form(
        "/login", {"email": owner.email, "password": "wrong one here"}, page="/login"
    )
    html = html_of(response)
    assert response.status_code == 401
    assert re.search(
        r'<input[^>]*autofocus[^>]*name="password"|<input[^>]*name="password"[^>]*autofocus', html
    )
    assert not re.search(r'<input[^>]*name="email"[^>]*autofocus', html)


def test_an_email_in_use_offers_a_sign_in_link(client, owner):
    data = {
        "name": "X",
        "email": owner.email,
        "password": "a long enough password",
        "organization": "O",
    }
    html = html_of(client.form("/signup", data, page="/signup"))
    assert re.search(r'<a href="/login[^"]*">Sign in instead</a>', html)


def test_sign_up_and_the_empty_state_say_what_tokens_are_for(client):
    html = html_of(client.get("/signup"))
    assert "call the Keysmith API" in html


def test_the_page_has_a_skip_link_and_a_live_region(signed_in):
    html = html_of(signed_in.get(PAGE))
    assert '<a class="skip-link" href="#main">Skip to main content</a>' in html
    assert 'id="announcer"' in html and 'aria-live="polite"' in html


def test_rotate_page_focuses_the_grace_choice(signed_in, org, make_token):
    token, _ = make_token(org, name="ci", expires_in_days=30)
    html = html_of(signed_in.get(f"{PAGE}/{token.id}/rotate"))
    assert re.search(
        r'<select id="rotate-grace-[^"]+" name="grace_period_seconds"[^>]*autofocus', html
    )
    assert utcnow()  # the clock the fixtures share


def test_the_policy_page_says_the_rate_limit_in_words(signed_in, org, app, make_member):
    html = html_of(signed_in.get("/settings/policy"))
    assert "Saved now: 1,000 a minute, bursts of 100 a second." in html
    viewer = make_member(org, role="viewer")
    other = app.test_client()
    other.sign_in(viewer.user.email)
    html = html_of(other.get("/settings/policy"))
    assert ">1,000 a minute, bursts of 100 a second</span> per token" in html


def test_a_revoked_tokens_page_says_when_and_by_whom(signed_in, org, make_token, db):
    token, _ = make_token(org, name="ci")
    token_service.revoke_token(token, owner_actor(org))
    db.session.commit()
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    revoked = r"<dt>Revoked</dt><dd><time[^>]*>[^<]*</time> <small class=\"muted\">by "
    assert re.search(revoked, html)


def test_an_expired_tokens_page_offers_renew(signed_in, org, make_token, db):
    token, _ = make_token(org, name="ci")
    token.expires_at = utcnow().replace(year=2020)
    db.session.commit()
    html = html_of(signed_in.get(f"{PAGE}/{token.id}"))
    assert ">Renew…</a>" in html and ">Rotate…</a>" not in html


# ---------------------------------------------------------------- the token list (part 2)


def row_html(html: str, token_id: str) -> str:
    return html.split(f'id="token-{token_id}"')[1].split("</tr>")[0]


def test_the_actions_menu_opens_the_rotate_form_or_renew_once_expired(
    signed_in, org, make_token, db
):
    live, _ = make_token(org, name="live")
    lapsed, _ = make_token(org, name="lapsed")
    lapsed.expires_at = utcnow().replace(year=2020)
    db.session.commit()
    html = html_of(signed_in.get(PAGE))
    rotate = f"{PAGE}/{live.id}/rotate?environment=sandbox"
    row = row_html(html, live.id)
    assert f'href="{rotate}" hx-get="{rotate}" hx-target="#add-slot"' in row
    assert ">Rotate…<" in row and "grace_period_seconds" not in row  # no inline grace choice
    assert ">Renew…<" in row_html(html, lapsed.id)
    form = html_of(signed_in.get(rotate, headers=HX))
    assert '<option value="86400" selected>' in form  # 24 hours, as on the rotate page
    assert 'name="stop_old_secret"' in form  # "None" asks first


def test_a_row_says_how_long_the_previous_secret_works(signed_in, org, make_token, db):
    token, _ = make_token(org, name="rotated")
    plain, _ = make_token(org, name="plain")
    token_service.rotate_token(token, owner_actor(org), grace_seconds=3600)
    db.session.commit()
    html = html_of(signed_in.get(PAGE))
    note = r'<small class="row-note grace">Previous secret works until <time datetime="[^"]+"'
    assert re.search(note, row_html(html, token.id))
    assert "row-note" not in row_html(html, plain.id)
    token.previous_secret_expires_at = utcnow().replace(year=2020)  # the grace is over
    db.session.commit()
    assert "row-note" not in row_html(html_of(signed_in.get(PAGE)), token.id)


def test_a_revoked_row_says_when_and_by_whom_instead_of_expiry_and_use(
    signed_in, org, make_token, db
):
    token, _ = make_token(org, name="gone")
    token_service.revoke_token(token, owner_actor(org))
    db.session.commit()
    for headers in ({}, HX):
        row = row_html(html_of(signed_in.get(PAGE, headers=headers)), token.id)
        assert re.search(r'<small class="row-note">Revoked <time [^>]+>[^<]+</time> by ', row)
        assert "in 90 days" not in row  # its expiry is not shown any more
    # The row htmx swaps in after a revoke says it too, and its notice is read out.
    other, _ = make_token(org, name="next")
    response = signed_in.form(
        f"{PAGE}/{other.id}/revoke", {"environment": "sandbox"}, page=PAGE, headers=HX
    )
    html = html_of(response)
    assert 'data-announce="Revoked “next”.' in html
    assert '<small class="row-note">Revoked ' in html and " by " in html


def test_a_viewer_is_told_why_there_is_no_add(client, org, make_member, make_token):
    make_token(org, name="someone's")
    viewer = make_member(org, role="viewer")
    client.sign_in(viewer.user.email)
    html = html_of(client.get(PAGE))
    assert '<p class="viewer-hint">As a viewer you can see these tokens' in html
    assert ">+ Add</a>" not in html


def test_no_search_or_zero_chips_before_the_first_token(signed_in, org, make_token):
    html = html_of(signed_in.get(PAGE))
    assert "tokens-region env-sandbox no-tokens" in html  # app.css hides the search box
    assert 'class="filter-chips"' not in html
    assert html.count(">+ Add</a>") == 1
    assert html.count(">API tokens</") == 2  # the tab, and the heading only screen readers read
    assert 'class="visually-hidden">API tokens</h2>' in html
    make_token(org, name="first")
    html = html_of(signed_in.get(PAGE))
    assert "no-tokens" not in html and 'class="filter-chips"' in html
    assert html.count(">+ Add</a>") == 1
