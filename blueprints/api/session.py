"""The JSON API never reads nor writes the session cookie (SPEC §4: session cookies do not
authenticate it, and the secret is never put in a cookie or the session).

Every /api/ request gets an empty session of its own that is never saved: a cookie sent
with it is not even decoded, and whatever touches the session there can never answer with
Set-Cookie. So do /healthz and static files, which have no use for one either (Flask-Login
looks at the session after every request: it would read a signed-in browser's row).
Other requests use the app's usual session.
"""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SessionInterface
from flask.wrappers import Response

API_PREFIX = "/api/"
SESSIONLESS_PATHS = (API_PREFIX, "/healthz", "/static/")


class ApiSession(SecureCookieSession):
    """The throw-away session of an API request."""


class ApiSessionInterface(SessionInterface):
    def __init__(self, wrapped: SessionInterface) -> None:
        self.wrapped = wrapped

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(SESSIONLESS_PATHS):
            return ApiSession()
        return self.wrapped.open_session(app, request)

    def save_session(self, app: Flask, session: SecureCookieSession, response: Response) -> None:
        if isinstance(session, ApiSession):
            return
        self.wrapped.save_session(app, session, response)

    def __getattr__(self, name: str):
        # Everything else (cookie name, serializer, ...) is the wrapped interface's.
        return getattr(self.wrapped, name)


def init_app(app: Flask) -> None:
    if not isinstance(app.session_interface, ApiSessionInterface):
        app.session_interface = ApiSessionInterface(app.session_interface)
