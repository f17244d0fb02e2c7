"""Redis unreachable (REDIS_URL set, nothing listening): rate limits and the sign-in throttle
count in each worker's memory instead, so the API and sign-in keep answering, never a 500."""

from __future__ import annotations

import socket

import pytest
from api_support import API, bearer

from tests.conftest import PASSWORD


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_config():
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    return {"REDIS_URL": url, "RATELIMIT_STORAGE_URI": url, "LOGIN_THROTTLE": "3 per 15 minutes"}


def test_the_api_answers_with_limits_while_redis_is_down(client, make_org, make_token, db):
    token, secret = make_token(make_org())
    token.rate_limit = "2/minute"
    db.session.commit()
    answers = [client.get(f"{API}/whoami", headers=bearer(secret)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert answers[2].get_json()["error"]["code"] == "rate_limited"
    unrouted = client.get(f"{API}/no-such-path", headers=bearer(secret))
    assert unrouted.status_code in (404, 429) and unrouted.is_json


def test_sign_in_and_its_throttle_work_while_redis_is_down(client, make_org, make_user):
    make_org(owner=make_user("ada@example.com"))
    client.sign_in("ada@example.com")
    client.form("/logout", page="/connections/api-tokens")
    wrong = {"email": "ada@example.com", "password": "not the password"}
    assert [client.form("/login", wrong).status_code for _ in range(3)] == [401, 401, 401]
    throttled = client.form("/login", {"email": "ada@example.com", "password": PASSWORD})
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
