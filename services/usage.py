"""Last used (time, IP) and requests per day, without a database write per request.

The API's authentication calls `record_use(token, ip)` after a token is verified. Each
worker keeps the counts in memory and writes them at most once a minute, always from a
thread of its own, never a request's (its timer, every interval, so a token that goes quiet
is still written within the minute; woken early by the first request after the interval;
and when the process exits), in one transaction of its own:
an upsert into `token_usage` that adds to the day's count, and `last_used_at` /
`last_used_ip` on the token only where this worker's time is newer. Several workers
and hosts add up correctly, since each flush adds its own counts.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.dialects import postgresql, sqlite

from extensions import db
from models import ApiToken, TokenUsage, utcnow

log = logging.getLogger(__name__)

EXTENSION_KEY = "keysmith_usage"
DEFAULT_FLUSH_SECONDS = 60.0
_CHUNK = 500


class UsageBuffer:
    """One worker's not-yet-written usage; thread-safe."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.counts: dict[tuple[str, date], int] = {}
        self.last_used: dict[str, tuple[datetime, str | None]] = {}
        self.next_flush = time.monotonic() + interval
        self._lock = threading.Lock()
        self._timer_pid: int | None = None
        self.wake = threading.Event()  # a request saw the interval over: flush now
        self.flushed_by: str | None = None  # the thread of the last flush (for tests)

    def add(self, token_id: str, ip: str | None, at: datetime) -> None:
        key = (token_id, at.date())
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            seen = self.last_used.get(token_id)
            if seen is None or seen[0] <= at:
                self.last_used[token_id] = (at, ip)

    def due(self, now: float) -> bool:
        return now >= self.next_flush

    def take(self) -> tuple[dict[tuple[str, date], int], dict[str, tuple[datetime, str | None]]]:
        with self._lock:
            counts, last_used = self.counts, self.last_used
            self.counts, self.last_used = {}, {}
            self.next_flush = time.monotonic() + self.interval
            return counts, last_used

    def put_back(
        self,
        counts: dict[tuple[str, date], int],
        last_used: dict[str, tuple[datetime, str | None]],
    ) -> None:
        with self._lock:
            for key, count in counts.items():
                self.counts[key] = self.counts.get(key, 0) + count
            for token_id, seen in last_used.items():
                mine = self.last_used.get(token_id)
                if mine is None or mine[0] < seen[0]:
                    self.last_used[token_id] = seen

    def __bool__(self) -> bool:
        return bool(self.counts or self.last_used)

    def ensure_timer(self, app: Flask) -> None:
        """Start this process's flush timer once (after a fork, the child starts its own)."""
        pid = os.getpid()
        if self._timer_pid == pid:
            return
        with self._lock:
            if self._timer_pid == pid:
                return
            self._timer_pid = pid
        thread = threading.Thread(
            target=_flush_periodically,
            args=(weakref.ref(app), self),
            daemon=True,
            name="keysmith-usage-flush",
        )
        thread.start()


def _flush_periodically(app_ref: weakref.ref[Flask], buffer: UsageBuffer) -> None:
    while True:
        buffer.wake.wait(buffer.interval)
        buffer.wake.clear()
        app = app_ref()
        if app is None:
            return  # the app is gone (tests make many); so is its buffer
        if not buffer:
            continue
        try:
            with app.app_context():
                flush()
        except Exception:
            log.warning("Could not write token usage; will retry", exc_info=True)
        del app


_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def _buffer(app: Flask | None = None) -> UsageBuffer:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    buffer = app.extensions.get(EXTENSION_KEY)
    if buffer is None:
        interval = float(app.config.get("USAGE_FLUSH_SECONDS", DEFAULT_FLUSH_SECONDS))
        buffer = app.extensions[EXTENSION_KEY] = UsageBuffer(interval)
        _apps.add(app)
    return buffer


def record_use(token: Any, ip: str | None, *, now: datetime | None = None) -> None:
    """Note one authenticated request of this token (buffered; never a write per call).

    `token` is anything with an `id` (the `VerifiedToken` that `verify()` returns).
    The request that finds the interval over wakes the worker's flush thread: the write
    (1 s or more for tens of thousands of tokens) never runs on a request's thread.
    """
    buffer = _buffer()
    buffer.add(token.id, ip[:45] if ip else None, now or utcnow())
    buffer.ensure_timer(current_app._get_current_object())  # type: ignore[attr-defined]
    if buffer.due(time.monotonic()):
        buffer.wake.set()


def pending() -> int:
    """How many (token, day) counts this worker has not written yet."""
    return len(_buffer().counts)


def flush() -> int:
    """Write this worker's buffered usage now; returns how many tokens it touched."""
    buffer = _buffer()
    counts, last_used = buffer.take()
    if not counts and not last_used:
        return 0
    try:
        _write(counts, last_used)
    except Exception:
        buffer.put_back(counts, last_used)
        raise
    buffer.flushed_by = threading.current_thread().name
    return len(last_used)


def _insert_for(dialect: str):
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"token usage upsert on {dialect}")


def _write(
    counts: dict[tuple[str, date], int], last_used: dict[str, tuple[datetime, str | None]]
) -> None:
    tokens = ApiToken.__table__
    usage = TokenUsage.__table__
    token_ids = sorted({token_id for token_id, _ in counts} | set(last_used))
    # Its own connection and transaction: a request's session is never committed by this.
    with db.engine.begin() as conn:
        existing: set[str] = set()
        for start in range(0, len(token_ids), _CHUNK):
            chunk = token_ids[start : start + _CHUNK]
            existing.update(conn.scalars(sa.select(tokens.c.id).where(tokens.c.id.in_(chunk))))
        # Sorted, so concurrent flushes of two workers lock rows in the same order.
        rows = [
            {"token_id": token_id, "day": day, "count": count}
            for (token_id, day), count in sorted(counts.items())
            if token_id in existing
        ]
        if rows:
            insert = _insert_for(conn.dialect.name)(usage)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[usage.c.token_id, usage.c.day],
                    set_={"count": usage.c.count + insert.excluded["count"]},
                ),
                rows,
            )
        seen = [
            {"token_id_": token_id, "at_": at, "ip_": ip}
            for token_id, (at, ip) in sorted(last_used.items())
            if token_id in existing
        ]
        if seen:
            at = sa.bindparam("at_", type_=tokens.c.last_used_at.type)
            conn.execute(
                sa.update(tokens)
                .where(
                    tokens.c.id == sa.bindparam("token_id_"),
                    sa.or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < at),
                )
                .values(last_used_at=at, last_used_ip=sa.bindparam("ip_")),
                seen,
            )


@atexit.register
def _flush_at_exit() -> None:
    """A worker that stops writes what it still holds."""
    for app in list(_apps):
        buffer = app.extensions.get(EXTENSION_KEY)
        if not buffer:
            continue
        try:
            with app.app_context():
                flush()
        except Exception:
            log.warning("Could not write token usage at exit", exc_info=True)


def init_app(app: Flask) -> None:
    _buffer(app)
