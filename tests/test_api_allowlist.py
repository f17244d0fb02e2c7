"""Per-token IP allowlists (issue 8): a request from outside gets 403 ip_not_allowed and is
audited, at most once a minute per token and address; X-Forwarded-For counts only behind
PROXY_COUNT trusted proxies."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code
from hot_path_support import another_worker

from extensions import db as _db
from models import AuditEvent, TokenUsage
from services import usage


def _from(client, secret: str, ip: str, **headers):
    return client.get(
        f"{API}/whoami", headers={**bearer(secret), **headers}, environ_base={"REMOTE_ADDR": ip}
    )


def _denials(token_id: str) -> list[AuditEvent]:
    return list(
        _db.session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.action == "token.ip_denied", AuditEvent.actor_token_id == token_id)
            .order_by(AuditEvent.id)
        )
    )


def _uses(app, token_id: str) -> int:
    with app.app_context():
        usage.flush()
        return (
            _db.session.scalar(
                sa.select(sa.func.sum(TokenUsage.count)).where(TokenUsage.token_id == token_id)
            )
            or 0
        )


@pytest.fixture
def org(make_org):
    return make_org(name="Fenced")


def test_an_address_inside_the_allowlist_passes(client, org, make_token):
    _, secret = make_token(org, allowed_ips=["10.0.0.0/8", "192.0.2.7"])

    assert _from(client, secret, "10.20.30.40").status_code == 200
    assert _from(client, secret, "192.0.2.7").status_code == 200


def test_another_address_gets_403_ip_not_allowed_and_is_audited(app, client, org, make_token):
    token, secret = make_token(org, allowed_ips=["10.0.0.0/8"])

    response = _from(client, secret, "192.0.2.9")

    assert response.status_code == 403
    assert error_code(response) == "ip_not_allowed"
    [event] = _denials(token.id)
    assert event.actor_type == "token"
    assert event.actor_label == token.name
    assert event.organization_id == org.id
    assert event.target_id == token.id
    assert event.details == {"ip": "192.0.2.9"}
    assert event.ip == "192.0.2.9"
    assert _uses(app, token.id) == 0  # a refused request is not a use of the token


def test_a_refused_request_does_nothing_on_any_endpoint(client, org, make_token):
    token, secret = make_token(org, allowed_ips=["10.0.0.0/8"])

    response = client.post(
        f"{API}/api_tokens",
        json={"name": "sneaky"},
        headers=bearer(secret),
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )

    assert response.status_code == 403
    assert error_code(response) == "ip_not_allowed"
    listed = client.get(
        f"{API}/api_tokens", headers=bearer(secret), environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    assert [t["name"] for t in listed.get_json()["api_tokens"]] == [token.name]


def test_ipv6_addresses_and_ranges(client, org, make_token):
    _, secret = make_token(org, allowed_ips=["2001:db8::/32"])

    assert _from(client, secret, "2001:db8::1").status_code == 200
    assert _from(client, secret, "2001:db8:ffff::42").status_code == 200
    refused = _from(client, secret, "2001:db9::1")
    assert refused.status_code == 403
    assert error_code(refused) == "ip_not_allowed"
    assert _from(client, secret, "10.0.0.1").status_code == 403


def test_a_token_without_an_allowlist_works_from_anywhere(client, org, make_token):
    _, secret = make_token(org)

    assert _from(client, secret, "192.0.2.9").status_code == 200
    assert _from(client, secret, "2001:db8::1").status_code == 200


def test_a_flood_from_a_refused_address_writes_one_event_a_minute(client, org, make_token):
    token, secret = make_token(org, allowed_ips=["10.0.0.0/8"])

    for _ in range(25):
        assert _from(client, secret, "192.0.2.9").status_code == 403
    assert [e.details["ip"] for e in _denials(token.id)] == ["192.0.2.9"]

    for _ in range(5):
        assert _from(client, secret, "198.51.100.1").status_code == 403
    assert [e.details["ip"] for e in _denials(token.id)] == ["192.0.2.9", "198.51.100.1"]


def test_a_flood_from_elsewhere_does_not_use_up_the_tokens_rate_limit(client, db, org, make_token):
    token, secret = make_token(org, allowed_ips=["10.0.0.0/8"])
    token.rate_limit = "3/minute"
    db.session.commit()

    for _ in range(5):
        assert _from(client, secret, "192.0.2.9").status_code == 403

    assert _from(client, secret, "10.0.0.1").status_code == 200


def test_x_forwarded_for_is_ignored_without_trusted_proxies(client, org, make_token):
    _, secret = make_token(org, allowed_ips=["10.0.0.0/8"])

    response = _from(client, secret, "192.0.2.9", **{"X-Forwarded-For": "10.0.0.1"})

    assert response.status_code == 403
    assert error_code(response) == "ip_not_allowed"


def test_x_forwarded_for_names_the_client_behind_one_trusted_proxy(
    backend, database_urls, tmp_path, db, org, make_token
):
    token, secret = make_token(org, allowed_ips=["10.0.0.0/8"])
    behind_proxy = another_worker(database_urls[backend], str(tmp_path / "proxy"), PROXY_COUNT=1)
    try:
        client = behind_proxy.test_client()
        # The proxy (192.0.2.1) appends the address it saw; only that last entry is trusted.
        allowed = _from(client, secret, "192.0.2.1", **{"X-Forwarded-For": "10.0.0.1"})
        spoofed = _from(client, secret, "192.0.2.1", **{"X-Forwarded-For": "10.0.0.1, 192.0.2.50"})

        assert allowed.status_code == 200
        assert spoofed.status_code == 403
        assert [e.details["ip"] for e in _denials(token.id)] == ["192.0.2.50"]
    finally:
        with behind_proxy.app_context():
            _db.engine.dispose()
