"""Two-factor sign-in (SPEC §1): an authenticator app (TOTP, RFC 6238, via pyotp) and ten
single-use recovery codes.

The TOTP secret must be readable to check codes, so it is sealed rather than hashed: XOR
with an HMAC-SHA256 keystream of SECRET_KEY and a random nonce kept beside it. A copy of the
database alone cannot make codes. Recovery codes are stored as HMACs, like invite links.
A code is accepted once: the 30-second step it was accepted for is remembered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
from datetime import datetime

import pyotp
import segno
import sqlalchemy as sa
from flask import current_app

from extensions import db
from models import RecoveryCode, TwoFactor, User, utcnow
from services import audit
from services.actor import Actor
from services.errors import ValidationFailed

ISSUER = "Keysmith"
RECOVERY_CODES = 10


def _keystream(nonce: bytes, length: int) -> bytes:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"totp-seal:" + nonce, hashlib.sha256).digest()[:length]


def _seal(secret: str) -> str:
    raw = secret.encode()
    nonce = secrets.token_bytes(16)
    sealed = bytes(a ^ b for a, b in zip(raw, _keystream(nonce, len(raw)), strict=True))
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def _unseal(value: str) -> str:
    data = base64.urlsafe_b64decode(value.encode())
    nonce, sealed = data[:16], data[16:]
    return bytes(
        a ^ b for a, b in zip(sealed, _keystream(nonce, len(sealed)), strict=True)
    ).decode()


def two_factor_of(user: User) -> TwoFactor | None:
    return db.session.scalar(sa.select(TwoFactor).where(TwoFactor.user_id == user.id))


def is_enabled(user: User) -> bool:
    found = two_factor_of(user)
    return found is not None and found.confirmed_at is not None


def begin_enrolment(user: User) -> TwoFactor:
    """A new, unconfirmed secret for the person (replacing an unconfirmed one)."""
    found = two_factor_of(user)
    if found is not None and found.confirmed_at is not None:
        return found
    if found is None:
        found = TwoFactor(user_id=user.id, secret_sealed="", last_step=0)
        db.session.add(found)
    found.secret_sealed = _seal(pyotp.random_base32())  # 160 bits
    found.created_at = utcnow()
    db.session.flush()
    return found


def secret_of(found: TwoFactor) -> str:
    return _unseal(found.secret_sealed)


def provisioning_uri(found: TwoFactor, user: User) -> str:
    return pyotp.TOTP(secret_of(found)).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_svg_data_uri(uri: str) -> str:
    """The QR code as an SVG data: URI, which the CSP's img-src allows (no script)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=5, border=2)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _accept_totp(found: TwoFactor, code: str, now: datetime | None = None) -> bool:
    code = "".join(ch for ch in code if ch in "0123456789")
    if len(code) != 6:
        return False
    totp = pyotp.TOTP(secret_of(found))
    moment = now or utcnow()
    step_now = totp.timecode(moment)
    for step in (step_now - 1, step_now, step_now + 1):  # one step of clock drift either way
        if step > found.last_step and hmac.compare_digest(totp.generate_otp(step), code):
            # Claimed with a conditional UPDATE, so two requests cannot both use it.
            claimed = db.session.execute(
                sa.update(TwoFactor)
                .where(TwoFactor.id == found.id, TwoFactor.last_step < step)
                .values(last_step=step)
            ).rowcount
            return bool(claimed)
    return False


def confirm(user: User, code: str, *, actor_ip: str | None, user_agent: str | None) -> list[str]:
    """Turn two-factor sign-in on with a first code; returns the recovery codes (shown once)."""
    found = two_factor_of(user)
    if found is None or not _accept_totp(found, code or ""):
        raise ValidationFailed(
            details={"code": "That code is not right. Type the 6 digits the app shows now."}
        )
    found.confirmed_at = utcnow()
    codes = new_recovery_codes(user)
    _audit(user, "user.two_factor_enabled", ip=actor_ip, user_agent=user_agent)
    db.session.flush()
    return codes


def disable(user: User, *, ip: str | None, user_agent: str | None) -> None:
    db.session.execute(sa.delete(TwoFactor).where(TwoFactor.user_id == user.id))
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    _audit(user, "user.two_factor_disabled", ip=ip, user_agent=user_agent)
    db.session.flush()


def _recovery_hash(code: str) -> str:
    key = current_app.config["TOKEN_HMAC_KEY"].encode()
    normal = "".join(ch for ch in code.lower() if ch.isalnum())
    return hmac.new(key, b"recovery-code:" + normal.encode(), hashlib.sha256).hexdigest()


def new_recovery_codes(user: User) -> list[str]:
    """Ten fresh codes (xxxxx-xxxxx, 50 bits each); the old ones stop working."""
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    db.session.add_all(RecoveryCode(user_id=user.id, code_hash=_recovery_hash(c)) for c in codes)
    db.session.flush()
    return codes


def unused_recovery_codes(user: User) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    )


def verify(user: User, code: str) -> str | None:
    """Check a second factor at sign-in: "totp", "recovery code", or None if wrong."""
    found = two_factor_of(user)
    if found is None or found.confirmed_at is None or not code:
        return None
    if _accept_totp(found, code):
        return "totp"
    used = db.session.execute(
        sa.update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _recovery_hash(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
    ).rowcount
    return "recovery code" if used else None


def _audit(user: User, action: str, *, ip: str | None, user_agent: str | None) -> None:
    from services.accounts import memberships_of

    for membership in memberships_of(user):
        actor = Actor(
            organization=membership.organization,
            membership=membership,
            ip=ip,
            user_agent=user_agent,
        )
        audit.record(
            actor, action, target_type="member", target_id=membership.id, target_label=user.email
        )
