"""The verification cache: immutable token snapshots, per worker, at most a few seconds old.

The hot path (`services.tokens.verify`) reads a token by id. A small in-process LRU
keeps what verification needs as a frozen `VerifiedToken`, never an ORM object, for
at most `TOKEN_CACHE_SECONDS` (SPEC §2: ≤ 5 s). A change that may alter a token's
verification (revoke, suspend, resume, rotate, update, a bulk UPDATE of tokens) is applied
to this worker's cache right after the transaction commits, and announced to every other
worker (SPEC §2: within 100 ms with Redis, 1 s on one host without):

- with `REDIS_URL`, as a notice on a pub/sub channel (`<RATELIMIT_KEY_PREFIX>:token-changes`)
  that one listener thread per worker process applies as it arrives (milliseconds);
- always, by rewriting a small change-counter file that the workers of this host read at
  most every `TOKEN_CACHE_CHECK_SECONDS` (0.5 s) whenever the listener is not hearing
  Redis (no Redis, or Redis silent for 250 ms): a revoked token is refused within ~0.5 s.

Beside each token, the API needs its organization and its creator's membership *now*
(a token never does more than its creator may do). Those rows are cached the same way,
per (organization, creator), as frozen snapshots that read like the rows (`TokenAccess`),
under the same lifetime and the same announcements. Any change to an organization or
a membership made through the ORM (a flush, or a bulk UPDATE/DELETE statement) forgets
that organization's entries at once on this worker and again after the commit, when
other workers are told too. A raw SQL change bypasses this; the lifetime still bounds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import ORMExecuteState, Session

from extensions import db
from models import ROLE_RANK, ApiToken, Membership, Organization, User
from models.token import TokenState

log = logging.getLogger(__name__)

EXTENSION_KEY = "keysmith_token_cache"
PENDING_KEY = "keysmith_token_invalidations"
ACCESS_PENDING_KEY = "keysmith_access_invalidations"
DEFAULT_MAX_ENTRIES = 10_000
# How often a worker reads the change counter (without Redis, or while it is silent).
DEFAULT_CHECK_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class VerifiedToken(TokenState):
    """What verification knows of a token: plain values, safe to share between requests.

    Reads like an `ApiToken` for everything the API needs after authentication
    (id, organization_id, environment, role, scopes, effective_scopes, status, ...);
    `organization` and `created_by_user` are fetched from the request's session.
    """

    id: str
    organization_id: int
    environment: str
    name: str
    role: str
    scopes: tuple[str, ...]
    type: str
    active: bool
    prefix: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_ip: str | None
    revoked_at: datetime | None
    created_by_user_id: int | None
    created_by_token_id: str | None
    created_by_label: str
    rate_limit: str | None
    allowed_ips: tuple[str, ...] | None
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires_at: datetime | None

    @property
    def organization(self) -> Organization:
        """The token's organization, from the current session (its identity map)."""
        return db.session.get_one(Organization, self.organization_id)

    @property
    def created_by_user(self) -> User | None:
        if self.created_by_user_id is None:
            return None
        return db.session.get(User, self.created_by_user_id)

    def __repr__(self) -> str:  # never the hashes
        return f"<VerifiedToken {self.id}>"


_FIELDS = tuple(f.name for f in fields(VerifiedToken))
_TABLE = ApiToken.__table__
# Core, not ORM: built once, its compiled form cached, rows straight into the snapshot.
_SELECT = sa.select(*(_TABLE.c[name] for name in _FIELDS)).where(
    _TABLE.c.id == sa.bindparam("token_id")
)


def load_snapshot(token_id: str) -> VerifiedToken | None:
    """One indexed look-up by primary key, straight into a snapshot (no ORM identity)."""
    row = db.session.connection().execute(_SELECT, {"token_id": token_id}).first()
    if row is None:
        return None
    values = dict(zip(_FIELDS, row, strict=True))
    values["scopes"] = tuple(values["scopes"] or ())
    if values["allowed_ips"] is not None:
        values["allowed_ips"] = tuple(values["allowed_ips"])
    return VerifiedToken(**values)


