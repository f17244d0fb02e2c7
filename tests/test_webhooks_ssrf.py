"""SSRF (issue 15): a webhook URL never makes Keysmith post into its own host or network,
unless the operator allows it (WEBHOOK_ALLOW_PRIVATE), checked on save and at every
connection, and the connection goes to the address that was checked."""

from __future__ import annotations

import socket

import pytest
from hot_path_support import owner_actor
from webhook_support import make_certificate, start_receiver

from services import hygiene, outbound, webhooks
from services.errors import ValidationFailed

REFUSED = [
    "http://127.0.0.1:{port}/internal-admin/reset",
    "https://127.0.0.1/x",
    "https://localhost/x",  # a name that resolves to loopback
    "https://10.0.0.1/x",
    "https://172.16.5.4/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/x",  # CGNAT
    "https://0.0.0.0/x",
    "https://224.0.0.1/x",
    "https://240.0.0.1/x",
    "https://[::1]/x",
    "https://[::]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:a9fe:a9fe]/x",  # 169.254.169.254, IPv4-mapped in hex
    "https://[fe80::1]/x",
    "https://[fc00::1]/x",
    "https://[ff02::1]/x",
    "https://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
    "https://[64:ff9b::a00:1]/x",  # NAT64 of 10.0.0.1
    "https://2130706433/x",  # 127.0.0.1 as one decimal number
    "https://0x7f.1/x",
]


@pytest.fixture
def receiver():
    receiver = start_receiver()
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_reserved_addresses_are_refused_on_save(app, url):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=False, WEBHOOK_ALLOW_HTTP=True)
    with pytest.raises(outbound.UnsafeURL):
        outbound.check_url(url.format(port=9))


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_reserved_addresses_are_refused_at_connection(app, url):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=False, WEBHOOK_ALLOW_HTTP=True)
    result = outbound.post(url.format(port=9), b"{}", {})
    assert not result.ok and result.status is None and "not allowed" in result.error


def test_public_addresses_pass_the_check(app):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=False)
    for address in ("8.8.8.8", "1.1.1.1", "[2606:4700:4700::1111]", "[2001:4860:4860::8888]"):
        assert outbound.check_url(f"https://{address}/hook") == f"https://{address}/hook"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "javascript:alert(1)", "https:///x", "https://u:p@example.com/x"],
)
def test_urls_that_are_not_plain_https_are_refused(app, url):
    with pytest.raises(outbound.UnsafeURL):
        outbound.check_url(url)


def test_http_needs_the_operator_setting(app):
    app.config.update(WEBHOOK_ALLOW_HTTP=False, WEBHOOK_ALLOW_PRIVATE=True)
    with pytest.raises(outbound.UnsafeURL, match="https://"):
        outbound.check_url("http://127.0.0.1:9/x")
    app.config.update(WEBHOOK_ALLOW_HTTP=True)
    assert outbound.check_url("http://127.0.0.1:9/x")


def test_the_reported_hole_is_closed_saving_a_loopback_endpoint_is_refused(
    app, db, make_org, receiver
):
    """The report: a new tenant saved http://127.0.0.1:<port>/internal-admin/reset as a
    webhook and the cron command posted to it. Saving is refused now."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE=False, WEBHOOK_ALLOW_HTTP=True)
    org = make_org()
    with pytest.raises(ValidationFailed) as refused:
        webhooks.create_endpoint(
            org,
            owner_actor(org),
            url=receiver.url("/internal-admin/reset"),
            events=["token.expiring"],
        )
    assert "not allowed" in refused.value.details["url"]
    assert receiver.requests == []


def test_the_expiry_cron_posts_nothing_itself(app, db, make_org, make_token, receiver):
    """`flask keysmith expiring` only writes events now; the delivery worker, which checks
    every connection, is the one thing that posts."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_ALLOW_HTTP=True)
    org = make_org()
    webhooks.create_endpoint(
        org, owner_actor(org), url=receiver.url("/internal-admin/reset"), events=["token.expiring"]
    )
    db.session.commit()
    make_token(org, expires_in_days=3)
    result = app.test_cli_runner().invoke(args=["keysmith", "expiring"])
    assert result.exit_code == 0, result.output
    assert receiver.requests == []


