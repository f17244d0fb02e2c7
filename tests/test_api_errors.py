"""SPEC §4 errors: always the JSON shape, never HTML, never a stack trace, never a 500 for input."""

from __future__ import annotations

import pytest
from api_support import API, bearer, error_code, unreachable_database_app

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def secret(make_org, make_token):
    return make_token(make_org(), name="caller")[1]


def _assert_json_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert "<html" not in response.get_data(as_text=True).lower()
    assert error_code(response) == code
    for header in RATE_HEADERS:
        assert header in response.headers, header


def test_unknown_api_path_is_json_404(client, secret):
    _assert_json_error(client.get(f"{API}/nothing/here", headers=bearer(secret)), 404, "not_found")
    _assert_json_error(client.get(f"{API}/nothing"), 404, "not_found")


@pytest.mark.parametrize(
    "method, path",
    [("patch", "/whoami"), ("post", "/audit_events"), ("get", "/api_tokens/x/rotate")],
)
def test_wrong_method_is_json_405_with_allow(client, secret, method, path):
    response = getattr(client, method)(f"{API}{path}", headers=bearer(secret))
    _assert_json_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


def test_a_body_over_1_mib_is_json_413(client, secret):
    body = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = client.post(
        f"{API}/api_tokens",
        data=body,
        headers={**bearer(secret), "Content-Type": "application/json"},
    )
    _assert_json_error(response, 413, "payload_too_large")


def test_a_form_over_1_mib_is_json_413(client, secret):
    response = client.post(
        f"{API}/api_tokens", data={"name": "x" * (1024 * 1024 + 10)}, headers=bearer(secret)
    )
    _assert_json_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_another_content_type_is_415(client, secret, method):
    path = "/api_tokens" if method == "post" else "/api_tokens/whatever"
    response = getattr(client, method)(
        f"{API}{path}",
        data="name: x",
        headers={**bearer(secret), "Content-Type": "text/plain"},
    )
    if method == "post":
        _assert_json_error(response, 415, "unsupported_media_type")
    else:  # the id is looked up first: an unknown one is 404 whatever the body
        _assert_json_error(response, 404, "not_found")


def test_415_on_update_of_a_real_token(client, secret, make_org):
    response = client.get(f"{API}/api_tokens", headers=bearer(secret))
    token_id = response.get_json()["api_tokens"][0]["id"]
    response = client.patch(
        f"{API}/api_tokens/{token_id}",
        data="<xml/>",
        headers={**bearer(secret), "Content-Type": "application/xml"},
    )
    _assert_json_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": }',
        b"\xff\xfe",
        b"[" * 100_000,
        b'["a list"]',
        b'"text"',
        b"null",
        b'{"name":' + b"[" * 600 + b"]" * 600 + b"}",
        b'{"scopes":' + b"[" * 17 + b"]" * 17 + b"}",
    ],
    ids=[
        "truncated",
        "bad-value",
        "not-utf8",
        "deeply-nested",
        "list",
        "string",
        "null",
        "nested-600-valid-json",
        "nested-past-the-limit",
    ],  # fmt: skip
)
def test_malformed_json_is_400_validation_error(client, secret, raw):
    response = client.post(
        f"{API}/api_tokens",
        data=raw,
        headers={**bearer(secret), "Content-Type": "application/json"},
    )
    _assert_json_error(response, 400, "validation_error")
    assert "body" in response.get_json()["error"]["details"]


@pytest.mark.parametrize(
    "path",
    ["/api_tokens/%00", "/api_tokens/" + "a" * 500, "/api_tokens/%F0%9F%94%91"],
)
def test_odd_ids_are_404_not_500(client, secret, path):
    for method in ("get", "put", "patch", "delete"):
        response = getattr(client, method)(f"{API}{path}", json={}, headers=bearer(secret))
        _assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "query", ["name=%00", "name=a%00b", "offset=99999999999999999999", "active=perhaps"]
)
def test_odd_query_values_are_400_not_500(client, secret, query):
    response = client.get(f"{API}/api_tokens?{query}", headers=bearer(secret))
    _assert_json_error(response, 400, "validation_error")


