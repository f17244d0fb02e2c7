"""IP allowlists: parsing addresses and CIDR ranges, and matching client addresses."""

import pytest

from services.errors import ValidationFailed
from services.network import ip_allowed, parse_allowlist


def test_parse_normalizes_addresses_and_ranges():
    assert parse_allowlist("10.0.0.1, 192.168.1.0/24\n2001:db8::/32 10.0.0.1") == [
        "10.0.0.1/32",
        "192.168.1.0/24",
        "2001:db8::/32",
    ]
    assert parse_allowlist(["10.1.2.3/8"]) == ["10.0.0.0/8"]
    assert parse_allowlist("") is None and parse_allowlist(None) is None


def test_an_ipv4_mapped_entry_is_the_ipv4_address_it_names():
    """Attack review: `::ffff:127.0.0.1` was kept as an IPv6 range that no request matched
    (requests from mapped addresses are matched as IPv4), locking the token out."""
    assert parse_allowlist(["::ffff:127.0.0.1", "::ffff:10.0.0.0/104"]) == [
        "127.0.0.1/32",
        "10.0.0.0/8",
    ]
    allowed = parse_allowlist(["::ffff:127.0.0.1"])
    assert ip_allowed(allowed, "127.0.0.1") and ip_allowed(allowed, "::ffff:127.0.0.1")


@pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.0.0/33", "example.com", "::g", [1], 5])
def test_invalid_entries_name_the_field(bad):
    with pytest.raises(ValidationFailed) as exc:
        parse_allowlist(bad)
    assert "allowed_ips" in exc.value.details


def test_too_many_entries_are_refused():
    with pytest.raises(ValidationFailed):
        parse_allowlist([f"10.0.0.{i}" for i in range(51)])


@pytest.mark.parametrize(
    ("allowed", "ip", "expected"),
    [
        (None, "198.51.100.1", True),
        (["10.0.0.0/8"], "10.20.30.40", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["10.0.0.0/8"], "::ffff:10.0.0.5", True),
        (["2001:db8::/32"], "2001:db8::1", True),
        (["2001:db8::/32"], "10.0.0.1", False),
        (["10.0.0.0/8"], None, False),
        (["10.0.0.0/8"], "garbage", False),
    ],
)
def test_ip_allowed(allowed, ip, expected):
    assert ip_allowed(allowed, ip) is expected


def test_tokens_carry_an_allowlist_set_on_create_and_changed_with_an_audit_event(
    db, make_org, make_token
):
    import sqlalchemy as sa

    from models import AuditEvent
    from services import tokens
    from tests.conftest import owner_actor

    org = make_org()
    token, _ = make_token(org, allowed_ips="10.0.0.0/8 192.0.2.7")
    assert token.allowed_ips == ["10.0.0.0/8", "192.0.2.7/32"]
    tokens.update_token(token, owner_actor(org), allowed_ips="")
    db.session.commit()
    assert token.allowed_ips is None
    event = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "token.updated")
    ).one()
    assert event.details["allowed_ips"] == {"from": ["10.0.0.0/8", "192.0.2.7/32"], "to": None}
    with pytest.raises(ValidationFailed):
        tokens.update_token(token, owner_actor(org), allowed_ips="10.0.0.300")
