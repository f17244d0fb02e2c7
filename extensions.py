"""Extensions created bare here and bound to the app in create_app()."""

import contextlib
import os
import sqlite3

import sqlalchemy as sa
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# No default limits: the JSON API sets its per-token limits, sign-in its own throttle.
limiter = Limiter(key_func=get_remote_address)


def limit_key(*parts: str) -> list[str]:
    """The identifiers of a limit counted by hand (limiter.limiter.hit), behind the same
    RATELIMIT_KEY_PREFIX as Flask-Limiter's own keys, so deployments sharing a Redis never
    count each other's requests or sign-in failures."""
    from flask import current_app

    # The prefix Flask-Limiter put on its own keys (fixed at its first init_app).
    prefix = getattr(limiter, "_key_prefix", None) or current_app.config.get("RATELIMIT_KEY_PREFIX")
    return [prefix, *parts] if prefix else list(parts)


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
    """WAL: readers never wait for the writer; NORMAL sync is safe with WAL and faster."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
