"""The JSON API's rate limits (SPEC §4), counted in one storage round trip per request.

Fixed windows, as Flask-Limiter's default strategy counts them: a limit such as
`1000/minute;100/second` is one counter per window, keyed by the window's start, and a
request is allowed while every counter is within its amount. Without Redis, a dictionary in
the worker's memory under a lock, pruned as windows pass (no timer thread per hit).

With Redis, a worker claims numbers of a window in leases (issue 17): one pipeline (INCRBY
and EXPIRE of each window whose lease is used up) gets it the next `lease` numbers of the
shared counter, and it hands them to its next requests without asking again; request number
n of a window is allowed while n <= amount. So no request is ever allowed past a limit, as
before, and one worker alone allows exactly the limit; with several workers, the numbers
other workers claimed and have not used yet are lost when the window ends, so a client spread
over them may be refused up to (workers - 1) x (lease - 1) requests early. Leases are a
twentieth of a window (at most 100) and shrink near its end; a limit under 40 a window is
counted a request at a time. At the default `1000/minute;100/second` a worker asks Redis at
most once every 5 requests, instead of every request (0.4 ms of a 1.2 ms whoami here).

Redis slow or gone: the request counts in the worker's memory instead, and Redis is tried
again after RETRY_SECONDS; the switch is thread-safe, so a second thread never re-raises the
first one's error (issue 16).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from flask import Flask, current_app
from limits import parse_many

log = logging.getLogger(__name__)

EXTENSION_KEY = "keysmith_rate_limits"
RETRY_SECONDS = 5.0
PRUNE_SECONDS = 1.0
LEASE_SHARE = 20  # a lease is at most this fraction of a window's amount,
LEASE_MAX = 100  # and at most this many numbers


@dataclass(frozen=True, slots=True)
class Window:
    amount: int
    seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against one limit, and what its headers say: the window
    that refused it, else the shortest one."""

    allowed: bool
    amount: int
    remaining: int
    reset: int  # unix time at which the shown window starts again

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))


@lru_cache(maxsize=1024)
def windows_of(limit: str) -> tuple[Window, ...]:
    """The windows of a limit in Flask-Limiter's syntax, shortest first; () if unreadable."""
    try:
        items = parse_many(limit)
    except ValueError:
        return ()
    return tuple(sorted({Window(i.amount, int(i.get_expiry())) for i in items}, key=_order))


def _order(window: Window) -> tuple[int, int]:
    return (window.seconds, window.amount)


class _Memory:
    """Counters of this worker: {(key, window seconds, window start): count}."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int, int], int] = {}
        self.lock = threading.Lock()
        self.next_prune = 0.0

    def add(self, keys: list[tuple[str, int, int]], amount: int, now: float) -> list[int]:
        with self.lock:
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_SECONDS
                stale = [k for k in self.counts if k[2] + k[1] <= now]
                for k in stale:
                    del self.counts[k]
            results = []
            for key in keys:
                count = max(0, self.counts.get(key, 0) + amount)
                self.counts[key] = count
                results.append(count)
            return results


def lease_size(amount: int, claimed: int) -> int:
    """How many numbers to claim of a window of `amount` of which `claimed` are taken (as
    far as this worker knows): smaller near the end, so fewer go unused when it ends."""
    return max(1, min(LEASE_MAX, amount // LEASE_SHARE, (amount - claimed) // 4))


@dataclass(slots=True)
class _Lease:
    """Numbers this worker claimed of one window: `available` of them, ending at `last`."""

    start: int  # the window's start (unix time)
    last: int  # the shared counter after the claim
    size: int
    available: int

    def take(self) -> int:
        self.available -= 1
        return self.last - self.available


class _Leases:
    """This worker's leases: {(counter name, window seconds): lease}, pruned as windows pass."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, int], _Lease] = {}
        self.lock = threading.Lock()
        self.next_prune = 0.0

    def take(
        self, slots: list[tuple[str, int, int]], windows: tuple[Window, ...], now: float
    ) -> list[int | None]:
        """The next number of each window from its lease, under one lock; None where it
        must be claimed. A window whose numbers are all claimed refuses without asking
        Redis again."""
        numbers: list[int | None] = []
        with self.lock:
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_SECONDS
                for key in [k for k, v in self.leases.items() if v.start + k[1] <= now]:
                    del self.leases[key]
            for (name, seconds, start), window in zip(slots, windows, strict=True):
                lease = self.leases.get((name, seconds))
                if lease is None or lease.start != start:
                    numbers.append(None)
                elif lease.available > 0:
                    numbers.append(lease.take())
                else:
                    numbers.append(lease.last + 1 if lease.last >= window.amount else None)
        return numbers

    def claimed(self, slot: tuple[str, int, int]) -> int:
        name, seconds, start = slot
        with self.lock:
            lease = self.leases.get((name, seconds))
            return lease.last if lease is not None and lease.start == start else 0

    def keep(self, slot: tuple[str, int, int], last: int, size: int) -> int:
        """Keep the lease Redis just gave (its counter after INCRBY size); the first number.
        A lease another thread claimed meanwhile is replaced: its rest is lost, never reused."""
        name, seconds, start = slot
        lease = _Lease(start, last, size, size)
        number = lease.take()
        with self.lock:
            self.leases[(name, seconds)] = lease
        return number

    def give_back(self, slot: tuple[str, int, int]) -> bool:
        """Return one number to the window's lease (a refund); False if it has no room."""
        name, seconds, start = slot
        with self.lock:
            lease = self.leases.get((name, seconds))
            if lease is None or lease.start != start or lease.available >= lease.size:
                return False
            lease.available += 1
            return True


