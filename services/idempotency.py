"""Idempotency-Key (SPEC §4, as Stripe's): a retry of create or rotate with the same key
and the same request within 24 hours gets the first answer again, secret included.

- Scope: one calling token of one organization. The key is kept only as an HMAC under the
  server's key (TOKEN_HMAC_KEY), with the organization and token, so the row says nothing
  of the key a client chose.
- The answer (status, body with the secret, Location) is sealed with AES-GCM under a key
  derived by HKDF from the client's key (salted with the server's key): the database and the
  server's keys alone cannot open it; the request that repeats the key can.
- The request is fingerprinted (method, path, body) with an HMAC under another key derived
  the same way: the same key with another request is `idempotency_mismatch`.
- A claim: the row is inserted (`in_progress`) in the request's own transaction before the
  work, under the unique (organization, token, key hash), and becomes `done` with the sealed
  answer in that same transaction, so a committed token always has its stored answer and a
  failed one leaves neither. A concurrent request with the same key waits on that unique
  index until the first commits (then gets its answer) or rolls back (then does the work
  itself); on PostgreSQL it waits at most CLAIM_WAIT, then 409 `idempotency_in_progress`.
- Rows older than 24 hours are never used, and are deleted as new keys are claimed.

Services never commit: the view does, once, after `seal()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy.exc import IntegrityError, OperationalError

from extensions import db
from models import IdempotencyKey, utcnow
from services.errors import DomainError, ValidationFailed

HEADER = "Idempotency-Key"
LIFETIME = timedelta(hours=24)
MAX_LENGTH = 255
CLAIM_WAIT = "5s"  # PostgreSQL lock_timeout while waiting for a concurrent claim
PURGE_EVERY_SECONDS = 60.0
_INFO = b"keysmith idempotency v1"
_LOCK_NOT_AVAILABLE = "55P03"


class IdempotencyMismatch(DomainError):
    code = "idempotency_mismatch"
    status = 400
    message = (
        "This Idempotency-Key was already used with another request (another body or "
        "endpoint); use a new key for a new request."
    )


class IdempotencyInProgress(DomainError):
    code = "idempotency_in_progress"
    status = 409
    message = (
        "A request with this Idempotency-Key is still being processed; retry in a moment "
        "to get its answer."
    )


@dataclass(frozen=True)
class Scope:
    """One request with an Idempotency-Key, as the service sees it."""

    organization_id: int
    caller_token_id: str
    key_hash: str
    request_hash: str
    seal_key: bytes

    @property
    def aad(self) -> bytes:
        return f"{self.organization_id}|{self.caller_token_id}|{self.key_hash}".encode()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def valid_key(raw: str) -> str:
    """The header's value, or ValidationFailed: 1 to 255 visible ASCII characters."""
    if not 1 <= len(raw) <= MAX_LENGTH or not all(" " <= c <= "~" for c in raw):
        raise ValidationFailed(
            f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters.",
            details={HEADER: "1 to 255 printable ASCII characters, e.g. a random UUID."},
        )
    return raw


def scope_for(organization_id: int, caller_token_id: str, key: str, fingerprint: bytes) -> Scope:
    """The hashes and the sealing key of a request: `fingerprint` is what makes two requests
    the same (method, path and body, as the view canonicalises them)."""
    server_key = current_app.config["TOKEN_HMAC_KEY"].encode()
    where = f"{organization_id}|{caller_token_id}".encode()
    key_hash = hmac.new(server_key, _INFO + b"|key|" + where + b"|" + key.encode(), "sha256")
    derived = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=server_key, info=_INFO + b"|" + where
    ).derive(key.encode())
    seal_key, mac_key = derived[:32], derived[32:]
    request_hash = hmac.new(mac_key, fingerprint, hashlib.sha256)
    return Scope(
        organization_id, caller_token_id, key_hash.hexdigest(), request_hash.hexdigest(), seal_key
    )