def test_redirects_are_not_followed(app, receiver):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_ALLOW_HTTP=True)
    receiver.status, receiver.headers = 302, {"Location": "http://127.0.0.1:9/internal"}
    result = outbound.post(receiver.url("/hook"), b"{}", {})
    assert not result.ok and result.status == 302 and "redirect" in result.error
    assert len(receiver.requests) == 1


def test_at_most_4_kib_of_the_answer_is_read(app, receiver):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_ALLOW_HTTP=True)
    receiver.body = b"x" * 1_000_000
    result = outbound.post(receiver.url(), b"{}", {})
    assert result.ok and len(result.body) == 4096


def test_a_slow_receiver_times_out(app, receiver):
    app.config.update(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_ALLOW_HTTP=True)
    receiver.delay = 1.0
    result = outbound.post(receiver.url(), b"{}", {}, timeout=0.3)
    assert not result.ok and result.error == "timed out"


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    app, receiver, monkeypatch
):
    """DNS rebinding: a name that answers a public address to the check and loopback to the
    connection would slip through two look-ups. We look up once and connect to that address,
    while the request still names the host (Host header; SNI and the certificate for https)."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_ALLOW_HTTP=True)
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "192.0.2.1"])  # then an address where nothing answers
    lookups = []

    def resolve(host, *args, **kwargs):
        if host == "hooks.example.test":
            lookups.append(host)
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    result = outbound.post(f"http://hooks.example.test:{receiver.port}/hook", b"{}", {})
    assert result.ok, result.error
    assert lookups == ["hooks.example.test"]
    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"


def test_a_name_that_does_not_resolve_in_time_is_a_failed_attempt(app, monkeypatch):
    import time as clock

    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "slow.example.test":
            clock.sleep(1)
        return real("127.0.0.1" if host == "slow.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    monkeypatch.setattr(outbound, "TIMEOUT_SECONDS", 0.2)
    started = clock.monotonic()
    result = outbound.post("https://slow.example.test/x", b"{}", {}, allow_private=True)
    assert not result.ok and "could not be resolved" in result.error
    assert clock.monotonic() - started < 0.9


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_of_the_name(
    app, monkeypatch, tmp_path
):
    """Over TLS the pinned connection still speaks to the name: SNI and the certificate
    check use it (a certificate for the name is accepted at 127.0.0.1), and a certificate
    for another name, or one nobody vouches for, is a failed attempt."""
    cert, key = make_certificate(tmp_path, "hooks.example.test")
    tls = start_receiver(tls=(cert, key))
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        local = host in ("hooks.example.test", "other.example.test")
        return real("127.0.0.1" if local else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        untrusted = outbound.post(
            f"https://hooks.example.test:{tls.port}/x", b"{}", {}, allow_private=True
        )
        assert not untrusted.ok and "certificate" in untrusted.error
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # now we trust it, as a CA would vouch
        ok = outbound.post(
            f"https://hooks.example.test:{tls.port}/x", b"{}", {}, allow_private=True
        )
        assert ok.ok, ok.error
        assert tls.requests[-1].headers["host"] == f"hooks.example.test:{tls.port}"
        wrong_name = outbound.post(
            f"https://other.example.test:{tls.port}/x", b"{}", {}, allow_private=True
        )
        assert not wrong_name.ok and "certificate" in wrong_name.error
    finally:
        tls.stop()


def test_every_resolved_address_must_be_allowed(app, monkeypatch):
    """A name with one public and one private address is refused: the client could pick either."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE=False)
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "mixed.example.test":
            return real("8.8.8.8", *args, **kwargs) + real("10.1.2.3", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(outbound.UnsafeURL):
        outbound.check_url("https://mixed.example.test/x")


def test_hygiene_no_longer_uses_urllib_request():
    import inspect

    assert "urllib.request" not in inspect.getsource(hygiene)
