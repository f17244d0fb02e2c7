"""Last used (time, IP) and requests per day, without a database write per request.

The API's authentication calls `record_use(token, ip)` after a token is verified. Each
worker keeps the counts in memory and writes them at most once a minute, always from a
thread of its own, never a request's (its timer, every interval, so a token that goes quiet
is still written within the minute; woken early by the first request after the interval;
and when the process exits), in transactions of its own of a few thousand tokens each (so a
revocation never waits behind a whole flush) and two statements each: an upsert into
`token_usage` that adds to the day's count, and `last_used_at` / `last_used_ip` on the token
only where this worker's time is newer. A part that fails is kept for the next flush; the
parts written before it are not written again. Several workers and hosts add up correctly,
since each flush adds its own counts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from extensions import db
from models import utcnow

log = logging.getLogger(__name__)

EXTENSION_KEY = "keysmith_usage"
DEFAULT_FLUSH_SECONDS = 60.0


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
        if self._timer_pid == _pid:  # no getpid() per request: a system call
            return
        pid = os.getpid()
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
        except Exception as error:  # the database is down: one line, no traceback, retried
            log.warning("Could not write token usage; will retry: %s", type(error).__name__)
        del app


_apps: weakref.WeakSet[Flask] = weakref.WeakSet()
_pid = os.getpid()  # this process's, kept up to date across forks


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    buffer = _buffer(app)
    buffer.add(token.id, ip[:45] if ip else None, now or utcnow())
    buffer.ensure_timer(app)
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
    touched = len(last_used)
    size = transaction_tokens(db.engine.dialect.name)
    try:
        for part_counts, part_last_used in _parts(counts, last_used, size, _order(last_used)):
            _write(part_counts, part_last_used)
            for key in part_counts:  # written: never put back, so never counted twice
                del counts[key]
            for token_id in part_last_used:
                del last_used[token_id]
    except Exception:
        buffer.put_back(counts, last_used)  # what was not written yet
        raise
    buffer.flushed_by = threading.current_thread().name
    return touched


# A transaction of its own for each part of this many tokens: a flush of 50,000 tokens
# rewrites 50,000 rows of api_tokens (about 10 s on a slow PostgreSQL, 2 s on SQLite), and
# a revocation, rotation or suspension of any of them waited for all of it, behind the row
# locks (PostgreSQL) or the one write lock (SQLite). In parts, it waits for one part at most.
# SQLite's parts are larger and follow the table's own order (rowid): each commit writes the
# pages it changed to the WAL again, and parts of 2,000 tokens in id order, scattered over
# the whole table, made a flush of 50,000 tokens 5 s instead of 2 s in one transaction; in
# rowid order, 5,000 at a time, it takes 1.4 s with about 0.2 s a part (measured, issue 16).
TRANSACTION_TOKENS = {"postgresql": 2_000, "sqlite": 5_000}


def transaction_tokens(dialect: str) -> int:
    """How many tokens one flush transaction writes (USAGE_FLUSH_TRANSACTION_TOKENS wins)."""
    configured = current_app.config.get("USAGE_FLUSH_TRANSACTION_TOKENS")
    return int(configured or TRANSACTION_TOKENS.get(dialect, 2_000))


def _order(last_used: dict[str, tuple[datetime, str | None]]) -> list[str] | None:
    """On SQLite, the buffered tokens in the table's rowid order (the others after them);
    elsewhere None: token id order, so two workers' flushes lock rows in the same order."""
    if db.engine.dialect.name != "sqlite" or not last_used:
        return None
    with db.engine.connect() as conn:
        stored = (
            conn.execute(
                sa.text(
                    "SELECT id FROM api_tokens WHERE id IN (SELECT value FROM json_each(:ids)) "
                    "ORDER BY rowid"
                ),
                {"ids": json.dumps(list(last_used))},
            )
            .scalars()
            .all()
        )
    return stored


def _parts(
    counts: dict[tuple[str, date], int],
    last_used: dict[str, tuple[datetime, str | None]],
    size: int,
    order: list[str] | None = None,
):
    """(counts, last used) of at most `size` tokens at a time, in `order` (then token
    order for the tokens it leaves out)."""
    by_token: dict[str, list[tuple[str, date]]] = {}
    for key in counts:
        by_token.setdefault(key[0], []).append(key)
    buffered = by_token.keys() | last_used.keys()
    first = [token_id for token_id in order or () if token_id in buffered]
    tokens = first + sorted(buffered.difference(first))
    for start in range(0, len(tokens), max(1, size)):
        part = tokens[start : start + size]
        yield (
            {key: counts[key] for token_id in part for key in by_token.get(token_id, ())},
            {token_id: last_used[token_id] for token_id in part if token_id in last_used},
        )


