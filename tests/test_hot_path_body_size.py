"""Request bodies over 1 MiB get 413 (SPEC §7): the JSON error on the API, a page elsewhere,
whether the length is declared or the body is chunked."""

from __future__ import annotations

import io

import pytest

MIB = 1024 * 1024


def chunked(size: int) -> dict:
    """A body without Content-Length, as gunicorn hands a chunked one to the app."""
    return {
        "input_stream": io.BytesIO(b"a" * size),
        "headers": {"Transfer-Encoding": "chunked"},
        "environ_overrides": {"wsgi.input_terminated": True},
    }


@pytest.mark.parametrize("path", ["/api/v1/api_tokens", "/api/v1/whoami", "/api/v1/leaks"])
def test_api_answers_413_json_for_a_large_body(client, path):
    response = client.post(path, data=b"{" + b" " * MIB + b"}", content_type="application/json")

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_api_answers_413_json_for_a_large_chunked_body(client):
    response = client.post(
        "/api/v1/api_tokens", content_type="application/json", **chunked(MIB + 1)
    )

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/login", "/signup", "/connections/api-tokens", "/healthz"])
def test_pages_answer_413_html_for_a_large_form(client, path):
    response = client.post(path, data={"name": "a" * (MIB + 1)})

    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert "1 MiB" in response.get_data(as_text=True)


def test_pages_answer_413_html_for_a_large_chunked_body(client):
    response = client.post(
        "/login", content_type="application/x-www-form-urlencoded", **chunked(MIB + 1)
    )

    assert response.status_code == 413
    assert response.mimetype == "text/html"


def test_a_body_of_exactly_one_mib_is_accepted_chunked(client):
    response = client.post(
        "/login", content_type="application/x-www-form-urlencoded", **chunked(MIB)
    )

    assert response.status_code != 413
