"""Setting a token's IP allowlist through the API (create and update), JSON and forms."""

import pytest
from api_support import API, bearer, error_code


@pytest.fixture
def caller(make_org, make_token):
    return make_token(make_org(), name="caller", role="admin")


def test_create_with_an_allowlist_as_json_and_as_a_form(client, caller):
    _, secret = caller
    made = client.post(
        f"{API}/api_tokens",
        json={"name": "ci", "allowed_ips": ["10.0.0.0/8", "2001:db8::1"]},
        headers=bearer(secret),
    )
    assert made.status_code == 201
    assert made.get_json()["allowed_ips"] == ["10.0.0.0/8", "2001:db8::1/128"]
    form = client.post(
        f"{API}/api_tokens",
        data={"name": "form", "allowed_ips": "192.0.2.0/24, 198.51.100.4"},
        headers=bearer(secret),
    )
    assert form.status_code == 201
    assert form.get_json()["allowed_ips"] == ["192.0.2.0/24", "198.51.100.4/32"]


def test_update_sets_and_narrows_the_allowlist_but_a_token_never_clears_it(client, caller):
    token, secret = caller
    made = client.post(f"{API}/api_tokens", json={"name": "x"}, headers=bearer(secret)).get_json()
    url = f"{API}/api_tokens/{made['id']}"
    assert made["allowed_ips"] is None
    set_ = client.patch(url, json={"allowed_ips": ["203.0.113.0/24"]}, headers=bearer(secret))
    assert set_.get_json()["allowed_ips"] == ["203.0.113.0/24"]
    narrowed = client.patch(url, json={"allowed_ips": ["203.0.113.7"]}, headers=bearer(secret))
    assert narrowed.get_json()["allowed_ips"] == ["203.0.113.7/32"]
    # Clearing or widening it through a token is refused (SPEC §2); a person may, on the page.
    for wider in (None, [], ["203.0.113.0/24"]):
        refused = client.patch(url, json={"allowed_ips": wider}, headers=bearer(secret))
        assert refused.status_code == 403, wider
        assert error_code(refused) == "insufficient_scope"
        assert "allowed_ips" in refused.get_json()["error"]["details"]
    assert client.get(url, headers=bearer(secret)).get_json()["allowed_ips"] == ["203.0.113.7/32"]


@pytest.mark.parametrize("value", [["10.0.0.300"], ["example.com"], "10.0.0.1", [1]])
def test_an_invalid_allowlist_is_400_naming_the_field_and_creates_nothing(client, caller, value):
    _, secret = caller
    response = client.post(
        f"{API}/api_tokens", json={"name": "bad", "allowed_ips": value}, headers=bearer(secret)
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert any(k.startswith("allowed_ips") for k in response.get_json()["error"]["details"])
    listed = client.get(f"{API}/api_tokens?name=bad", headers=bearer(secret)).get_json()
    assert listed["query"]["found"] == 0
