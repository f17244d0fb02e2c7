"""Connections → Webhooks (issue 15): owners and admins add endpoints (the secret shown
once), reveal it again with their password, roll it, send test events and redeliver;
members and viewers see neither URLs nor secrets; every form needs CSRF."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from hot_path_support import owner_actor

from models import WebhookDelivery, WebhookEndpoint, utcnow
from services import webhooks

PAGE = "/connections/webhooks"
URL = "https://hooks.example.com/T000/B000/very-secret-path"


@pytest.fixture
def owner(make_user):
    return make_user(email="olive@example.com")


@pytest.fixture
def org(make_org, owner):
    return make_org(owner=owner)


@pytest.fixture
def endpoint(db, org):
    endpoint, _ = webhooks.create_endpoint(org, owner_actor(org), url=URL, events=["token.created"])
    db.session.commit()
    return endpoint


def html(response) -> str:
    return response.get_data(as_text=True)


def _secret(text: str) -> str | None:
    match = re.search(r'<code id="new-secret" aria-label="Signing secret">([^<]+)</code>', text)
    return match.group(1) if match else None


def test_owner_adds_an_endpoint_and_sees_its_secret_once(client, db, org, owner):
    client.sign_in(owner.email)
    response = client.form(
        PAGE,
        {"url": URL, "events": ["token.created", "token.revoked"], "enabled": "y"},
        page=PAGE,
    )
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    secret = _secret(html(response))
    assert secret and secret.startswith("whsec_")
    [endpoint] = db.session.scalars(sa.select(WebhookEndpoint)).all()
    assert (endpoint.url, endpoint.events, endpoint.enabled) == (
        URL,
        ["token.created", "token.revoked"],
        True,
    )
    assert secret == webhooks.secret_for(endpoint.secret_salt)
    assert f'value="{URL}"' not in html(response)  # the add form starts afresh
    again = html(client.get(PAGE))
    assert secret not in again and URL in again  # owners see URLs, never the secret again


def test_htmx_create_answers_the_region(client, db, org, owner):
    client.sign_in(owner.email)
    response = client.form(
        PAGE, {"url": URL, "events": ["token.created"]}, page=PAGE, headers={"HX-Request": "true"}
    )
    text = html(response)
    assert response.status_code == 200 and "<html" not in text
    assert 'id="webhooks-region"' in text and _secret(text)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8080/internal-admin/reset", "https://"),
        ("https://127.0.0.1/internal-admin/reset", "not allowed"),
        ("https://169.254.169.254/latest/meta-data/", "not allowed"),
        ("", "Enter the endpoint"),
    ],
)
def test_a_refused_url_is_shown_beside_the_field_and_nothing_is_saved(
    client, db, org, owner, url, message
):
    client.sign_in(owner.email)
    response = client.form(PAGE, {"url": url, "events": ["token.created"]}, page=PAGE)
    assert response.status_code == 400
    assert message in html(response) and f'value="{url}"' in html(response)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_neither_urls_nor_secrets(
    client, db, org, endpoint, make_member, role
):
    member = make_member(org, role)
    client.sign_in(member.user.email)
    text = html(client.get(PAGE))
    assert "Only owners and admins" in text
    assert "hooks.example.com" not in text and "very-secret-path" not in text
    assert client.get(f"{PAGE}/{endpoint.id}").status_code == 403
    assert client.form(PAGE, {"url": URL, "events": ["token.created"]}, page=PAGE).status_code == (
        403
    )
    for action in ("roll", "end-overlap", "reveal", "test", "delete"):
        assert client.form(f"{PAGE}/{endpoint.id}/{action}", page=PAGE).status_code == 403
    assert "very-secret-path" not in html(client.get("/connections/audit-log"))


def test_an_endpoint_of_another_organization_is_404(client, db, make_org, make_user, endpoint):
    stranger = make_user()
    make_org(owner=stranger, name="Elsewhere")
    client.sign_in(stranger.email)
    assert client.get(f"{PAGE}/{endpoint.id}").status_code == 404
    assert client.form(f"{PAGE}/{endpoint.id}/test", page=PAGE).status_code == 404


def test_revealing_the_secret_asks_for_the_password_again(client, db, org, owner, endpoint):
    client.sign_in(owner.email)
    wrong = client.form(f"{PAGE}/{endpoint.id}/reveal", {"password": "not my password"}, page=PAGE)
    assert wrong.status_code == 400 and "That is not your password" in html(wrong)
    assert _secret(html(wrong)) is None
    right = client.form(
        f"{PAGE}/{endpoint.id}/reveal", {"password": "correct horse battery"}, page=PAGE
    )
    assert right.status_code == 200 and right.headers["Cache-Control"] == "no-store"
    assert _secret(html(right)) == webhooks.secret_for(endpoint.secret_salt)
    assert f'value="{URL}"' in html(right)


def test_wrong_passwords_on_the_reveal_form_are_throttled_like_sign_ins(
    client, db, org, owner, endpoint, app
):
    app.config["LOGIN_THROTTLE"] = "2 per 15 minutes"
    client.sign_in(owner.email)
    for _ in range(2):
        wrong = client.form(f"{PAGE}/{endpoint.id}/reveal", {"password": "guess"}, page=PAGE)
        assert wrong.status_code == 400
    right = client.form(
        f"{PAGE}/{endpoint.id}/reveal", {"password": "correct horse battery"}, page=PAGE
    )
    assert right.status_code == 429 and "Too many wrong passwords" in html(right)
    assert _secret(html(right)) is None


def test_rolling_shows_the_new_secret_and_how_long_the_old_one_signs(
    client, db, org, owner, endpoint
):
    old = webhooks.secret_for(endpoint.secret_salt)
    client.sign_in(owner.email)
    response = client.form(f"{PAGE}/{endpoint.id}/roll", page=PAGE)
    text = html(response)
    new = _secret(text)
    assert new and new != old and "keeps signing beside this one until" in text
    db.session.expire_all()
    assert webhooks.signing_secrets(db.session.get(WebhookEndpoint, endpoint.id)) == [new, old]
    # The settings beside it are the endpoint's, not the (empty) fields of the roll's post.
    assert f'value="{URL}"' in text
    assert re.search(r'<input checked[^>]*value="token.created"', text), text
    assert re.search(r'<input checked[^>]*name="enabled"', text)


def test_the_previous_secret_can_be_stopped_before_its_24_hours(client, db, org, owner, endpoint):
    """Rolled because the old secret leaked: the owner stops it signing at once, audited."""
    from models import AuditEvent

    client.sign_in(owner.email)
    page = f"{PAGE}/{endpoint.id}"
    assert "Stop the previous secret now" not in html(client.get(page))  # nothing overlaps
    new = _secret(html(client.form(f"{page}/roll", page=PAGE)))
    assert "Stop the previous secret now" in html(client.get(page))
    ended = client.form(f"{page}/end-overlap", page=page)
    assert ended.status_code == 303 and ended.headers["Location"].endswith(page)
    db.session.expire_all()
    assert webhooks.signing_secrets(db.session.get(WebhookEndpoint, endpoint.id)) == [new]
    after = html(client.get(page))
    assert "The previous secret no longer signs" in after and "signs too until" not in after
    actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert actions.count("webhook.previous_secret_ended") == 1
    client.form(f"{page}/end-overlap", page=page)  # again: nothing to end, nothing recorded
    actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert actions.count("webhook.previous_secret_ended") == 1


def test_send_test_event_and_redeliver_inline_and_without_javascript(
    client, db, org, owner, endpoint
):
    client.sign_in(owner.email)
    page = f"{PAGE}/{endpoint.id}"
    plain = client.form(f"{page}/test", page=page)
    assert plain.status_code == 303 and plain.headers["Location"].endswith(page)
    text = html(client.get(page))
    assert "Test event queued" in text and "ping" in text and "Pending" in text

    fragment = client.form(f"{page}/test", page=page, headers={"HX-Request": "true"})
    assert "<html" not in html(fragment) and 'id="deliveries"' in html(fragment)
    assert 'hx-trigger="load delay:2s"' in html(fragment)  # refreshes while one is on its way
    first = db.session.scalars(sa.select(WebhookDelivery)).first()
    redelivered = client.form(
        f"{page}/deliveries/{first.id}/redeliver", page=page, headers={"HX-Request": "true"}
    )
    assert "queued for redelivery" in html(redelivered)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 3


def test_editing_and_deleting_an_endpoint(client, db, org, owner, endpoint):
    client.sign_in(owner.email)
    endpoint_id = endpoint.id
    page = f"{PAGE}/{endpoint_id}"
    saved = client.form(page, {"url": URL, "events": ["token.revoked"]}, page=page)
    assert saved.status_code == 303
    db.session.expire_all()
    changed = db.session.get(WebhookEndpoint, endpoint.id)
    assert changed.events == ["token.revoked"] and changed.enabled is False  # box unticked
    assert client.form(f"{page}/delete", page=page).status_code == 303
    db.session.expunge_all()
    assert db.session.get(WebhookEndpoint, endpoint_id) is None


def test_forms_need_csrf(client, db, org, owner, endpoint):
    client.sign_in(owner.email)
    assert client.post(PAGE, data={"url": URL, "events": "token.created"}).status_code == 400
    assert client.post(f"{PAGE}/{endpoint.id}/roll").status_code == 400


def test_owners_and_admins_see_a_banner_for_a_failing_endpoint(
    client, db, org, owner, endpoint, make_member
):
    endpoint.failing_since = utcnow()
    db.session.commit()
    client.sign_in(owner.email)
    assert "webhook endpoint failed for 3 days" in html(client.get("/connections/api-tokens"))
    assert "Failing" in html(client.get(PAGE))
    client.post("/logout", data={"csrf_token": client.csrf_token(PAGE)})
    member = make_member(org, "member")
    client.sign_in(member.user.email)
    assert "failed for 3 days" not in html(client.get("/connections/api-tokens"))


@pytest.mark.parametrize("action", ["add", "update", "roll", "end-overlap", "delete"])
def test_changing_webhooks_asks_for_the_password_after_ten_minutes(
    client, db, org, owner, endpoint, action
):
    """Sudo mode (SPEC §1): webhooks, like the key policy, are changed only by someone who
    gave their password in the last 10 minutes."""
    from datetime import timedelta

    from models import UserSession
    from tests.conftest import PASSWORD

    client.sign_in(owner.email)
    db.session.execute(
        sa.update(UserSession).values(authenticated_at=utcnow() - timedelta(minutes=11))
    )
    db.session.commit()
    url, data = {
        "add": (PAGE, {"url": URL + "/2", "events": ["token.created"]}),
        "update": (f"{PAGE}/{endpoint.id}", {"url": URL, "events": ["token.revoked"]}),
        "roll": (f"{PAGE}/{endpoint.id}/roll", {}),
        "end-overlap": (f"{PAGE}/{endpoint.id}/end-overlap", {}),
        "delete": (f"{PAGE}/{endpoint.id}/delete", {}),
    }[action]
    asked = client.form(url, data, page=PAGE)
    assert asked.status_code == 200 and "Confirm access" in html(asked)
    db.session.expire_all()
    endpoints = db.session.scalars(sa.select(WebhookEndpoint)).all()
    assert [(e.id, e.events, e.secret_salt) for e in endpoints] == [
        (endpoint.id, ["token.created"], endpoint.secret_salt)
    ]  # nothing changed yet
    carried = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html(asked)))
    done = client.post(url, data={**carried, **data, "sudo_password": PASSWORD})
    assert done.status_code in (200, 302, 303), html(done)
    assert "Confirm access" not in html(done)


def test_test_events_and_redeliveries_are_limited_per_organization(
    client, db, org, owner, endpoint, make_org, make_user
):
    """Each queues a POST to the organization's URL: 10 a minute per organization (security
    review of issue 15), refused with a clear message inline (htmx) or on the page."""
    client.sign_in(owner.email)
    page = f"{PAGE}/{endpoint.id}"
    htmx = {"HX-Request": "true"}
    for _ in range(5):
        assert client.form(f"{page}/test", page=page, headers=htmx).status_code == 200
    first = db.session.scalars(sa.select(WebhookDelivery)).first()
    for _ in range(5):
        answer = client.form(f"{page}/deliveries/{first.id}/redeliver", page=page, headers=htmx)
        assert answer.status_code == 200
    count = db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery))
    assert count == 10

    refused = client.form(f"{page}/test", page=page, headers=htmx)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    text = html(refused)
    assert 'id="deliveries"' in text and "<html" not in text  # swapped in place
    assert "Too many test events and redeliveries" in text and 'role="alert"' in text
    plain = client.form(f"{page}/deliveries/{first.id}/redeliver", page=page)
    assert plain.status_code == 429 and "<html" in html(plain)
    assert "Too many test events and redeliveries" in html(plain)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 10

    # Another organization has its own allowance.
    other_owner = make_user(email="otto@example.com")
    other = make_org(owner=other_owner)
    theirs, _ = webhooks.create_endpoint(
        other, owner_actor(other), url=URL, events=["token.created"]
    )
    db.session.commit()
    client.post("/logout", data={"csrf_token": client.csrf_token(PAGE)})
    client.sign_in(other_owner.email)
    other_page = f"{PAGE}/{theirs.id}"
    assert client.form(f"{other_page}/test", page=other_page, headers=htmx).status_code == 200
