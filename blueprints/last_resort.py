"""What runs after Flask's error handlers can no longer help (issue 16, SPEC §4).

- The database session is closed at teardown without raising: when the database ended the
  connection (a fast shutdown, a failover), rolling back on it fails, and that failure
  escaped Flask as gunicorn's bare HTML 500, in place of an answer already made (maybe a
  committed create with its secret). The session is thrown away instead, its connection
  invalidated, and one line is logged.
- Anything else that escapes the app is answered SPEC §4's JSON error on /api/ and a plain
  HTML page elsewhere: 503 for a database error, 500 otherwise; never gunicorn's page, and
  never a traceback in the log (one line naming the error).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError

from extensions import db

log = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
_RECONNECT_PENDING = (
    "8s2b"  # SQLAlchemy's "Can't reconnect until invalid transaction is rolled back"
)


def is_database_outage(error: BaseException | None) -> bool:
    """The database is gone or ended the connection (not a refused value, not our bug)."""
    if isinstance(error, DATABASE_ERRORS):
        return True
    if isinstance(error, PendingRollbackError) and error.code == _RECONNECT_PENDING:
        return True  # a statement after the connection died (its error handled elsewhere)
    return isinstance(error, DBAPIError) and error.connection_invalidated


def close_session(_exc: BaseException | None = None) -> None:
    """Flask-SQLAlchemy's `session.remove()`, but a dead connection never raises from it."""
    try:
        db.session.remove()
    except Exception as error:
        log.warning("Database session closed on a broken connection: %s", type(error).__name__)
        with contextlib.suppress(Exception):  # already logged; the session goes below anyway
            db.session.registry().invalidate()  # its connections are not given back to the pool
        db.session.registry.clear()


_JSON_BODIES = {
    503: ("unavailable", "The service is unavailable; retry shortly."),
    500: ("internal_error", "An unexpected error happened."),
}
_HTML = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>{title} · Keysmith</title>"
    "<main><h1>{title}</h1><p>{message}</p></main></html>"
)
_HTML_TEXTS = {
    503: (
        "Unavailable",
        "Keysmith cannot reach its database just now. What you asked for may or may not have "
        "been saved: reload the page in a moment to see, then try again if needed.",
    ),
    500: ("Something went wrong", "An unexpected error happened; please try again."),
}


def last_resort_answer(environ: dict[str, Any], error: BaseException) -> tuple[str, list, bytes]:
    status = 503 if is_database_outage(error) else 500
    if environ.get("PATH_INFO", "").startswith("/api/"):
        code, message = _JSON_BODIES[status]
        body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
        content_type = "application/json"
    else:
        title, message = _HTML_TEXTS[status]
        body = _HTML.format(title=title, message=message).encode()
        content_type = "text/html; charset=utf-8"
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if status == 503:
        headers.append(("Retry-After", "5"))
    reason = "Service Unavailable" if status == 503 else "Internal Server Error"
    return f"{status} {reason}", headers, body


class NeverBare:
    """WSGI middleware: an exception escaping the app becomes our own answer (see above)."""

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        try:
            return self.wsgi_app(environ, start_response)
        except Exception as error:
            log.error(
                "Answered %s after an error outside the app's handlers: %s",
                "503" if is_database_outage(error) else "500",
                type(error).__name__,
            )
            status, headers, body = last_resort_answer(environ, error)
            start_response(status, headers, sys.exc_info())
            return [body]


def init_app(app: Flask) -> None:
    # In place of Flask-SQLAlchemy's own teardown, which is the same `remove()` but raising:
    # one removal per request, not two (the second found nothing, at a cost on every answer).
    # Last in the list, so it runs first (teardowns run in reverse): a later hook that raises
    # cannot keep the session and its connection from being given back.
    funcs = app.teardown_appcontext_funcs
    if db._teardown_session in funcs:
        funcs.remove(db._teardown_session)
    if close_session not in funcs:
        app.teardown_appcontext(close_session)
    if not isinstance(app.wsgi_app, NeverBare):
        app.wsgi_app = NeverBare(app.wsgi_app)  # type: ignore[method-assign]
