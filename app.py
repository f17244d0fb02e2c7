"""The app factory: `flask --app app ...` and `gunicorn 'app:create_app()'`."""

from __future__ import annotations

import io
import logging
import os
import weakref
from typing import Any

from flask import Flask, abort, current_app, request

import cli
from blueprints import answer_headers, health, hook_scopes, last_resort, origin
from config import Config
from extensions import (
    configure_sqlite,
    csrf,
    db,
    init_limiter,
    login_manager,
    migrate,
    redis_options,
)
from services.log_redaction import RedactSecrets


class Keysmith(Flask):
    """Flask, with `ensure_sync` remembered per function (issue 17).

    Flask asks `ensure_sync` for every hook and view of every request, and each answer runs
    `inspect.iscoroutinefunction` (17 times a whoami: a tenth of its time in Python). Views
    and hooks do not change from sync to async once registered, so the answer is kept, for
    as long as the function lives (weakly: an `after_this_request` closure is forgotten with
    its request)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The functions known to be sync (a value that held the function would keep it alive).
        self._known_sync: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    def ensure_sync(self, func: Any) -> Any:
        try:
            if func in self._known_sync:
                return func
        except TypeError:  # neither hashable nor weakly referable: asked afresh each time
            return super().ensure_sync(func)
        sync = super().ensure_sync(func)
        if sync is func:
            self._known_sync[func] = True
        return sync


def create_app(
    test_config: dict[str, Any] | None = None, instance_path: str | None = None
) -> Flask:
    app = Keysmith(__name__, instance_relative_config=True, instance_path=instance_path)
    os.makedirs(app.instance_path, exist_ok=True)  # the embedded SQLite database lives here
    app.config.from_mapping(Config(app.instance_path).as_dict())
    if test_config:
        app.config.update(test_config)
    if app.config.get("REDIS_URL") and "RATELIMIT_STORAGE_URI" not in (test_config or {}):
        app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"]
    if app.config["RATELIMIT_STORAGE_URI"].startswith(("redis://", "rediss://")):
        # Flask-Limiter hands these to its Redis client: without them a stalled Redis
        # holds every request (and the sign-in throttle) until it answers.
        options = {**redis_options(app.config), **app.config.get("RATELIMIT_STORAGE_OPTIONS", {})}
        app.config["RATELIMIT_STORAGE_OPTIONS"] = options

    origin.init_app(app)  # BASE_URL, trusted hosts, and what proxies are believed

    configure_sqlite(app)
    db.init_app(app)
    with app.app_context():
        # An app that goes away (tests make hundreds) closes its pooled connections itself,
        # rather than leaving them to the garbage collector, which only warns.
        weakref.finalize(app, db.engine.dispose)
    migrate.init_app(app, db, directory=str(app.root_path + "/migrations"))
    # Order matters: the limiter counts (and heads) every request, even an oversized one;
    # the size check comes before CSRF, which reads the form.
    init_limiter(app)
    app.before_request(_refuse_oversized_body)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    # Sessions live on the server and are ended from Settings → Account (blueprints/
    # server_session.py); binding them to the address would sign out a laptop that changes
    # networks, and let anyone replaying a stolen cookie elsewhere end the owner's session.
    login_manager.session_protection = None

    from blueprints import register_blueprints
    from services import token_cache, usage

    register_blueprints(app)
    cli.init_app(app)
    token_cache.init_app(app)
    usage.init_app(app)
    health.init_app(app)  # before Flask: a probe passes through nothing but last_resort
    # Secrets in a URL (tokens, invite and reset links) never reach a log line.
    for logger in (logging.getLogger("werkzeug"), app.logger):
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    # Every app-wide hook is registered: the console's are skipped as one for the API.
    hook_scopes.init_app(app)
    # Last: a dead database connection at teardown, or anything else that escapes Flask's
    # handlers, is our JSON or HTML answer, never gunicorn's bare page (issue 16).
    last_resort.init_app(app)
    # Outermost of all, even health and last_resort: every answer carries X-Request-Id and
    # the security headers.
    answer_headers.init_app(app)
    return app


def _refuse_oversized_body() -> None:
    """413 for any body over MAX_CONTENT_LENGTH, whether or not the view reads it.

    A declared length is checked as is. A chunked body (no Content-Length) is read up to
    one byte past the limit: over it, 413; within it, the view reads it from memory.
    """
    environ = request.environ
    if not environ.get("CONTENT_LENGTH") and not environ.get("HTTP_TRANSFER_ENCODING"):
        return  # neither length nor chunks: a request without a body (RFC 9112 §6.3)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is None:
        return
    length = request.content_length
    if length is not None:
        if length > limit:
            abort(413)
        return
    if environ.get("wsgi.input_terminated"):
        body, stream = bytearray(), environ["wsgi.input"]
        while len(body) <= limit:
            try:
                chunk = stream.read(limit + 1 - len(body))
            except Exception:  # a malformed chunked body (each server has its own error)
                abort(400)
            if not chunk:
                break
            body.extend(chunk)
        if len(body) > limit:
            abort(413)
        environ["wsgi.input"] = io.BytesIO(bytes(body))
        environ["CONTENT_LENGTH"] = str(len(body))
