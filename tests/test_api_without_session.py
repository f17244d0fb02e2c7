"""Nothing on the API path that the API does not use (issue 17): a session cookie is never
read (so it neither authenticates nor loads a user), never written, and no answer varies
on it; CSRF does not apply; /healthz pings a connection and touches no session either."""

from __future__ import annotations

import pytest
from api_support import API, bearer, error_code
from hot_path_support import statements


@pytest.fixture
def signed_in(client, make_user, make_org):
    """A browser with a live server-side session (its cookies go with every request)."""
    owner = make_user("ada@example.com")
    org = make_org(owner=owner)
    client.sign_in("ada@example.com")
    assert client.get_cookie("ks_session") is not None
    return client, org


def _no_cookie_business(response) -> None:
    assert "Set-Cookie" not in response.headers
    assert "cookie" not in response.headers.get("Vary", "").lower()


def test_a_session_cookie_without_a_token_is_still_missing_token(signed_in):
    client, _ = signed_in
    response = client.get(f"{API}/whoami")
    assert response.status_code == 401
    assert error_code(response) == "missing_token"
    _no_cookie_business(response)


def test_a_change_with_a_session_cookie_and_no_csrf_token_is_missing_token_not_csrf(signed_in):
    client, _ = signed_in
    response = client.post(f"{API}/api_tokens", json={"name": "from the browser"})
    assert response.status_code == 401
    assert error_code(response) == "missing_token"
    _no_cookie_business(response)


def test_an_api_answer_runs_no_sql_for_the_session_or_the_user(signed_in, make_token, db):
    client, org = signed_in
    _, secret = make_token(org)
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200  # cached now

    with statements(db.engine) as seen:
        response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 200
    # No look-up of the session's row, of the signed-in user, of anything: all from the cache.
    assert seen == []
    _no_cookie_business(response)


def test_api_errors_and_unknown_paths_set_no_cookie(signed_in, make_token):
    client, org = signed_in
    _, secret = make_token(org)
    for response in (
        client.get(f"{API}/no-such-thing", headers=bearer(secret)),
        client.get(f"{API}/api_tokens/nope", headers=bearer(secret)),
        client.get(f"{API}/whoami", headers=bearer("ks_sbx_not_a_token")),
    ):
        assert response.status_code in (401, 404)
        assert response.is_json
        _no_cookie_business(response)


def test_healthz_pings_a_connection_and_touches_no_session(signed_in, db):
    client, _ = signed_in
    with statements(db.engine) as seen:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert all(statement.strip().upper() == "SELECT 1" for statement in seen), seen
    _no_cookie_business(response)


def test_static_files_touch_no_session(signed_in, db):
    client, _ = signed_in
    with statements(db.engine) as seen:
        response = client.get("/static/app.css")
    assert response.status_code == 200
    assert seen == []
    _no_cookie_business(response)
