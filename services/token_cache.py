"""The verification cache: immutable token snapshots, per worker, at most a few seconds old.

The hot path (`services.tokens.verify`) reads a token by id. A small in-process LRU
keeps what verification needs as a frozen `VerifiedToken`, never an ORM object, for
at most `TOKEN_CACHE_SECONDS` (SPEC §2: ≤ 5 s). A change that may alter a token's
verification (revoke, suspend, resume, rotate, update) is applied to this worker's
cache right after the transaction commits, and announced to every other worker:
with `REDIS_URL`, by bumping a version counter in Redis that each worker checks at
most every `TOKEN_CACHE_CHECK_SECONDS`; without Redis, the short lifetime bounds
how stale another worker's copy can be.

Beside each token, the API needs its organization and its creator's membership *now*
(a token never does more than its creator may do). Those rows are cached the same way,
per (organization, creator), as frozen snapshots that read like the rows (`TokenAccess`),
under the same lifetime and the same announcements. Any change to an organization or
a membership made through the ORM (a flush, or a bulk UPDATE/DELETE statement) forgets
that organization's entries at once on this worker and again after the commit, when
other workers are told too. A raw SQL change bypasses this; the lifetime still bounds it.
"""

from __future__ import annotations

import logging
import threading
import time
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
# How often a worker asks Redis whether any token changed elsewhere.
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


class RedisVersion:
    """A version counter in Redis: bumped on every token change, polled by every worker."""

    def __init__(self, url: str, prefix: str, check_seconds: float, config=None) -> None:
        from extensions import redis_client

        self.client = redis_client(url, config or {})
        self.key = f"{prefix}:token-cache-version"
        self.check_seconds = check_seconds
        self._seen: bytes | None | object = _NEVER
        self._next_check = 0.0
        self._lock = threading.Lock()

    def bump(self) -> None:
        try:
            self.client.incr(self.key)
        except Exception as error:  # the cache lifetime still bounds staleness
            # One line, no traceback: an outage of Redis is expected, not a bug (issue 16).
            log.warning("Could not announce a token change through Redis: %s", _name(error))

    def changed_elsewhere(self, now: float) -> bool:
        """True when the counter moved since the last check (checked at most every N s)."""
        if now < self._next_check:
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + self.check_seconds
            try:
                value = self.client.get(self.key)
            except Exception as error:
                # Ask again later, not on every request; meanwhile the lifetime bounds staleness.
                self._next_check = now + 5.0
                log.warning("Could not read the token-change counter from Redis: %s", _name(error))
                return False
            # The first look only learns the value: this worker's cache started after it.
            changed = self._seen is not _NEVER and value != self._seen
            self._seen = value
            return changed


class Verifier:
    """One app's cache and, with Redis, its link to the other workers."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        ttl = min(float(config.get("TOKEN_CACHE_SECONDS", 5)), 5.0)
        max_entries = int(config.get("TOKEN_CACHE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES))
        self.cache = TokenCache(ttl=ttl, max_entries=max_entries)
        # (organization id, creator's user id) -> TokenAccess
        self.access = TokenCache(ttl=ttl, max_entries=max_entries)
        self.version: RedisVersion | None = None
        if config.get("REDIS_URL"):
            self.version = RedisVersion(
                config["REDIS_URL"],
                config.get("RATELIMIT_KEY_PREFIX", "keysmith"),
                float(config.get("TOKEN_CACHE_CHECK_SECONDS", DEFAULT_CHECK_SECONDS)),
                config,
            )

    def _check_elsewhere(self, now: float) -> None:
        if self.version is not None and self.version.changed_elsewhere(now):
            self.cache.clear()
            self.access.clear()

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

    def committed(self, token_ids: set[str]) -> None:
        """Apply changes made by this worker: at once here, announced to the others."""
        self.cache.invalidate(token_ids)
        if self.version is not None:
            self.version.bump()

    def access_committed(self, organization_ids: set[int] | None) -> None:
        self.forget_access(organization_ids)
        if self.version is not None:
            self.version.bump()


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
    session = db.session()
    target = verifier()
    target.cache.invalidate({token.id})
    pending: dict[Verifier, set[str]] = session.info.setdefault(PENDING_KEY, {})
    pending.setdefault(target, set()).add(token.id)


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
    # An UPDATE or DELETE statement on organizations or memberships: which rows, unknown.
    if (state.is_update or state.is_delete) and any(
        mapper.class_ in (Organization, Membership) for mapper in state.all_mappers
    ):
        organizations_changed(state.session, _EVERY)


@sa.event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    # What was cached during the transaction may be a state that never happened.
    pending = session.info.pop(PENDING_KEY, None)
    for target, token_ids in (pending or {}).items():
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
