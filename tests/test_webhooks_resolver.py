"""One organization's never-answering DNS does not starve the others' look-ups (security
review of issue 15): each look-up has a thread of its own, holds a shared slot only until
its deadline, and a tenant's stragglers count against that tenant's share alone."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from webhook_support import start_receiver

from services import outbound

HUNG = "hung.example.test"
FINE = "fine.example.test"


@pytest.fixture
def app_config():
    return {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_ALLOW_HTTP": True}


@pytest.fixture
def receiver():
    receiver = start_receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def dns(monkeypatch):
    """A resolver where HUNG never answers (until the test ends) and FINE is loopback."""
    release = threading.Event()
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == HUNG:
            release.wait(30)
            raise socket.gaierror("gave up")
        return real("127.0.0.1" if host == FINE else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    yield
    release.set()


def _hang(app, tenant: int, count: int) -> list[threading.Thread]:
    def post() -> None:
        with app.app_context():
            outbound.post(f"http://{HUNG}/x", b"{}", {}, timeout=0.3, tenant=tenant)

    threads = [threading.Thread(target=post, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_a_tenant_with_hung_lookups_does_not_starve_the_others(app, dns, receiver, monkeypatch):
    # Few shared slots, so that a shared pool would be exhausted by one tenant.
    monkeypatch.setattr(outbound, "_LOOKUPS", outbound._Lookups(slots=2, per_tenant=4))
    for thread in _hang(app, tenant=1, count=8):
        thread.join(2)
    assert outbound._LOOKUPS.in_flight(1) == 4  # its share, blocked past their deadlines
    started = time.monotonic()
    result = outbound.post(f"http://{FINE}:{receiver.port}/hook", b"{}", {}, tenant=2)
    assert result.ok, result.error
    assert time.monotonic() - started < 1
    # Tenant 1 is refused at once while its share hangs, and gets it back when they end.
    refused = outbound.post(f"http://{FINE}:{receiver.port}/hook", b"{}", {}, tenant=1)
    assert not refused.ok and "could not be resolved" in refused.error


def test_lookups_that_answer_give_their_share_back(app, dns, receiver):
    for _ in range(10):
        assert outbound.post(f"http://{FINE}:{receiver.port}/hook", b"{}", {}, tenant=3).ok
    assert outbound._LOOKUPS.in_flight(3) == 0


def test_a_hung_lookup_holds_no_shared_slot_after_its_deadline(app, dns, receiver, monkeypatch):
    lookups = outbound._Lookups(slots=1, per_tenant=4)
    monkeypatch.setattr(outbound, "_LOOKUPS", lookups)
    [thread] = _hang(app, tenant=1, count=1)
    thread.join(2)
    assert not thread.is_alive() and lookups.stragglers == 1
    # The one slot is free although the straggler still blocks in getaddrinfo.
    assert outbound.post(f"http://{FINE}:{receiver.port}/hook", b"{}", {}, tenant=2).ok
