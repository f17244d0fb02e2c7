"""Server-side sessions (SPEC §1): each signed-in browser is a row that signing out deletes.

The browser's cookie holds a random id (256 bits); the database holds only its SHA-256, so
a copy of the table opens nothing. A session ends when it is signed out, ended from
Settings → Account, ended by a password change or reset, after IDLE without a request, or
MAX_AGE after sign-in, whichever comes first.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from models import User, UserSession, utcnow
from services.errors import NotFound

IDLE = timedelta(days=14)
MAX_AGE = timedelta(days=30)
# last_seen_at moves at most this often: a read-only page writes nothing most of the time.
TOUCH_EVERY = timedelta(minutes=1)
ID_BYTES = 32


def hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def looks_like_id(value: str | None) -> bool:
    """A cookie value that could be one of our ids (token_urlsafe(32) is 43 characters)."""
    return bool(value) and len(value) == 43 and value.replace("-", "").replace("_", "").isalnum()


def start(user: User, *, ip: str | None, user_agent: str | None) -> tuple[UserSession, str]:
    """A new session for `user`; returns the row and the id for the cookie (never stored)."""
    session_id = secrets.token_urlsafe(ID_BYTES)
    now = utcnow()
    record = UserSession(
        user_id=user.id,
        id_hash=hash_id(session_id),
        data="{}",
        created_at=now,
        last_seen_at=now,
        authenticated_at=now,
        ip=ip,
        user_agent=(user_agent or "")[:400] or None,
    )
    db.session.add(record)
    # Old sessions that timed out go when their person signs in again.
    db.session.execute(sa.delete(UserSession).where(UserSession.user_id == user.id, _expired()))
    db.session.flush()
    return record, session_id


def _expired(now: datetime | None = None):
    now = now or utcnow()
    return sa.or_(UserSession.last_seen_at < now - IDLE, UserSession.created_at < now - MAX_AGE)


def is_expired(record: UserSession, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return record.last_seen_at < now - IDLE or record.created_at < now - MAX_AGE


def find(session_id: str, now: datetime | None = None) -> UserSession | None:
    """The live session with this id, or None (unknown, ended or timed out)."""
    if not looks_like_id(session_id):
        return None
    record = db.session.scalar(
        sa.select(UserSession).where(UserSession.id_hash == hash_id(session_id))
    )
    if record is None or is_expired(record, now):
        return None
    return record


def due_for_touch(record: UserSession, now: datetime | None = None) -> bool:
    return record.last_seen_at <= (now or utcnow()) - TOUCH_EVERY


def save(
    session_pk: int,
    *,
    data: str | None,
    touch: bool,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """Write what changed of a session: its data, and (at most once a minute) when and from
    where it was last used."""
    values: dict = {}
    if data is not None:
        values["data"] = data
    if touch:
        values.update(last_seen_at=utcnow(), ip=ip, user_agent=(user_agent or "")[:400] or None)
    if values:
        db.session.execute(
            sa.update(UserSession).where(UserSession.id == session_pk).values(**values)
        )


def sessions_of(user: User) -> list[UserSession]:
    """The person's live sessions, most recently used first."""
    return list(
        db.session.scalars(
            sa.select(UserSession)
            .where(UserSession.user_id == user.id, sa.not_(_expired()))
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
        )
    )


def get_session_of_or_404(user: User, session_pk: int) -> UserSession:
    record = db.session.scalar(
        sa.select(UserSession).where(UserSession.id == session_pk, UserSession.user_id == user.id)
    )
    if record is None:
        raise NotFound("No such session.")
    return record


def end(session_pk: int) -> None:
    db.session.execute(sa.delete(UserSession).where(UserSession.id == session_pk))


def end_all_of(user: User, *, except_pk: int | None = None) -> int:
    """End every session of the person (but `except_pk`); returns how many ended."""
    query = sa.delete(UserSession).where(UserSession.user_id == user.id)
    if except_pk is not None:
        query = query.where(UserSession.id != except_pk)
    return db.session.execute(query).rowcount or 0


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str | None) -> str:
    """ "Firefox on Linux", as a person recognises their browser (the full string is kept)."""
    text = user_agent or ""
    browser = next((name for marker, name in _BROWSERS if marker in text), None)
    system = next((name for marker, name in _SYSTEMS if marker in text), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def mark_authenticated(session_pk: int) -> None:
    """The person gave their password again in this session (sudo mode)."""
    db.session.execute(
        sa.update(UserSession).where(UserSession.id == session_pk).values(authenticated_at=utcnow())
    )