class _ReadsLikeRow:
    """Anything a snapshot does not hold (a relationship, a later column) is read from
    the ORM row of the current session; a snapshot itself is never written."""

    __slots__ = ()
    _model: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(db.session.get_one(self._model, self.id), name)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class OrganizationSnapshot(_ReadsLikeRow):
    """An organization and its key policy as verification saw it: reads like an Organization."""

    _model = Organization

    id: int
    name: str
    created_at: datetime
    max_live_tokens: int
    max_lifetime_days: int
    allow_never_expires: bool
    rate_limit: str
    leak_alert_at: datetime | None

    def __repr__(self) -> str:
        return f"<OrganizationSnapshot {self.id}>"


@dataclass(frozen=True, slots=True)
class MembershipSnapshot(_ReadsLikeRow):
    """A token creator's membership as verification saw it: reads like a Membership."""

    _model = Membership

    id: int
    organization_id: int
    user_id: int
    role: str
    created_at: datetime

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.role]

    @property
    def user(self) -> User:
        return db.session.get_one(User, self.user_id)

    @property
    def organization(self) -> Organization:
        return db.session.get_one(Organization, self.organization_id)

    def __repr__(self) -> str:
        return f"<MembershipSnapshot {self.id}>"


@dataclass(frozen=True, slots=True)
class TokenAccess:
    """A token's organization and its creator's membership in it (None: no creating
    member, or the member has left)."""

    organization: OrganizationSnapshot
    membership: MembershipSnapshot | None


_ORG_FIELDS = tuple(f.name for f in fields(OrganizationSnapshot))
_MEMBER_FIELDS = tuple(f.name for f in fields(MembershipSnapshot))
_ORG_TABLE, _MEMBER_TABLE = Organization.__table__, Membership.__table__
_ACCESS_SELECT = (
    sa.select(
        *(_ORG_TABLE.c[name] for name in _ORG_FIELDS),
        *(_MEMBER_TABLE.c[name] for name in _MEMBER_FIELDS),
    )
    .select_from(
        _ORG_TABLE.outerjoin(
            _MEMBER_TABLE,
            sa.and_(
                _MEMBER_TABLE.c.organization_id == _ORG_TABLE.c.id,
                _MEMBER_TABLE.c.user_id == sa.bindparam("user_id"),
            ),
        )
    )
    .where(_ORG_TABLE.c.id == sa.bindparam("organization_id"))
)


def load_access(organization_id: int, user_id: int | None) -> TokenAccess | None:
    """One look-up by primary key: the organization, and the user's membership in it."""
    row = (
        db.session.connection()
        .execute(_ACCESS_SELECT, {"organization_id": organization_id, "user_id": user_id})
        .first()
    )
    if row is None:
        return None
    split = len(_ORG_FIELDS)
    organization = OrganizationSnapshot(*row[:split])
    # The membership's id is NULL when the outer join found no membership.
    membership = MembershipSnapshot(*row[split:]) if row[split] is not None else None
    return TokenAccess(organization, membership)


class TokenCache:
    """A bounded, thread-safe LRU of snapshots, each kept at most `ttl` seconds."""

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every invalidation, so a load that raced one is not cached.
        self.generation = 0

    def get(self, token_id: Any, now: float | None = None) -> Any:
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(token_id)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[token_id]
                return None
            self._entries.move_to_end(token_id)
            return entry[1]

    def put(
        self, snapshot: Any, generation: int, now: float | None = None, *, key: Any = None
    ) -> None:
        """Keep `snapshot` under `key` (default: its id), unless an invalidation came first."""
        if self.ttl <= 0:
            return
        now = time.monotonic() if now is None else now
        key = snapshot.id if key is None else key
        with self._lock:
            if generation != self.generation:
                return  # an invalidation happened while this was being loaded
            self._entries[key] = (now + self.ttl, snapshot)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, token_ids: Any) -> None:
        with self._lock:
            self.generation += 1
            for token_id in token_ids:
                self._entries.pop(token_id, None)

    def invalidate_where(self, stale: Any) -> None:
        """Forget every entry whose key `stale(key)` says is out of date."""
        with self._lock:
            self.generation += 1
            for key in [key for key in self._entries if stale(key)]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_NEVER = object()


