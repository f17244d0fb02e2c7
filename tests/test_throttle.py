"""The sign-in throttle (SPEC §3), on in-process storage and on Redis when TEST_REDIS_URL is set."""

import uuid

import pytest

from tests.conftest import PASSWORD


@pytest.fixture
def app_config(limit_storage):
    return {**limit_storage, "LOGIN_THROTTLE": "10 per 15 minutes"}


def _fail(client, email, ip="10.0.0.1"):
    return client.form(
        "/login", {"email": email, "password": "wrong password!"}, environ_base={"REMOTE_ADDR": ip}
    )


def test_eleventh_attempt_for_one_email_gets_429_with_retry_after(client, make_org, make_user):
    make_org(owner=make_user(email="victim@example.com"))
    for i in range(10):
        assert _fail(client, "victim@example.com", ip=f"10.0.1.{i}").status_code == 401
    # Even the right password waits: the throttle is per email, from any address.
    response = client.form(
        "/login",
        {"email": "victim@example.com", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.2.1"},
    )
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
    assert "Too many sign-in attempts" in response.get_data(as_text=True)


def test_one_address_is_throttled_across_emails_without_saying_which_exist(client, make_user):
    make_user(email="real@example.com")
    for i in range(10):
        _fail(client, f"guess{i}@example.com", ip="10.9.9.9")
    unknown = _fail(client, "other@example.com", ip="10.9.9.9")
    known = _fail(client, "real@example.com", ip="10.9.9.9")
    assert unknown.status_code == known.status_code == 429
    assert unknown.get_data(as_text=True) == known.get_data(as_text=True)
    # Another address is not affected.
    assert _fail(client, "other@example.com", ip="10.9.9.10").status_code == 401


def test_successful_sign_ins_do_not_count(client, make_org, make_user):
    make_org(owner=make_user(email="fine@example.com"))
    for _ in range(12):
        client.sign_in("fine@example.com")
        client.form("/logout", page="/connections/api-tokens")


def _stored_keys() -> list[str]:
    from extensions import limiter

    storage = limiter.limiter.storage
    backend = storage.storage  # a Counter in memory, the client on Redis
    if isinstance(backend, dict):
        return [*backend, *getattr(storage, "events", {})]
    return [key.decode() for key in backend.scan_iter("*signin-failures*")]


def test_failures_are_counted_under_the_deployment_key_prefix(app, client, make_user):
    """Two deployments sharing a Redis must never lock out each other's people."""
    from extensions import limit_key

    email = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    make_user(email=email)
    _fail(client, email, ip="10.7.7.7")
    (prefix,) = limit_key()
    keys = [key for key in _stored_keys() if email in key]
    assert keys and all(f"{prefix}/signin-failures/email/{email}" in key for key in keys)
