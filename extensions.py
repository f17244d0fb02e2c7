"""Extensions created bare here and bound to the app in create_app()."""

import contextlib
import os
import sqlite3
import time

import sqlalchemy as sa
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from limits import RateLimitItem
from limits.util import WindowStats

from models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# No default limits: the JSON API sets its per-token limits, sign-in its own throttle.
limiter = Limiter(key_func=get_remote_address)


def init_limiter(app) -> None:
    """Bind Flask-Limiter. Its per-request hooks are the console's: blueprints/hook_scopes.py
    skips them outright for the API, /healthz and static files (filtered only by a request
    filter, they cost a whoami more than a bare Flask view does in all, issue 17). Sign-in
    counts through `counted_limits`, which uses only its storage."""
    limiter.init_app(app)


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
    """hit / refund / window stats of the limits we count by hand (the sign-in throttle, the
    API's ip_denied audit bound), on the app's own counters (services/rate_limits.py), in
    windows that start at their first hit, as Flask-Limiter's fixed window did.

    Redis when the limiter's storage is Redis (one round trip, REDIS_TIMEOUT_SECONDS), else a
    dictionary in this worker's memory; while Redis is slow or gone, that memory, switched to
    thread-safely for a few seconds. No timer thread (the `limits` in-memory storage's expiry
    thread logged KeyError tracebacks under load, issue 16), and never a 500.
    """

    NAMESPACE = "counted"

    def hit(self, item: RateLimitItem, *identifiers: str, now: float | None = None) -> bool:
        return self.decide(item, *identifiers, now=now).allowed

    def decide(self, item: RateLimitItem, *identifiers: str, now: float | None = None):
        """Count one hit; the decision (allowed, remaining, reset) after it."""
        return self._count(item, identifiers, 1, now)

    def refund(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Give one hit back while its window runs, never below zero (a window that ended
        meanwhile is not touched, and no new one starts)."""
        self._count(item, identifiers, -1, None)
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        decision = self._count(item, identifiers, 0, None)
        return WindowStats(decision.reset, decision.remaining)

    def _count(self, item: RateLimitItem, identifiers, amount: int, now: float | None):
        from services.rate_limits import Window, rate_limits

        window = Window(item.amount, int(item.get_expiry()))
        at = time.time() if now is None else now
        return rate_limits().count(self.NAMESPACE, "/".join(identifiers), window, amount, now=at)


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