class ChangeCounter:
    """A small file every worker on this host shares, rewritten after each committed change
    and read by each worker at most every `check_seconds` (the path without Redis, or while
    Redis is unreachable): another worker forgets its cache within about that long.

    Not SQLite's `PRAGMA data_version`: usage flushes write the database too, and would
    empty every cache once a minute per worker for nothing.
    """

    def __init__(self, path: str, check_seconds: float) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self._seen: bytes | None | object = _NEVER
        self._next_check = 0.0
        self._lock = threading.Lock()

    def bump(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.pwrite(fd, secrets.token_hex(16).encode(), 0)  # a new value, always
            finally:
                os.close(fd)
        except OSError as error:  # the cache lifetime still bounds staleness
            log.warning("Could not note a token change in %s: %s", self.path, _name(error))

    def changed_elsewhere(self, now: float) -> bool:
        """True when the file changed since the last look (looked at most every N s)."""
        if now < self._next_check:
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + self.check_seconds
            try:
                with open(self.path, "rb") as file:
                    value: bytes | None = file.read(64)
            except FileNotFoundError:
                value = None  # nothing changed since the file's directory was made
            except OSError as error:
                log.warning("Could not read token changes from %s: %s", self.path, _name(error))
                return False
            # The first look only learns the value: this worker's cache started after it.
            changed = self._seen is not _NEVER and value != self._seen
            self._seen = value
            return changed


def changes_file(app: Flask) -> str:
    """Beside the SQLite database (every worker that opens it shares it, whatever its
    instance folder), else in the instance folder; TOKEN_CHANGES_FILE (app config) says
    elsewhere."""
    if app.config.get("TOKEN_CHANGES_FILE"):
        return app.config["TOKEN_CHANGES_FILE"]
    url = sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return f"{url.database}-token-changes"
    return os.path.join(app.instance_path, "token-changes")


# -------------------------------------------------------------- notices through Redis

PING_SECONDS = 0.1
# A listener that heard nothing from Redis (its pongs included) for this long is not
# trusted: the workers fall back on the change counter until it hears again.
HEALTHY_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0


class Listener:
    """One thread per process and channel: subscribes to the change notices and applies
    them to every Verifier of this process on that channel. Started on first use (after
    gunicorn's fork), a daemon, reconnecting with backoff; it ends once no Verifier is left."""

    def __init__(self, url: str, channel: str, config) -> None:
        self.url, self.channel, self.config = url, channel, config
        self.verifiers: weakref.WeakSet[Verifier] = weakref.WeakSet()
        self.healthy_until = 0.0
        self.thread = threading.Thread(
            target=self._run, name=f"token-notices {channel}", daemon=True
        )

    def healthy(self, now: float) -> bool:
        return now < self.healthy_until

    def _run(self) -> None:
        backoff, warned = PING_SECONDS, False
        while len(self.verifiers):
            try:
                self._listen(reconnecting=warned)
            except Exception as error:  # redis-py's errors (refused, timeouts, reset) vary
                self.healthy_until = 0.0
                if not warned:
                    # One line, no traceback: an outage of Redis is expected (issue 16).
                    log.warning(
                        "Token change notices unreachable on Redis (%s): workers check the"
                        " change counter instead, and retry",
                        _name(error),
                    )
                    warned = True
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                backoff = PING_SECONDS

    def _listen(self, *, reconnecting: bool) -> None:
        from extensions import redis_client

        client = redis_client(self.url, self.config)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            next_ping = last_heard = time.monotonic()
            while len(self.verifiers):
                now = time.monotonic()
                if now >= next_ping:
                    pubsub.ping()
                    next_ping = now + PING_SECONDS
                message = pubsub.get_message(timeout=max(0.0, next_ping - now))
                now = time.monotonic()
                if message is None:
                    if now - last_heard > 4 * HEALTHY_SECONDS:
                        raise TimeoutError("Redis stopped answering the listener's pings")
                    continue
                last_heard = now
                kind = message["type"]
                if kind == "subscribe" and reconnecting:
                    # Notices sent while Redis was away are lost: forget everything once.
                    for target in list(self.verifiers):
                        target.clear()
                elif kind == "message":
                    self._apply(message["data"])
                self.healthy_until = now + HEALTHY_SECONDS
        finally:
            self.healthy_until = 0.0
            with contextlib.suppress(Exception):
                pubsub.close()
                client.close()

    def _apply(self, data: bytes) -> None:
        kind, _, rest = data.decode("ascii", "replace").partition(" ")
        names = rest.split()
        for target in list(self.verifiers):
            if "*" in names and kind == "o":
                target.forget_access(None)
            elif "*" in names:
                target.cache.clear()
            elif kind == "o":
                target.forget_access({int(n) for n in names if n.isascii() and n.isdigit()})
            elif kind == "t":
                target.cache.invalidate(names)


_listeners: dict[tuple[str, str], Listener] = {}
_listeners_lock = threading.Lock()
_pid = os.getpid()  # this process's (a getpid() per verification is a system call)


def _after_fork() -> None:
    # Threads do not survive a fork, and a lock held by one of them would stay held.
    global _listeners_lock, _pid
    _listeners.clear()
    _listeners_lock = threading.Lock()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def listener_for(verifier: Verifier, url: str, channel: str, config) -> Listener:
    with _listeners_lock:
        found = _listeners.get((url, channel))
        if found is None or not found.thread.is_alive():
            found = _listeners[(url, channel)] = Listener(url, channel, config)
            found.verifiers.add(verifier)
            found.thread.start()
        else:
            found.verifiers.add(verifier)
        return found


class Notices:
    """A Verifier's side of the notices: publishes its worker's changes after they commit,
    and listens (lazily, in this process) for everyone's."""

    def __init__(self, url: str, prefix: str, config) -> None:
        from extensions import redis_client

        self.url, self.config = url, config
        self.channel = f"{prefix}:token-changes"
        self.client = redis_client(url, config)
        self._listener: Listener | None = None
        self._pid = 0

    def listener(self, verifier: Verifier) -> Listener:
        listener = self._listener
        # A new process (a fork), or a thread that ended as this app was joining it.
        if listener is None or self._pid != _pid or not listener.thread.is_alive():
            self._pid = _pid
            listener = self._listener = listener_for(verifier, self.url, self.channel, self.config)
        return listener

    def trusted(self, verifier: Verifier, now: float) -> bool:
        """Whether this process's listener heard Redis lately, so notices alone suffice."""
        listener = self._listener
        if listener is not None and self._pid == _pid and listener.healthy(now):
            return True  # it heard Redis within HEALTHY_SECONDS: its thread is running
        return self.listener(verifier).healthy(now)

    def publish(self, kind: str, names: Any) -> None:
        try:
            self.client.publish(self.channel, f"{kind} {' '.join(map(str, names))}")
        except Exception as error:  # the counter, then the cache lifetime, bound staleness
            log.warning("Could not announce a token change through Redis: %s", _name(error))


class Verifier:
    """One app's cache and its links to the other workers: notices through Redis when
    configured, and always the change counter of this host."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        ttl = min(float(config.get("TOKEN_CACHE_SECONDS", 5)), 5.0)
        max_entries = int(config.get("TOKEN_CACHE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES))
        self.cache = TokenCache(ttl=ttl, max_entries=max_entries)
        # (organization id, creator's user id) -> TokenAccess
        self.access = TokenCache(ttl=ttl, max_entries=max_entries)
        self.counter = ChangeCounter(
            changes_file(app),
            float(config.get("TOKEN_CACHE_CHECK_SECONDS", DEFAULT_CHECK_SECONDS)),
        )
        self.notices: Notices | None = None
        if config.get("REDIS_URL"):
            self.notices = Notices(
                config["REDIS_URL"], config.get("RATELIMIT_KEY_PREFIX", "keysmith"), config
            )

    def clear(self) -> None:
        self.cache.clear()
        self.access.clear()

    def _check_elsewhere(self, now: float) -> None:
        if self.notices is not None and self.notices.trusted(self, now):
            return  # notices arrive as they are sent
        if self.counter.changed_elsewhere(now):
            self.clear()

    def load(self, token_id: str) -> VerifiedToken | None:
        now = time.monotonic()
        self._check_elsewhere(now)
        snapshot = self.cache.get(token_id, now)
        if snapshot is not None:
            return snapshot
        generation = self.cache.generation
        snapshot = load_snapshot(token_id)
        if snapshot is not None:
            self.cache.put(snapshot, generation, now)
        return snapshot

    def load_access(self, organization_id: int, user_id: int | None) -> TokenAccess | None:
        now = time.monotonic()
        self._check_elsewhere(now)
        key = (organization_id, user_id)
        access = self.access.get(key, now)
        if access is not None:
            return access
        generation = self.access.generation
        access = load_access(organization_id, user_id)
        if access is not None:
            self.access.put(access, generation, now, key=key)
        return access

    def forget_access(self, organization_ids: set[int] | None) -> None:
        """Forget the cached access of these organizations (None: of every organization)."""
        if organization_ids is None:
            self.access.clear()
        else:
            self.access.invalidate_where(lambda key: key[0] in organization_ids)

    def committed(self, token_ids: set[str] | None) -> None:
        """Apply changes made by this worker (None: to any token): at once here, then
        announced to the others."""
        if token_ids is None:
            self.cache.clear()
        else:
            self.cache.invalidate(token_ids)
        self._announce("t", ["*"] if token_ids is None else sorted(token_ids))

    def access_committed(self, organization_ids: set[int] | None) -> None:
        self.forget_access(organization_ids)
        self._announce("o", ["*"] if organization_ids is None else sorted(organization_ids))

    def _announce(self, kind: str, names: list) -> None:
        self.counter.bump()
        if self.notices is not None:
            self.notices.publish(kind, names)


def _name(error: Exception) -> str:
    return type(error).__name__


def verifier(app: Flask | None = None) -> Verifier:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(EXTENSION_KEY)
    if found is None:
        found = app.extensions[EXTENSION_KEY] = Verifier(app)
    return found


def load_for_verification(token_id: str) -> VerifiedToken | None:
    return verifier().load(token_id)


def token_access(organization_id: int, user_id: int | None) -> TokenAccess | None:
    """The organization and the creator's membership of a verified token, ≤ 5 s old."""
    return verifier().load_access(organization_id, user_id)


def token_changed(token: ApiToken) -> None:
    """Note a change: this worker forgets the token now (so its own session sees the
    change) and again when the transaction ends, when other workers are told too."""
    _tokens_changed(db.session(), {token.id})


def _tokens_changed(session: Session, token_ids: set[str] | None) -> None:
    if not has_app_context():
        return
    target = verifier()
    if token_ids is None:
        target.cache.clear()
    else:
        target.cache.invalidate(token_ids)
    pending: dict[Verifier, set[str] | None] = session.info.setdefault(PENDING_KEY, {})
    if token_ids is None or (target in pending and pending[target] is None):
        pending[target] = None
    else:
        pending.setdefault(target, set()).update(token_ids)  # type: ignore[union-attr]


_EVERY = None  # "every organization", in the pending access invalidations


def organizations_changed(session: Session, organization_ids: set[int] | None) -> None:
    """Note a change to organizations or memberships (None: possibly any): forgotten now
    on this worker and again when the transaction ends, when other workers are told."""
    if not has_app_context():
        return
    target = verifier()
    target.forget_access(organization_ids)
    pending: dict[Verifier, set[int] | None] = session.info.setdefault(ACCESS_PENDING_KEY, {})
    if organization_ids is _EVERY or (target in pending and pending[target] is _EVERY):
        pending[target] = _EVERY
    else:
        pending.setdefault(target, set()).update(organization_ids)  # type: ignore[union-attr]


@sa.event.listens_for(Session, "after_flush")
def _note_access_changes(session: Session, _flush_context: Any) -> None:
    changed: set[int] | None = set()
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, Organization | Membership):
            column = "id" if isinstance(instance, Organization) else "organization_id"
            organization_id = sa.inspect(instance).dict.get(column)
            if organization_id is None:
                changed = _EVERY
                break
            changed.add(organization_id)
    if changed is _EVERY or changed:
        organizations_changed(session, changed)


