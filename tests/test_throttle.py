"""The sign-in throttle (SPEC §3, issue 14), on in-process storage and on Redis when
TEST_REDIS_URL is set. The rule is in docs/security.md: per email and address pair, per
address, and a looser per email that a browser which signed in before is not held back by."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from models import AuditEvent
from tests.conftest import PASSWORD


@pytest.fixture
def app_config(limit_storage):
    return {
        **limit_storage,
        "LOGIN_THROTTLE": "10 per 15 minutes",
        "LOGIN_THROTTLE_IP": "20 per 15 minutes",
        "LOGIN_THROTTLE_EMAIL": "30 per hour",
    }


def _fail(client, email, ip="10.0.0.1"):
    return client.form(
        "/login", {"email": email, "password": "wrong password!"}, environ_base={"REMOTE_ADDR": ip}
    )


def _right(client, email, ip):
    return client.form(
        "/login", {"email": email, "password": PASSWORD}, environ_base={"REMOTE_ADDR": ip}
    )


def test_a_stranger_cannot_lock_the_owner_out_from_another_address(
    app, client, make_org, make_user
):
    make_org(owner=make_user(email="victim@example.com"))
    for _ in range(10):
        assert _fail(client, "victim@example.com", ip="10.0.1.1").status_code == 401
    # The stranger's address is locked for this email, even with the right password ...
    locked = _right(client, "victim@example.com", "10.0.1.1")
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert "Too many sign-in attempts" in locked.get_data(as_text=True)
    # ... and the owner, elsewhere, in a browser that never signed in before, is not.
    owner = app.test_client()
    assert _right(owner, "victim@example.com", "10.0.2.1").status_code == 302


def test_guesses_spread_over_many_addresses_stop_at_the_per_email_limit(
    app, client, make_org, make_user
):
    make_org(owner=make_user(email="victim@example.com"))
    known_browser = app.test_client()
    assert _right(known_browser, "victim@example.com", "10.0.9.1").status_code == 302
    known_browser.form("/logout", page="/connections/api-tokens")
    for i in range(30):
        assert _fail(client, "victim@example.com", ip=f"10.0.3.{i}").status_code == 401
    assert _fail(client, "victim@example.com", ip="10.0.4.1").status_code == 429
    # A new browser waits, even with the right password, wherever it is ...
    assert _right(app.test_client(), "victim@example.com", "10.0.5.1").status_code == 429
    # ... but the browser the owner signed in with before is not held back.
    assert _right(known_browser, "victim@example.com", "10.0.6.1").status_code == 302


def test_a_password_change_retires_every_browsers_mark(app, client, db, make_org, make_user):
    """The `ks_device` mark covers the password's hash: a copy of the cookie stops exempting
    its holder from the per-email limit once the password changes (attack review)."""
    from services import accounts

    user = make_user(email="victim@example.com")
    make_org(owner=user)
    known_browser = app.test_client()
    assert _right(known_browser, "victim@example.com", "10.0.9.1").status_code == 302
    known_browser.form("/logout", page="/connections/api-tokens")
    accounts.set_password(user, "another long passphrase here", via="cli")
    db.session.commit()
    for i in range(30):
        assert _fail(client, "victim@example.com", ip=f"10.0.3.{i}").status_code == 401
    held = known_browser.form(
        "/login",
        {"email": "victim@example.com", "password": "another long passphrase here"},
        environ_base={"REMOTE_ADDR": "10.0.6.1"},
    )
    assert held.status_code == 429


def test_one_address_is_throttled_across_emails_without_saying_which_exist(client, make_user):
    make_user(email="real@example.com")
    for i in range(20):
        _fail(client, f"guess{i}@example.com", ip="10.9.9.9")
    unknown = _fail(client, "other@example.com", ip="10.9.9.9")
    known = _fail(client, "real@example.com", ip="10.9.9.9")
    assert unknown.status_code == known.status_code == 429
    assert unknown.get_data(as_text=True) == known.get_data(as_text=True)
    # Another address is not affected.
    assert _fail(client, "other@example.com", ip="10.9.9.10").status_code == 401


def test_successful_sign_ins_do_not_count(client, make_org, make_user):
    make_org(owner=make_user(email="fine@example.com"))
    for _ in range(25):
        client.sign_in("fine@example.com")
        client.form("/logout", page="/connections/api-tokens")


def test_parallel_guesses_are_counted_before_the_password_is_checked(
    app, client, db, make_org, make_user
):
    """40 wrong passwords at once for one email from one address: at most 10 are checked."""
    make_org(owner=make_user(email="victim@example.com"))

    def opened(_):  # every browser has its form before anyone submits
        browser = app.test_client()
        return browser, browser.csrf_token()

    def guess(opened) -> int:
        browser, token = opened
        data = {"email": "victim@example.com", "password": "wrong password!", "csrf_token": token}
        with app.app_context():
            response = browser.post("/login", data=data, environ_base={"REMOTE_ADDR": "10.8.8.8"})
        return response.status_code

    browsers = [opened(i) for i in range(40)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(guess, browsers))
    assert statuses.count(401) <= 10 and statuses.count(401) + statuses.count(429) == 40
    failed = db.session.scalar(
        sa.select(sa.func.count()).where(AuditEvent.action == "user.sign_in_failed")
    )
    assert failed == statuses.count(401)


def _stored_keys() -> list[str]:
    from services.rate_limits import rate_limits

    limits = rate_limits()
    if limits.redis is None:
        return list(limits.first_hit_memory.counts)
    return [key.decode() for key in limits.redis.scan_iter("*signin-failures*")]


def test_failures_are_counted_under_the_deployment_key_prefix(app, client, make_user):
    """Two deployments sharing a Redis must never lock out each other's people."""
    from extensions import limit_key

    email = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    make_user(email=email)
    _fail(client, email, ip="10.7.7.7")
    (prefix,) = limit_key()
    keys = [key for key in _stored_keys() if email in key]
    assert keys and all(f"{prefix}/signin-failures/email/{email}" in key for key in keys)


def test_counting_in_memory_starts_no_thread(app, client, make_user):
    """The `limits` in-memory storage ran an expiry thread that logged KeyError tracebacks
    under load (issue 16); our counters prune as windows pass, on the caller's thread."""
    import threading

    before = {t.ident for t in threading.enumerate()}
    for i in range(5):
        _fail(client, f"nobody-{i}@example.com", ip=f"10.6.6.{i}")
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    assert [name for name in started if "usage" not in name] == []


def test_a_window_starts_at_the_first_failure_not_at_the_clock(app):
    """Windows aligned to the clock would let ten guesses at 14:29:59 be followed by ten
    more at 14:30:00; the window of a counted limit runs from its first hit."""
    from limits import parse

    from extensions import counted_limits

    item = parse("10 per 15 minutes")
    key = ("window-test", uuid.uuid4().hex)
    boundary = (int(time.time() // 900) + 1) * 900  # the next quarter hour of the clock
    assert all(counted_limits.hit(item, *key, now=boundary - 1) for _ in range(10))
    assert not counted_limits.hit(item, *key, now=boundary + 1)
    # A refund gives one back, and never goes below zero.
    for _ in range(20):
        counted_limits.refund(item, *key)
    assert counted_limits.get_window_stats(item, *key).remaining == 10
