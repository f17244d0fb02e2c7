"""Rotating on the pages (SPEC §2–§3, issue 20): the grace preselects 24 hours, "none" asks
before it stops a secret in use (without JavaScript too), and an expired token is renewed
with a new expiry instead of a rotation that claims the old secret keeps working."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from models import ApiToken, utcnow
from services import tokens as token_service
from services.errors import AuthFailed

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


@pytest.fixture
def token(org, make_token):
    return make_token(org, name="deploy", role="writer", expires_in_days=30)


@pytest.fixture
def expired(db, org, make_token):
    token, secret = make_token(org, name="old-key", role="writer", expires_in_days=30)
    token.expires_at = utcnow() - timedelta(days=2)
    db.session.commit()
    return token, secret


def rotate(client, token_id, data, headers=None, page=None):
    payload = {"environment": "sandbox", **data}
    return client.form(
        f"{PAGE}/{token_id}/rotate", payload, page=page or PAGE, headers=headers or {}
    )


def html_of(response) -> str:
    return response.get_data(as_text=True)


def test_the_rotate_form_preselects_24_hours(signed_in, token):
    html = html_of(signed_in.get(f"{PAGE}/{token[0].id}/rotate"))
    assert '<option value="86400" selected>24 hours</option>' in html
    assert '<option value="0">None' in html


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_none_asks_before_it_stops_the_old_secret(signed_in, db, token, htmx):
    token, old = token
    hash_before = token.secret_hash
    response = rotate(signed_in, token.id, {"grace_period_seconds": "0"}, HX if htmx else {})
    html = html_of(response)
    assert response.status_code == 400
    assert SECRET.search(html) is None
    assert 'id="rotate-form"' in html and "stops the old secret at once" in html
    assert 'name="stop_old_secret"' in html
    assert '<option value="0" selected>' in html  # the choice made, kept for the answer
    if htmx:
        assert "<html" not in html
        assert response.headers["HX-Retarget"] == "#add-slot"
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).secret_hash == hash_before
    assert token_service.verify(old).id == token.id


def test_from_the_rotate_form_the_question_replaces_the_form(signed_in, token):
    token, _ = token
    response = rotate(signed_in, token.id, {"grace_period_seconds": "0", "from": "rotate-form"}, HX)
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#rotate-form"
    assert response.headers["HX-Reswap"] == "outerHTML"


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_none_once_confirmed_stops_the_old_secret_at_once(signed_in, token, htmx):
    token, old = token
    response = rotate(
        signed_in,
        token.id,
        {"grace_period_seconds": "0", "stop_old_secret": "y"},
        HX if htmx else {},
    )
    html = html_of(response)
    assert response.status_code == 200, html
    secret = SECRET.search(html).group(0)
    assert token_service.verify(secret).id == token.id
    assert "The previous secret no longer works." in html
    with pytest.raises(AuthFailed):  # the old secret is dead
        token_service.verify(old)


def test_an_expired_tokens_form_offers_a_renewal_and_no_grace(signed_in, expired):
    token, _ = expired
    html = html_of(signed_in.get(f"{PAGE}/{token.id}/rotate"))
    assert "Renew “old-key”" in html
    assert "It expired" in html
    assert 'name="grace_period_seconds"' not in html
    assert 'name="expires_in_days"' in html
    assert "Keep the current expiry" not in html
    assert "Renew token" in html


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_expired_token_is_renewed_with_a_new_expiry(signed_in, db, expired, htmx):
    token, old = expired
    response = rotate(
        signed_in,
        token.id,
        {"expires_in_days": "30", "from": "rotate-form"},
        HX if htmx else {},
    )
    html = html_of(response)
    assert response.status_code == 200, html
    secret = SECRET.search(html).group(0)
    assert token_service.verify(secret).id == token.id
    assert "previous secret keeps working" not in html
    assert "Renewed" in html and "The expired secret stays unusable" in html
    db.session.expire_all()
    renewed = db.session.get(ApiToken, token.id)
    assert renewed.expires_at > utcnow() + timedelta(days=29)
    assert renewed.previous_secret_expires_at is None


def test_an_expired_token_rotated_from_the_row_is_asked_for_a_new_expiry(signed_in, expired):
    """The list's Actions menu posts only a grace: the answer is the renewal form."""
    token, _ = expired
    response = rotate(signed_in, token.id, {"grace_period_seconds": "3600"}, HX)
    html = html_of(response)
    assert response.status_code == 400
    assert SECRET.search(html) is None
    assert "Renew “old-key”" in html and "has expired" in html
    assert response.headers["HX-Retarget"] == "#add-slot"


def test_rotation_may_also_give_a_live_token_a_new_expiry(signed_in, db, token):
    token, _ = token
    html = html_of(signed_in.get(f"{PAGE}/{token.id}/rotate"))
    assert "Keep the current expiry" in html
    response = rotate(
        signed_in,
        token.id,
        {"grace_period_seconds": "3600", "expires_in_days": "180", "from": "rotate-form"},
    )
    assert response.status_code == 200, html_of(response)
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).expires_at > utcnow() + timedelta(days=179)
    assert "The previous secret keeps working until" in html_of(response)


def test_a_custom_date_past_the_policy_is_the_expiry_fields_error(signed_in, org, db, token):
    token, _ = token
    org.max_lifetime_days = 90
    db.session.commit()
    far = (utcnow() + timedelta(days=400)).date().isoformat()
    response = rotate(
        signed_in,
        token.id,
        {
            "grace_period_seconds": "3600",
            "expires_in_days": "custom",
            "expires_at": far,
            "from": "rotate-form",
        },
    )
    html = html_of(response)
    assert response.status_code == 400
    assert 'id="rotate-form"' in html and "90 days" in html
    assert f'value="{far}"' in html