@sa.event.listens_for(Session, "do_orm_execute")
def _note_bulk_access_changes(state: ORMExecuteState) -> None:
    # An UPDATE or DELETE statement on organizations, memberships or tokens: which rows,
    # unknown, so every one of them.
    if not (state.is_update or state.is_delete):
        return
    classes = {mapper.class_ for mapper in state.all_mappers}
    if classes & {Organization, Membership}:
        organizations_changed(state.session, _EVERY)
    if ApiToken in classes:
        _tokens_changed(state.session, None)


@sa.event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    # What was cached during the transaction may be a state that never happened.
    pending = session.info.pop(PENDING_KEY, None)
    for target, token_ids in (pending or {}).items():
        if token_ids is None:
            target.cache.clear()
        else:
            target.cache.invalidate(token_ids)
    for target, organization_ids in (session.info.pop(ACCESS_PENDING_KEY, None) or {}).items():
        target.forget_access(organization_ids)


@sa.event.listens_for(Session, "after_commit")
def _apply_after_commit(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, None)
    for target, token_ids in (pending or {}).items():
        target.committed(token_ids)
    for target, organization_ids in (session.info.pop(ACCESS_PENDING_KEY, None) or {}).items():
        target.access_committed(organization_ids)


def init_app(app: Flask) -> None:
    verifier(app)
