"""GET /healthz (SPEC §3): 200 `{"status": "ok"}` when the database answers, 503 when not.

A load balancer asks many times a second and needs nothing of Flask's: no session, user,
CSRF, limiter, template or link. So GET and HEAD of /healthz are answered by this WSGI
layer, outside Flask, from one `SELECT 1` on a pooled driver connection (issue 17); the
Flask route (blueprints/main) answers the same way for anything that reaches it.

SQLite: the app's own engine (a file, no pre-ping). A database server: a small pool of
its own, in autocommit and without pre-ping, so a probe is one round trip (a checkout from
the app's pool pings, begins and rolls back: three), sent as a simple query (`_ping`). A
pooled connection the server has closed is dropped and the probe tried once more, afresh.
"""

from __future__ import annotations

import json
import weakref

import sqlalchemy as sa
from flask import Flask

PATH = "/healthz"
EXTENSION_KEY = "keysmith_health"
_OK = json.dumps({"status": "ok"}).encode() + b"\n"
_DOWN = json.dumps({"status": "unavailable"}).encode() + b"\n"


class HealthCheck:
    """WSGI middleware: answers GET/HEAD /healthz itself, passes everything else on."""

    def __init__(self, wsgi_app, app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app
        self._engine: sa.Engine | None = None
        # The security headers and X-Request-Id come from blueprints/answer_headers.py.
        self.headers = [("Content-Type", "application/json")]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            return self.wsgi_app(environ, start_response)
        ok = self.database_answers()
        body = _OK if ok else _DOWN
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        if not ok:
            headers.append(("Retry-After", "5"))
        start_response("200 OK" if ok else "503 SERVICE UNAVAILABLE", headers)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    def database_answers(self) -> bool:
        try:
            engine = self.engine()
        except Exception:
            return False
        for attempt in (1, 2):
            connection = None
            try:
                connection = engine.raw_connection()
                _ping(connection)
            except Exception:
                if connection is not None:
                    connection.invalidate()  # never handed out again
                if attempt == 1:
                    continue
                return False
            finally:
                if connection is not None:
                    connection.close()  # back to the pool (or gone, if invalidated)
            return True
        return False

    def engine(self) -> sa.Engine:
        if self._engine is None:
            from extensions import db

            with self.app.app_context():
                engine = db.engine
                if engine.dialect.name != "sqlite":
                    options = self.app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
                    engine = sa.create_engine(
                        engine.url,
                        isolation_level="AUTOCOMMIT",
                        # Autocommit and nothing but SELECT 1: no transaction to roll back.
                        pool_reset_on_return=None,
                        pool_size=1,
                        max_overflow=7,
                        pool_timeout=2,
                        connect_args=options.get("connect_args", {}),
                    )
                    # Its connections close with the app (or the process), not at random.
                    weakref.finalize(self.app, engine.dispose)
            self._engine = engine
        return self._engine


def _ping(connection) -> None:
    """One `SELECT 1`; raises if the database does not answer it.

    psycopg 3 sends it as libpq's simple query, one message each way (its cursors use the
    extended protocol: parse, bind, describe, execute, sync), at half the cost. The driver's
    own state is untouched: in autocommit, a SELECT leaves the connection idle."""
    pgconn = getattr(connection.driver_connection, "pgconn", None)
    if pgconn is not None:
        from psycopg import pq

        result = pgconn.exec_(b"SELECT 1")
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise RuntimeError(f"SELECT 1 answered {pq.ExecStatus(result.status).name}")
        return
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchone()
    cursor.close()


def health_check(app: Flask) -> HealthCheck:
    return app.extensions[EXTENSION_KEY]


def init_app(app: Flask) -> None:
    """Outermost: a probe passes through nothing else."""
    check = app.extensions[EXTENSION_KEY] = HealthCheck(app.wsgi_app, app)
    app.wsgi_app = check  # type: ignore[method-assign]