def test_odd_json_values_are_400_not_500(client, secret):
    for body in (
        {"name": "a\x00b"},
        {"name": 12},
        {"name": "x", "expires_at": "9999-12-31T23:59:59-23:59"},
        {"name": "x", "expires_at": "0001-01-01T00:00:00+23:59"},
        {"name": "x", "expires_in_days": 10**30},
        {"name": "x", "scopes": "tokens:read"},
    ):
        response = client.post(f"{API}/api_tokens", json=body, headers=bearer(secret))
        _assert_json_error(response, 400, "validation_error")


def test_an_unexpected_failure_is_500_internal_error_without_a_trace(app, client, secret):
    def broken():
        raise RuntimeError("secret internals")

    app.view_functions["api.whoami"] = broken
    response = client.get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 500
    assert error_code(response) == "internal_error"
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_an_unreachable_database_is_503_unavailable(tmp_path):
    from services import secrets as token_secrets

    app = unreachable_database_app(tmp_path)
    secret = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    response = app.test_client().get(f"{API}/whoami", headers=bearer(secret))
    assert response.status_code == 503
    assert "X-RateLimit-Limit" in response.headers  # every API answer carries them
    assert error_code(response) == "unavailable"
    assert "Retry-After" in response.headers


def test_unknown_query_parameters_are_refused_where_none_are_taken(client, secret):
    whoami = client.get(f"{API}/whoami?colour=red", headers=bearer(secret))
    assert whoami.status_code == 400
    assert error_code(whoami) == "validation_error"
    assert whoami.get_json()["error"]["details"] == {"colour": "Unknown query parameter."}
    create = client.post(f"{API}/api_tokens?foo=bar", json={"name": "qs"}, headers=bearer(secret))
    assert create.status_code == 400
    listed = client.get(f"{API}/api_tokens?name=qs", headers=bearer(secret)).get_json()
    assert listed["query"]["found"] == 0  # nothing was made


def test_options_is_an_empty_204_with_allow_and_rate_limit_headers(client, secret):
    response = client.options(f"{API}/api_tokens", headers=bearer(secret))
    assert response.status_code == 204
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]
    assert "text/html" not in response.headers.get("Content-Type", "")
    assert "X-RateLimit-Limit" in response.headers


@pytest.mark.parametrize("value", ["Basic \u00e9", "Basic d\u00e9", "Basic \u00ff\u00fe"])
def test_a_basic_header_with_non_ascii_bytes_is_401_invalid_token(client, value):
    response = client.get(f"{API}/whoami", headers={"Authorization": value})
    _assert_json_error(response, 401, "invalid_token")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api_tokens", {"name": "a", "expires_in_days": True}, "expires_in_days"),
        ("/api_tokens", {"name": "a", "active": "yes"}, "active"),
        ("/api_tokens/{id}", {"active": "yes"}, "active"),
        ("/api_tokens/{id}", {"active": 0}, "active"),
        ("/api_tokens/{id}/rotate", {"grace_period_seconds": True}, "grace_period_seconds"),
    ],
)
def test_json_bodies_have_the_documented_types(client, make_org, make_token, path, body, field):
    """JSON says true or 30; "yes", 0 and true-for-a-number are refused, not guessed at."""
    org = make_org()
    _, secret = make_token(org, name="caller")
    target, _ = make_token(org, name="target")
    method = client.patch if path == "/api_tokens/{id}" else client.post
    response = method(f"{API}{path.format(id=target.id)}", json=body, headers=bearer(secret))
    _assert_json_error(response, 400, "validation_error")
    assert field in response.get_json()["error"]["details"]


def test_a_form_still_says_false_as_text(client, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="caller")
    target, _ = make_token(org, name="target")
    response = client.put(
        f"{API}/api_tokens/{target.id}", data={"active": "false"}, headers=bearer(secret)
    )
    assert response.status_code == 200 and response.get_json()["active"] is False


def test_multipart_bodies_are_415(client, secret):
    response = client.post(
        f"{API}/api_tokens", data={"name": "x"}, headers=bearer(secret),
        content_type="multipart/form-data",
    )  # fmt: skip
    _assert_json_error(response, 415, "unsupported_media_type")


def test_a_leak_report_as_a_form_is_415(client):
    response = client.post(f"{API}/leaks", data={"tokens": "ks_sbx_x"})
    _assert_json_error(response, 415, "unsupported_media_type")
