"""SPEC §4 rate limits: per token (token override, else the organization's policy, else
RATE_LIMIT_DEFAULT), per address without a token, headers on every response, 429 JSON.

Runs on in-process storage and, when TEST_REDIS_URL is set, on Redis."""

from __future__ import annotations

import pytest
from api_support import API, bearer, error_code

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def app_config(limit_storage):
    return {**limit_storage, "API_UNAUTHENTICATED_RATE_LIMIT": "4/minute"}


@pytest.fixture
def org(make_org):
    return make_org()


def _limited_token(db, make_token, org, limit="3/minute", **kwargs):
    token, secret = make_token(org, **kwargs)
    token.rate_limit = limit
    db.session.commit()
    return token, secret


def test_the_token_limit_gives_429_rate_limited_with_retry_after(client, db, org, make_token):
    _, secret = _limited_token(db, make_token, org)
    remaining = []
    for _ in range(3):
        response = client.get(f"{API}/whoami", headers=bearer(secret))
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert "Retry-After" not in response.headers  # only a 429 says when to retry
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    response = client.get(f"{API}/api_tokens", headers=bearer(secret))  # any endpoint counts
    assert response.status_code == 429
    assert error_code(response) == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    for header in RATE_HEADERS:
        assert len(response.headers.get_all(header)) == 1, header


def test_each_token_has_its_own_bucket(client, db, org, make_token):
    _, first = _limited_token(db, make_token, org, limit="1/minute")
    _, second = _limited_token(db, make_token, org, limit="1/minute")
    assert client.get(f"{API}/whoami", headers=bearer(first)).status_code == 200
    assert client.get(f"{API}/whoami", headers=bearer(first)).status_code == 429
    assert client.get(f"{API}/whoami", headers=bearer(second)).status_code == 200


def test_the_organizations_policy_applies_without_a_token_override(
    client, db, make_org, make_token
):
    org = make_org()
    org.rate_limit = "2/minute"
    db.session.commit()
    _, secret = make_token(org)
    statuses = [client.get(f"{API}/whoami", headers=bearer(secret)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_default_limit_applies_to_a_default_organization(client, org, make_token):
    _, secret = make_token(org)
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    # RATE_LIMIT_DEFAULT "1000/minute;100/second": the tighter window is shown.
    assert response.headers["X-RateLimit-Limit"] == "100"


def test_a_malformed_limit_falls_back_to_the_policy(client, db, org, make_token):
    _, secret = _limited_token(db, make_token, org, limit="lots please")
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "100"


def test_requests_without_a_valid_token_are_limited_per_address(client, org):
    statuses = [client.get(f"{API}/whoami", headers=bearer("nope")).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


def test_every_api_response_carries_rate_limit_headers(client, db, org, make_token):
    _, secret = _limited_token(db, make_token, org, limit="50/minute")
    responses = [
        client.get(f"{API}/whoami", headers=bearer(secret)),
        client.get(f"{API}/api_tokens/unknown", headers=bearer(secret)),
        client.get(f"{API}/no/such/path", headers=bearer(secret)),
        client.patch(f"{API}/whoami", headers=bearer(secret)),
        client.post(f"{API}/api_tokens", json={"bad": 1}, headers=bearer(secret)),
        client.get(f"{API}/openapi.json"),
        client.get(f"{API}/whoami"),
    ]
    for response in responses:
        for header in RATE_HEADERS:
            assert len(response.headers.get_all(header)) == 1, (response.status_code, header)
    # The console's answers carry none.
    for page in (client.get("/login"), client.get("/healthz"), client.get("/nowhere")):
        assert not any(page.headers.get_all(header) for header in RATE_HEADERS), page.request.path
    # Unrouted paths count against the same bucket as everything else.
    assert [r.headers["X-RateLimit-Remaining"] for r in responses[:5]] == [
        "49", "48", "47", "46", "45",
    ]  # fmt: skip


def test_unrouted_paths_are_limited_too(client, db, org, make_token):
    _, secret = _limited_token(db, make_token, org, limit="2/minute")
    assert client.get(f"{API}/nope", headers=bearer(secret)).status_code == 404
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200
    response = client.get(f"{API}/nope", headers=bearer(secret))
    assert response.status_code == 429
    assert error_code(response) == "rate_limited"
    assert "Retry-After" in response.headers


def test_rate_limit_default_applies_when_the_policy_has_none(client, db, org, make_token):
    org.rate_limit = ""
    db.session.commit()
    _, secret = make_token(org)
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "100"  # RATE_LIMIT_DEFAULT's 100/second


def test_a_limit_set_through_the_api_applies_at_once_and_null_restores_the_policy(
    client, org, make_token
):
    _, admin = make_token(org, name="admin")
    token, secret = make_token(org, name="limited")
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200  # cached
    url = f"{API}/api_tokens/{token.id}"
    response = client.patch(url, json={"rate_limit": "2/minute"}, headers=bearer(admin))
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [client.get(f"{API}/whoami", headers=bearer(secret)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[0].headers["X-RateLimit-Limit"] == "2"
    client.patch(url, json={"rate_limit": None}, headers=bearer(admin))
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "100"  # the policy's 100/second


def test_a_token_created_with_its_own_limit_is_held_to_it(client, org, make_token):
    _, admin = make_token(org, name="admin")
    created = client.post(
        f"{API}/api_tokens", json={"name": "slow", "rate_limit": "1/hour"}, headers=bearer(admin)
    ).get_json()
    headers = bearer(created["token"])
    assert client.get(f"{API}/whoami", headers=headers).headers["X-RateLimit-Limit"] == "1"
    assert client.get(f"{API}/whoami", headers=headers).status_code == 429


def test_answers_while_the_database_is_down_do_not_use_up_the_limit(tmp_path):
    """An outage is 503 unavailable, however many times a client retries: a 503 is taken
    back from the caller's bucket (issue 16: it was answered 429 rate_limited)."""
    from api_support import unreachable_database_app

    app = unreachable_database_app(tmp_path)
    app.config["API_UNAUTHENTICATED_RATE_LIMIT"] = "2/minute"
    client = app.test_client()
    from services import secrets as token_secrets

    # Well formed, checksum included, so that checking it needs the database.
    secret = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    answers = [client.get(f"{API}/whoami", headers=bearer(secret)) for _ in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert answers[-1].headers["X-RateLimit-Remaining"] == "2"  # nothing was used up