def claim(scope: Scope) -> IdempotencyKey | Answer:
    """Claim the key before the work (a row in this transaction), or the stored answer.

    Raises IdempotencyMismatch (another request had the key), IdempotencyInProgress (a
    concurrent claim held it past CLAIM_WAIT)."""
    _purge_now_and_then()
    for _attempt in range(3):
        found = _find(scope)
        if found is not None:
            if found.created_at > utcnow() - LIFETIME:
                return _answer_of(found, scope)
            db.session.delete(found)  # older than 24 h: as if it had never been used
            db.session.flush()
        row = IdempotencyKey(
            organization_id=scope.organization_id,
            caller_token_id=scope.caller_token_id,
            key_hash=scope.key_hash,
            request_hash=scope.request_hash,
            state="in_progress",
        )
        try:
            _insert_waiting_at_most(row, CLAIM_WAIT)
        except IntegrityError:
            db.session.rollback()  # a concurrent request claimed it, and committed: look again
            continue
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                db.session.rollback()
                raise IdempotencyInProgress() from None
            raise
        return row
    raise IdempotencyInProgress()  # claimed and released over and over: let the client retry


def seal(claimed: IdempotencyKey, scope: Scope, answer: Answer) -> None:
    """Store the answer in the claimed row, in the transaction of the work (flushed)."""
    claimed.state = "done"
    claimed.status = answer.status
    claimed.sealed = _seal(scope, answer)
    db.session.flush()


def store(scope: Scope, answer: Answer) -> None:
    """Store an answer the work did not commit with (a 400): in a transaction of its own
    (the view commits it). A concurrent request that stored first keeps its own."""
    row = IdempotencyKey(
        organization_id=scope.organization_id,
        caller_token_id=scope.caller_token_id,
        key_hash=scope.key_hash,
        request_hash=scope.request_hash,
        state="done",
        status=answer.status,
        sealed=_seal(scope, answer),
    )
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        pass


def purge_expired(now=None) -> int:
    """Delete the rows older than 24 hours (in the caller's transaction)."""
    cutoff = (now or utcnow()) - LIFETIME
    result = db.session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return result.rowcount or 0


# ---------------------------------------------------------------- helpers

_next_purge = {"at": 0.0}


def _purge_now_and_then() -> None:
    now = time.monotonic()
    if now < _next_purge["at"]:
        return
    _next_purge["at"] = now + PURGE_EVERY_SECONDS
    purge_expired()


def _find(scope: Scope) -> IdempotencyKey | None:
    return db.session.scalar(
        sa.select(IdempotencyKey).where(
            IdempotencyKey.organization_id == scope.organization_id,
            IdempotencyKey.caller_token_id == scope.caller_token_id,
            IdempotencyKey.key_hash == scope.key_hash,
        )
    )


def _insert_waiting_at_most(row: IdempotencyKey, wait: str) -> None:
    """Insert and flush; on PostgreSQL wait at most `wait` for a concurrent claim of the
    same key (its uncommitted row holds the unique index), then restore the setting."""
    session = db.session
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        previous = session.scalar(sa.text("SELECT current_setting('lock_timeout')"))
        session.execute(sa.text("SELECT set_config('lock_timeout', :v, true)"), {"v": wait})
    session.add(row)
    session.flush()
    if postgresql:
        session.execute(sa.text("SELECT set_config('lock_timeout', :v, true)"), {"v": previous})


def _answer_of(row: IdempotencyKey, scope: Scope) -> Answer:
    if not hmac.compare_digest(row.request_hash, scope.request_hash):
        raise IdempotencyMismatch()
    if row.state != "done" or row.sealed is None:
        raise IdempotencyInProgress()  # not reached: claims commit only when done
    return _open(scope, row.sealed)


def _seal(scope: Scope, answer: Answer) -> bytes:
    plain = json.dumps(
        {"status": answer.status, "headers": answer.headers, "body": answer.body.decode()}
    ).encode()
    nonce = os.urandom(12)
    return nonce + AESGCM(scope.seal_key).encrypt(nonce, plain, scope.aad)


def _open(scope: Scope, sealed: bytes) -> Answer:
    try:
        plain = AESGCM(scope.seal_key).decrypt(sealed[:12], sealed[12:], scope.aad)
    except InvalidTag:  # the server's key changed since: the key cannot be honoured
        raise IdempotencyMismatch() from None
    stored = json.loads(plain)
    return Answer(stored["status"], stored["body"].encode(), stored["headers"])
