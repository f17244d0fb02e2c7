"""Extensions created bare here and bound to the app in create_app()."""

import contextlib
import logging
import os
import sqlite3
import threading
import time

import sqlalchemy as sa
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import RateLimiter
from limits.util import WindowStats

from models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# No default limits: the JSON API sets its per-token limits, sign-in its own throttle.
limiter = Limiter(key_func=get_remote_address)


def redis_options(config) -> dict:
    """The one place Redis clients get their timeouts (REDIS_TIMEOUT_SECONDS, 0.25 s), and
    no retries: a stalled Redis costs a request one timeout, then the in-memory fallback."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeout = float(config.get("REDIS_TIMEOUT_SECONDS", 0.25))
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def redis_client(url: str, config):
    """A Redis client with the shared timeouts."""
    import redis

    return redis.Redis.from_url(url, **redis_options(config))


def limit_key(*parts: str) -> list[str]:
    """The identifiers of a limit counted by hand (limiter.limiter.hit), behind the same
    RATELIMIT_KEY_PREFIX as Flask-Limiter's own keys, so deployments sharing a Redis never
    count each other's requests or sign-in failures."""
    from flask import current_app

    # The prefix Flask-Limiter put on its own keys (fixed at its first init_app).
    prefix = getattr(limiter, "_key_prefix", None) or current_app.config.get("RATELIMIT_KEY_PREFIX")
    return [prefix, *parts] if prefix else list(parts)


class CountedLimits:
    """hit / test / window stats of the limits we count by hand (the sign-in throttle, the
    API's unrouted answers, the ip_denied audit bound), on the limiter's storage.

    While that storage (Redis) is unreachable they count in this worker's memory, as
    Flask-Limiter's own in-memory fallback does, and try the storage again every few
    seconds: an outage of Redis loosens limits to one worker's view, never a 500.
    """

    RETRY_SECONDS = 5.0

    def __init__(self) -> None:
        self._memory: RateLimiter | None = None
        self._memory_for: object | None = None
        self._failed: object | None = None  # the storage that failed (a new app has another)
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self._call("hit", item, *identifiers)

    def refund(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Give one hit back (a fixed-window counter, Flask-Limiter's default strategy), only
        while the window holds one: never below zero when a new window began meanwhile."""
        stats = self._call("get_window_stats", item, *identifiers)
        if stats.remaining >= item.amount:
            return False
        return self._call("hit", item, *identifiers, cost=-1)

    def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self._call("test", item, *identifiers)

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self._call("get_window_stats", item, *identifiers)

    def _call(self, name: str, *args, **kwargs):
        primary = limiter.limiter
        if isinstance(primary.storage, MemoryStorage):
            return getattr(primary, name)(*args, **kwargs)
        if primary.storage is not self._failed or time.monotonic() >= self._retry_at:
            try:
                return getattr(primary, name)(*args, **kwargs)
            except Exception:  # the storage's own errors vary with its client library
                logging.getLogger(__name__).warning(
                    "Rate limit storage unreachable: counting in this worker's memory"
                )
                self._failed, self._retry_at = (
                    primary.storage,
                    time.monotonic() + self.RETRY_SECONDS,
                )
        with self._lock:
            # One memory per storage (so per app: a process that makes several, as the
            # tests do, never counts one app's failures against another's).
            if self._memory is None or self._memory_for is not primary.storage:
                self._memory = type(primary)(MemoryStorage())
                self._memory_for = primary.storage
        return getattr(self._memory, name)(*args, **kwargs)


counted_limits = CountedLimits()


def configure_sqlite(app) -> None:
    """Writers queue for SQLite's write lock (busy timeout) instead of failing at once.

    No pre-ping: a file cannot drop the connection, and the ping cost a query per request.
    """
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {"timeout": 30, **options.get("connect_args", {})}
        options["pool_pre_ping"] = False
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
        _create_private(app.config["SQLALCHEMY_DATABASE_URI"])


def _create_private(url: str) -> None:
    """The database file holds password hashes: create it readable by its owner only."""
    database = sa.make_url(url).database
    if database and database != ":memory:" and not os.path.exists(database):
        # It may be created meanwhile by another worker, or sit where we cannot write.
        with contextlib.suppress(OSError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@sa.event.listens_for(sa.Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL: readers never wait for the writer; NORMAL sync is safe with WAL and faster. A
    16 MB page cache (SQLite's default is 2 MB) keeps the token page's count indexes of
    100,000 tokens in memory between requests (issue 18)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-16000")
        cursor.close()
