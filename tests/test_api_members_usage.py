"""GET /api/v1/members (scope members:read) and GET /api/v1/api_tokens/<id>/usage."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_support import API, bearer, error_code

from models import TokenUsage, utcnow
from services import tokens as token_service

MEMBER_FIELDS = {"id", "email", "name", "role", "joined_at"}


def test_members_lists_the_organizations_people_and_roles_and_nothing_secret(
    client, make_org, make_member, make_user, make_token
):
    owner = make_user(name="Olive Owner")
    org = make_org(owner)
    viewer = make_member(org, role="viewer", user=make_user(name="Vic Viewer"))
    other_org = make_org(make_user(name="Elsewhere"))
    make_member(other_org, role="admin")
    _, secret = make_token(org, name="reader", role="viewer")
    response = client.get(f"{API}/members", headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["query"] == {"found": 2, "length": 2, "offset": 0, "total": 2, "has_more": False}
    assert [(m["email"], m["role"]) for m in body["members"]] == [
        (owner.email, "owner"),
        (viewer.user.email, "viewer"),
    ]
    for member in body["members"]:
        assert set(member) == MEMBER_FIELDS
        assert member["joined_at"].endswith("Z")
    text = response.get_data(as_text=True)
    assert "password" not in text and "$2b$" not in text and "totp" not in text.lower()


def test_members_pages_with_offset_and_length(client, make_org, make_member, make_token):
    org = make_org()
    for _ in range(3):
        make_member(org)
    _, secret = make_token(org, name="reader", role="viewer")
    answer = client.get(
        f"{API}/members", query_string={"offset": 1, "length": 2}, headers=bearer(secret)
    )
    page = answer.get_json()
    assert page["query"] == {"found": 4, "length": 2, "offset": 1, "total": 4, "has_more": True}
    assert len(page["members"]) == 2
    # More follow: Link names the next page, which a client can follow as it is.
    link = answer.headers["Link"]
    assert link.endswith('>; rel="next"') and "offset=3" in link and "length=2" in link
    following = client.get(link[1 : link.index(">")], headers=bearer(secret))
    rest = following.get_json()
    assert rest["query"]["offset"] == 3 and rest["query"]["has_more"] is False
    assert "Link" not in following.headers  # the last page
    seen = [m["id"] for m in page["members"] + rest["members"]]
    everyone = client.get(f"{API}/members", headers=bearer(secret)).get_json()["members"]
    assert seen == [m["id"] for m in everyone][1:]


def test_members_needs_the_members_read_scope(client, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="narrow", role="viewer", scopes=["tokens:read"])
    response = client.get(f"{API}/members", headers=bearer(secret))
    assert response.status_code == 403 and error_code(response) == "insufficient_scope"


@pytest.mark.parametrize("query", [{"length": 0}, {"length": 101}, {"colour": "red"}])
def test_members_refuses_bad_parameters(client, make_org, make_token, query):
    _, secret = make_token(make_org(), name="reader", role="viewer")
    response = client.get(f"{API}/members", query_string=query, headers=bearer(secret))
    assert response.status_code == 400 and error_code(response) == "validation_error"


def _seed_usage(db, token, counts: dict[int, int]) -> None:
    """counts: {days ago: requests}."""
    today = utcnow().date()
    for ago, count in counts.items():
        db.session.add(TokenUsage(token_id=token.id, day=today - timedelta(days=ago), count=count))
    db.session.commit()


def test_usage_is_the_requests_per_day_of_the_chart(client, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="reader", role="viewer")
    target, _ = make_token(org, name="busy")
    _seed_usage(db, target, {0: 5, 1: 7, 29: 3, 30: 100})
    response = client.get(f"{API}/api_tokens/{target.id}/usage", headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["token_id"], body["days"], body["total"]) == (target.id, 30, 15)
    chart = token_service.requests_per_day(target)  # what the token's page draws
    assert [(d["date"], d["requests"]) for d in body["usage"]] == [
        (day.isoformat(), count) for day, count in chart
    ]
    assert body["usage"][-1] == {"date": utcnow().date().isoformat(), "requests": 5}


def test_usage_takes_up_to_90_days(client, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="reader", role="viewer")
    target, _ = make_token(org, name="busy")
    _seed_usage(db, target, {30: 100, 89: 1, 90: 1000})
    url = f"{API}/api_tokens/{target.id}/usage"
    body = client.get(url, query_string={"days": 90}, headers=bearer(secret)).get_json()
    assert (len(body["usage"]), body["total"]) == (90, 101)
    for days in (0, 91, "x"):
        refused = client.get(url, query_string={"days": days}, headers=bearer(secret))
        assert refused.status_code == 400 and error_code(refused) == "validation_error"
        assert set(refused.get_json()["error"]["details"]) == {"days"}


def test_usage_of_another_environment_or_organization_is_not_found(client, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="reader", role="viewer")
    production, _ = make_token(org, name="prod", environment="production")
    elsewhere, _ = make_token(make_org(), name="theirs")
    for token in (production, elsewhere):
        response = client.get(f"{API}/api_tokens/{token.id}/usage", headers=bearer(secret))
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_usage_needs_tokens_read(client, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="audit only", role="viewer", scopes=["audit:read"])
    target, _ = make_token(org, name="busy")
    response = client.get(f"{API}/api_tokens/{target.id}/usage", headers=bearer(secret))
    assert response.status_code == 403 and error_code(response) == "insufficient_scope"