class _FirstHitMemory:
    """This worker's counters whose window starts at their first hit: {name: (count, end)}."""

    def __init__(self) -> None:
        self.counts: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()
        self.next_prune = 0.0

    def add(self, name: str, seconds: int, amount: int, now: float) -> tuple[int, float]:
        with self.lock:
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_SECONDS
                for stale in [k for k, (_, end) in self.counts.items() if end <= now]:
                    del self.counts[stale]
            count, end = self.counts.get(name, (0, 0.0))
            if end <= now:
                if amount <= 0:
                    return 0, now + seconds  # nothing counted: nothing to give back
                count, end = 0, now + seconds
            count = max(0, count + amount)
            self.counts[name] = (count, end)
            return count, end


# A refund (or a look, with 0) of a first-hit window, only while it runs, never below zero.
_GIVE_BACK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and tonumber(ARGV[1]) > 0 and count > 0 then
  count = redis.call('DECRBY', KEYS[1], math.min(count, tonumber(ARGV[1])))
end
return {count, ttl}
"""


def _decision(window: Window, count: int, reset: float) -> Decision:
    allowed = count <= window.amount
    return Decision(allowed, window.amount, max(0, window.amount - count), int(reset))


class RateLimits:
    """One app's counters: Redis when its storage URI names one, else memory."""

    def __init__(self, storage_uri: str, prefix: str, config) -> None:
        self.prefix = prefix or "keysmith"
        self.memory = _Memory()
        self.leases = _Leases()
        self.first_hit_memory = _FirstHitMemory()
        self.redis = None
        if storage_uri.startswith(("redis://", "rediss://")):
            from extensions import redis_client

            self.redis = redis_client(storage_uri, config)
        self._lock = threading.Lock()
        self._redis_down_until = 0.0

    def _redis_usable(self) -> bool:
        # No lock to read: one float, written whole; the lock orders the writers alone.
        return self.redis is not None and time.monotonic() >= self._redis_down_until

    def _redis_failed(self) -> None:
        with self._lock:
            first = time.monotonic() >= self._redis_down_until
            self._redis_down_until = time.monotonic() + RETRY_SECONDS
        if first:
            log.warning("Rate limit storage unreachable: counting in this worker's memory")

    def _count(
        self,
        key: str,
        windows: tuple[Window, ...],
        amount: int,
        now: float,
        namespace: str = "api-limit",
    ) -> list[int]:
        """Count `amount` (1 a request, -1 a refund) in each window: the request's number in
        each (its count, without Redis)."""
        # Keyed by the amount too, as Flask-Limiter does: a changed limit starts afresh.
        slots = [
            (f"{namespace}:{key}:{w.amount}", w.seconds, int(now // w.seconds) * w.seconds)
            for w in windows
        ]
        if self._redis_usable():
            try:
                if amount == 1:
                    return self._number_in_redis(slots, windows, now)
                return self._add_in_redis(
                    [slot for slot in slots if not self.leases.give_back(slot)], amount
                )
            except Exception:  # redis-py's errors (timeouts, refused, reset) vary
                self._redis_failed()
        return self.memory.add(slots, amount, now)

    def _number_in_redis(
        self, slots: list[tuple[str, int, int]], windows: tuple[Window, ...], now: float
    ) -> list[int]:
        numbers = self.leases.take(slots, windows, now)
        claims = [i for i, number in enumerate(numbers) if number is None]
        if claims:
            sizes = {
                i: lease_size(windows[i].amount, self.leases.claimed(slots[i])) for i in claims
            }
            pipe = self.redis.pipeline(transaction=False)  # type: ignore[union-attr]
            for i in claims:
                name, seconds, start = slots[i]
                redis_key = f"{self.prefix}:{name}:{seconds}:{start}"
                pipe.incrby(redis_key, sizes[i])
                pipe.expire(redis_key, seconds + 1)
            for i, last in zip(claims, pipe.execute()[0::2], strict=True):
                numbers[i] = self.leases.keep(slots[i], int(last), sizes[i])
        return numbers  # type: ignore[return-value]

    def _add_in_redis(self, slots: list[tuple[str, int, int]], amount: int) -> list[int]:
        if not slots:
            return []
        pipe = self.redis.pipeline(transaction=False)  # type: ignore[union-attr]
        for name, seconds, start in slots:
            redis_key = f"{self.prefix}:{name}:{seconds}:{start}"
            pipe.incrby(redis_key, amount)
            pipe.expire(redis_key, seconds + 1)
        return [int(n) for n in pipe.execute()[0::2]]

    def count(
        self, namespace: str, key: str, window: Window, amount: int = 1, *, now: float
    ) -> Decision:
        """Add `amount` (1 a hit, -1 a refund, 0 a look) to a limit we count by hand (the
        sign-in throttle and the like); the decision after it.

        Its window starts at the first hit and lasts `window.seconds` (as Flask-Limiter's
        fixed window did): ten guesses at 14:29:59 are not followed by ten more at 14:30:00,
        as windows aligned to the clock would allow. A refund never goes below zero and
        never starts a window."""
        name = f"{self.prefix}:{namespace}:{key}:{window.amount}:{window.seconds}"
        if self._redis_usable():
            try:
                count, ttl_ms = self._count_in_redis(name, window.seconds, amount)
                reset = now + (ttl_ms / 1000 if ttl_ms > 0 else window.seconds)
                return _decision(window, count, reset)
            except Exception:  # redis-py's errors (timeouts, refused, reset) vary
                self._redis_failed()
        count, reset = self.first_hit_memory.add(name, window.seconds, amount, now)
        return _decision(window, count, reset)

    def _count_in_redis(self, name: str, seconds: int, amount: int) -> tuple[int, int]:
        if amount > 0:
            pipe = self.redis.pipeline(transaction=True)  # type: ignore[union-attr]
            pipe.set(name, 0, ex=seconds, nx=True)  # a new window, only if none runs
            pipe.incrby(name, amount)
            pipe.pttl(name)
            _, count, ttl = pipe.execute()
            return int(count), int(ttl)
        count, ttl = self.redis.eval(_GIVE_BACK, 1, name, -amount)  # type: ignore[union-attr]
        return int(count), int(ttl)

    def hit(self, key: str, limit: str, *, now: float | None = None) -> Decision | None:
        """Count one request of `key` against `limit`; None if the limit is unreadable."""
        windows = windows_of(limit)
        if not windows:
            return None
        now = time.time() if now is None else now
        counts = self._count(key, windows, 1, now)
        shown = None
        for window, count in zip(windows, counts, strict=True):
            reset = (int(now // window.seconds) + 1) * window.seconds
            if count > window.amount:
                return Decision(False, window.amount, 0, reset)
            if shown is None:
                shown = Decision(True, window.amount, window.amount - count, reset)
        return shown

    def refund(self, key: str, limit: str, *, now: float | None = None) -> None:
        """Take back one request (an answer that should not count, such as a 503)."""
        windows = windows_of(limit)
        if windows:
            self._count(key, windows, -1, time.time() if now is None else now)


def rate_limits(app: Flask | None = None) -> RateLimits:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(EXTENSION_KEY)
    if found is None:
        found = app.extensions[EXTENSION_KEY] = RateLimits(
            app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
            app.config.get("RATELIMIT_KEY_PREFIX", "keysmith"),
            app.config,
        )
    return found
