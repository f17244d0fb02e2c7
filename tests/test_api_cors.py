"""CORS on /api/v1, off by default; CORS_ORIGINS lists the origins allowed, never with
credentials (SPEC §4)."""

from __future__ import annotations

import pytest
from api_support import API, bearer

from config import Config

APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


def _cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control")}


def test_no_cors_header_by_default(client, make_org, make_token):
    _, secret = make_token(make_org(), name="browser")
    response = client.get(f"{API}/whoami", headers={**bearer(secret), "Origin": APP_ORIGIN})
    assert response.status_code == 200
    assert _cors_headers(response) == {}
    preflight = client.options(f"{API}/api_tokens", headers=PREFLIGHT)
    assert _cors_headers(preflight) == {}


class TestWithOrigins:
    @pytest.fixture
    def app_config(self):
        return {"CORS_ORIGINS": [APP_ORIGIN, "http://localhost:3000"]}

    def test_a_listed_origin_may_read_answers_without_credentials(
        self, client, make_org, make_token
    ):
        _, secret = make_token(make_org(), name="browser")
        response = client.get(f"{API}/whoami", headers={**bearer(secret), "Origin": APP_ORIGIN})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "Origin" in response.headers.get("Vary", "")
        exposed = response.headers["Access-Control-Expose-Headers"].lower()
        for header in ("x-request-id", "x-ratelimit-remaining", "retry-after", "link"):
            assert header in exposed

    def test_an_error_answer_is_readable_too(self, client):
        response = client.get(f"{API}/whoami", headers={"Origin": APP_ORIGIN})
        assert response.status_code == 401
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN

    def test_the_preflight_allows_authorization_content_type_and_idempotency_key(self, client):
        response = client.options(f"{API}/api_tokens", headers=PREFLIGHT)
        assert response.status_code in (200, 204), response.get_data(as_text=True)
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        for header in ("authorization", "content-type", "idempotency-key"):
            assert header in allowed
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert int(response.headers["Access-Control-Max-Age"]) > 0

    def test_a_preflight_for_a_tokens_own_path_works(self, client, make_org, make_token):
        token, _ = make_token(make_org(), name="browser")
        headers = {**PREFLIGHT, "Access-Control-Request-Method": "PATCH"}
        response = client.options(f"{API}/api_tokens/{token.id}", headers=headers)
        assert response.status_code in (200, 204)
        assert "PATCH" in response.headers["Access-Control-Allow-Methods"]

    def test_another_origin_gets_no_cors_header(self, client, make_org, make_token):
        _, secret = make_token(make_org(), name="browser")
        evil = {**bearer(secret), "Origin": "https://evil.example"}
        assert _cors_headers(client.get(f"{API}/whoami", headers=evil)) == {}
        preflight = client.options(
            f"{API}/api_tokens", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers

    def test_answers_vary_on_origin_for_shared_caches(self, client):
        """Review: with one origin listed, flask-cors sent no Vary, so a cache could serve
        a CORS answer to a request without Origin, or the other way round."""
        plain = client.get("/api/v1/openapi.json")
        assert "Origin" in plain.headers.get("Vary", "")
        assert "Access-Control-Allow-Origin" not in plain.headers

    def test_a_request_without_origin_gets_no_cors_header(self, client):
        assert _cors_headers(client.get(f"{API}/openapi.json")) == {}

    def test_the_console_never_answers_cross_origin(self, client):
        response = client.get("/login", headers={"Origin": APP_ORIGIN})
        assert _cors_headers(response) == {}


def test_cors_origins_comes_from_the_environment(tmp_path):
    config = Config(str(tmp_path), {"CORS_ORIGINS": " https://a.example.com/, http://b:8080 "})
    assert config.CORS_ORIGINS == ["https://a.example.com", "http://b:8080"]
    assert Config(str(tmp_path), {}).CORS_ORIGINS == []


@pytest.mark.parametrize("value", ["*", "a.example.com", "https://a.example.com/path", "ftp://x"])
def test_a_cors_origin_that_is_no_origin_is_refused_at_start(tmp_path, value):
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        Config(str(tmp_path), {"CORS_ORIGINS": value})