# One statement per table and part: the rows travel as one parameter (PostgreSQL arrays,
# SQLite a JSON array read by json_each), so a part costs two statements, however many tokens
# (an executemany of 50,000 tokens took 1.3 s on SQLite and 4 s on PostgreSQL; issue 16).
# Tokens deleted since are left out by the join. Two workers' flushes may deadlock on
# PostgreSQL: the loser's part is rolled back and written at its next flush (put_back).

_PG_COUNTS = sa.text(
    """
    INSERT INTO token_usage (token_id, day, count)
    SELECT v.token_id, v.day, v.count
    FROM unnest(CAST(:ids AS text[]), CAST(:days AS date[]), CAST(:counts AS bigint[]))
        AS v(token_id, day, count)
    JOIN api_tokens ON api_tokens.id = v.token_id
    ON CONFLICT (token_id, day) DO UPDATE SET count = token_usage.count + excluded.count
    """
)
_PG_LAST_USED = sa.text(
    """
    UPDATE api_tokens SET last_used_at = v.at, last_used_ip = v.ip
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamp[]), CAST(:ips AS text[]))
        AS v(id, at, ip)
    WHERE api_tokens.id = v.id
      AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at < v.at)
    """
)
# SQLite's upsert after a SELECT needs a WHERE (a parsing ambiguity): hence "WHERE true".
_SQLITE_COUNTS = sa.text(
    """
    INSERT INTO token_usage (token_id, day, count)
    SELECT v.token_id, v.day, v.count
    FROM (
        SELECT json_extract(value, '$[0]') AS token_id, json_extract(value, '$[1]') AS day,
            json_extract(value, '$[2]') AS count
        FROM json_each(:rows)
    ) AS v
    JOIN api_tokens ON api_tokens.id = v.token_id
    WHERE true
    ON CONFLICT (token_id, day) DO UPDATE SET count = token_usage.count + excluded.count
    """
)
_SQLITE_LAST_USED = sa.text(
    """
    UPDATE api_tokens SET last_used_at = v.at, last_used_ip = v.ip
    FROM (
        SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at,
            json_extract(value, '$[2]') AS ip
        FROM json_each(:rows)
    ) AS v
    WHERE api_tokens.id = v.id
      AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at < v.at)
    """
)


def _naive_utc(at: datetime) -> datetime:
    """What UTCDateTime stores: naive UTC."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


def _sqlite_time(at: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text (naive UTC, microseconds), so stored times still
    compare as text; one C call for the usual aware-UTC time, 50,000 of them a flush."""
    if at.tzinfo is not UTC:
        at = _naive_utc(at)
    return at.isoformat(" ", "microseconds")[:26]


def _write(
    counts: dict[tuple[str, date], int], last_used: dict[str, tuple[datetime, str | None]]
) -> None:
    # Sorted, so concurrent flushes of two workers mostly lock rows in the same order.
    count_rows = sorted((token_id, day, count) for (token_id, day), count in counts.items())
    seen_rows = sorted((token_id, at, ip) for token_id, (at, ip) in last_used.items())
    # Its own connection and transaction: a request's session is never committed by this.
    with db.engine.begin() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            # Counts lost to a crash of the database in the next few hundred ms are not worth
            # waiting for the disk on every flush.
            conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
            if count_rows:
                ids, days, numbers = zip(*count_rows, strict=True)
                conn.execute(
                    _PG_COUNTS, {"ids": list(ids), "days": list(days), "counts": list(numbers)}
                )
            if seen_rows:
                ids, ats, ips = zip(*seen_rows, strict=True)
                times = [_naive_utc(at) for at in ats]
                conn.execute(_PG_LAST_USED, {"ids": list(ids), "ats": times, "ips": list(ips)})
        elif dialect == "sqlite":
            if count_rows:
                rows = [(token_id, day.isoformat(), count) for token_id, day, count in count_rows]
                conn.execute(_SQLITE_COUNTS, {"rows": json.dumps(rows)})
            if seen_rows:
                rows = [(token_id, _sqlite_time(at), ip) for token_id, at, ip in seen_rows]
                conn.execute(_SQLITE_LAST_USED, {"rows": json.dumps(rows)})
        else:
            raise NotImplementedError(f"token usage flush on {dialect}")


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
        except Exception as error:
            log.warning("Could not write token usage at exit: %s", type(error).__name__)


def init_app(app: Flask) -> None:
    _buffer(app)
