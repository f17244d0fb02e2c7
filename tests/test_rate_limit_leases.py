"""The API's limits counted in leases of a shared Redis counter (issue 17, SPEC §4): never a
request past a limit, one worker alone allows exactly the limit, several together lose at
most the unused rest of each other's leases, and a worker asks Redis once a lease, not once
a request. Two RateLimits objects on one real Redis are two workers, in effect.

Run against the Redis of TEST_REDIS_URL (`.ci/run` sets it); leases exist only there: in
memory every request is counted exactly, one at a time (tests/test_api_limits_cost.py).
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from services.rate_limits import LEASE_MAX, RateLimits, lease_size, windows_of

REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="leases are counted in Redis only")
# Day windows: a test does not straddle a window's end, save at midnight UTC.
LIMIT = "200/day"
NOW = 1_800_000_000.0 + 3600  # within one day window


@pytest.fixture
def prefix():
    import redis

    prefix = f"keysmith-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def worker(prefix: str) -> RateLimits:
    limits = RateLimits(REDIS_URL, prefix, {})
    assert limits.redis is not None
    return limits


def count_round_trips(limits: RateLimits) -> list[str]:
    trips: list[str] = []
    pipeline = limits.redis.pipeline

    def counted(*args, **kwargs):
        trips.append("pipeline")
        return pipeline(*args, **kwargs)

    limits.redis.pipeline = counted
    return trips


def test_lease_sizes():
    assert lease_size(1000, 0) == 50 and lease_size(100, 0) == 5  # the default limit's
    assert lease_size(39, 0) == 1  # small limits: one at a time, exactly as before
    assert lease_size(10_000_000, 0) == LEASE_MAX
    assert lease_size(200, 190) == 2 and lease_size(200, 199) == 1 and lease_size(200, 250) == 1


@needs_redis
def test_one_worker_allows_exactly_the_limit_and_counts_remaining_down_by_one(prefix):
    limits = worker(prefix)
    trips = count_round_trips(limits)
    decisions = [limits.hit("token-a", LIMIT, now=NOW) for _ in range(203)]

    assert [d.allowed for d in decisions] == [True] * 200 + [False] * 3
    assert [d.remaining for d in decisions[:200]] == list(range(199, -1, -1))
    # Leases of 10, smaller near the end; the refused ones ask no more once all is claimed.
    assert 20 <= len(trips) <= 30, len(trips)


@needs_redis
def test_two_workers_never_allow_more_than_the_limit_and_lose_at_most_a_lease_each(prefix):
    first, second = worker(prefix), worker(prefix)
    allowed = 0
    for i in range(300):
        decision = (first if i % 3 else second).hit("token-b", LIMIT, now=NOW)
        allowed += decision.allowed
    assert 200 - (lease_size(200, 0) - 1) <= allowed <= 200


@needs_redis
def test_many_threads_of_many_workers_never_pass_the_limit(prefix):
    workers = [worker(prefix) for _ in range(3)]
    allowed: list[bool] = []
    lock = threading.Lock()

    def ask(limits: RateLimits) -> None:
        for _ in range(100):
            decision = limits.hit("token-c", LIMIT, now=NOW)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=ask, args=(w,)) for w in workers for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 1200
    # Never past the limit; short of it by at most the unused rest of the other workers'
    # leases (and of leases replaced by a thread's concurrent claim).
    assert 200 - 3 * 2 * (lease_size(200, 0) - 1) <= sum(allowed) <= 200


@needs_redis
def test_the_default_limit_asks_redis_once_in_five_requests(prefix):
    limits = worker(prefix)
    trips = count_round_trips(limits)
    default = "1000/minute;100/second"
    assert [w.amount for w in windows_of(default)] == [100, 1000]
    # Within one second window (aligned to the minute too), 50 requests.
    at = 1_800_000_000.0 - 1_800_000_000 % 60 + 0.5
    decisions = [limits.hit("token-d", default, now=at) for _ in range(50)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == list(range(99, 49, -1))
    assert len(trips) == 10


@needs_redis
def test_a_refund_goes_back_to_the_lease_without_asking_redis(prefix):
    limits = worker(prefix)
    first = limits.hit("token-e", LIMIT, now=NOW)
    trips = count_round_trips(limits)
    limits.refund("token-e", LIMIT, now=NOW)
    again = limits.hit("token-e", LIMIT, now=NOW)
    assert trips == []
    assert again.remaining == first.remaining  # the refunded request no longer counts
