"""Flask's session, kept on the server once someone signs in (SPEC §1).

- A visitor who has not signed in keeps Flask's signed cookie (`session`): a CSRF token and
  flash messages, nothing that authenticates.
- Signing in starts a server-side session (services/sessions.py): the `ks_session` cookie
  then carries only its random id, and every value of the session lives in its row. The
  row is read on the first use of the session in a request (a static file or an API call
  never reads it) and written only when something in it changed, or at most once a minute
  to note when and from where it was last used.
- Deleting the row ends the session for good: a copy of the old cookie opens nothing.

Flask-Login's user loader (blueprints/web.py) accepts only the user of the row, so neither
an old signed cookie holding `_user_id` nor a remember-me cookie signs anyone in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from flask import Flask, Request, g
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Response

from blueprints.last_resort import is_database_outage
from extensions import db
from models import User, UserSession
from services import sessions

COOKIE = "ks_session"
_serializer = TaggedJSONSerializer()


class KeysmithSession(SessionMixin):
    """The session of a page request: a signed-in person's is loaded from its row lazily."""

    def __init__(self, data: dict | None = None, *, session_id: str | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})
        self._session_id = session_id
        self._loaded = session_id is None
        self.record_id: int | None = None
        self.user_id: int | None = None
        self.authenticated_at = None
        self.new_id: str | None = None  # set at sign-in: the cookie to send
        self.stale_cookie = False  # the browser holds an id that opens nothing
        self.ended = False
        self.touch = False
        self.modified = False
        self.accessed = False
        self.new = False

    # --------------------------------------------------------------- loading

    def _load(self) -> None:
        self.accessed = True
        if self._loaded:
            return
        self._loaded = True
        record = sessions.find(self._session_id)
        if record is None:
            self.stale_cookie = True
            return
        self._attach(record)
        self._data = _serializer.loads(record.data or "{}")
        self.touch = sessions.due_for_touch(record)

    def _attach(self, record: UserSession) -> None:
        self.record_id, self.user_id = record.id, record.user_id
        self.authenticated_at = record.authenticated_at

    @property
    def signed_in(self) -> bool:
        self._load()
        return self.record_id is not None and not self.ended

    def begin(self, record: UserSession, session_id: str) -> None:
        """Become the new session `record` (sign-in): nothing from before carries over."""
        self._load()
        self._data = {}
        self._attach(record)
        self.new_id, self.ended, self.stale_cookie = session_id, False, False
        self.modified = True

    def mark_ended(self) -> None:
        """The row was deleted (sign-out): forget it; what is left goes to a signed cookie."""
        self._load()
        self.ended = True
        self.modified = True

    # --------------------------------------------------------------- mapping

    def __getitem__(self, key: str) -> Any:
        self._load()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        self._data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        self._load()
        del self._data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._data)

    def __len__(self) -> int:
        self._load()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._load()
        return key in self._data

    def clear(self) -> None:
        self._load()
        if self._data:
            self.modified = True
        self._data.clear()


class ServerSessionInterface(SecureCookieSessionInterface):
    """Signed cookie before sign-in, a server-side row after (see the module's docstring)."""

    session_class = SecureCookieSession

    def open_session(self, app: Flask, request: Request) -> KeysmithSession | None:
        anonymous = super().open_session(app, request)
        if anonymous is None:  # no SECRET_KEY
            return None
        session_id = request.cookies.get(COOKIE)
        return KeysmithSession(dict(anonymous), session_id=session_id or None)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, KeysmithSession):
            return super().save_session(app, session, response)
        if session.accessed:
            response.vary.add("Cookie")
        if session.record_id is not None:
            self._save_server_side(app, session, response)
        else:
            self._save_signed_cookie(app, session, response, clear_id=session.stale_cookie)

    def _save_server_side(self, app: Flask, session: KeysmithSession, response: Response) -> None:
        from flask import request

        if session.ended or "_user_id" not in session._data:
            # Signed out (or Flask-Login's session protection dropped the user): the row goes,
            # and what is left (the "signed out" message) travels in a signed cookie.
            _discard_uncommitted()
            sessions.end(session.record_id)
            db.session.commit()
            leftover = {k: v for k, v in session._data.items() if k == "_flashes"}
            self._save_signed_cookie(
                app, session, response, clear_id=True, data=leftover, force=True
            )
            return
        if session.modified or session.touch:
            try:
                _discard_uncommitted()
                sessions.save(
                    session.record_id,
                    data=_serializer.dumps(session._data) if session.modified else None,
                    touch=session.touch or session.new_id is not None,
                    ip=request.remote_addr,
                    user_agent=request.user_agent.string,
                )
                db.session.commit()
            except Exception as error:
                # A note of when it was last used, or the session of an answer that already
                # committed (a new secret): not worth failing the answer for (issue 16).
                if not is_database_outage(error) or (
                    session.modified and not g.get("answer_committed")
                ):
                    raise
                logging.getLogger(__name__).warning(
                    "Could not save the session: %s", type(error).__name__
                )
                with contextlib.suppress(Exception):
                    db.session.rollback()
        if session.new_id is not None:
            response.set_cookie(
                COOKIE,
                session.new_id,
                httponly=True,
                secure=self.get_cookie_secure(app),
                samesite=self.get_cookie_samesite(app),
                path=self.get_cookie_path(app),
                domain=self.get_cookie_domain(app),
            )
            # The signed cookie of before sign-in has nothing more to say.
            if self.get_cookie_name(app) in request.cookies:
                self._delete(app, response, self.get_cookie_name(app))

    def _save_signed_cookie(
        self,
        app: Flask,
        session: KeysmithSession,
        response: Response,
        *,
        clear_id: bool,
        data: dict | None = None,
        force: bool = False,
    ) -> None:
        if clear_id:
            self._delete(app, response, COOKIE)
        signed = SecureCookieSession(session._data if data is None else data)
        signed.modified = session.modified or force
        signed.accessed = session.accessed
        super().save_session(app, signed, response)

    def _delete(self, app: Flask, response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path=self.get_cookie_path(app),
            domain=self.get_cookie_domain(app),
            secure=self.get_cookie_secure(app),
            httponly=True,
            samesite=self.get_cookie_samesite(app),
        )


def _discard_uncommitted() -> None:
    """Whatever a view left uncommitted is rolled back at teardown anyway; roll it back now,
    so that writing the session's row commits nothing else."""
    db.session.rollback()


def signed_in_user_id(session: SessionMixin) -> int | None:
    """The user of this request's server-side session, if it has a live one."""
    if isinstance(session, KeysmithSession) and session.signed_in:
        return session.user_id
    return None


def signed_in_session_pk(session: SessionMixin) -> int | None:
    """The row id of this request's server-side session, if it has a live one."""
    if isinstance(session, KeysmithSession) and session.signed_in:
        return session.record_id
    return None


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: only the person whose session row this browser holds."""
    from flask import session

    owner = signed_in_user_id(session)
    if owner is None or str(owner) != user_id:
        return None
    return db.session.get(User, owner)


def init_app(app: Flask) -> None:
    app.session_interface = ServerSessionInterface()
