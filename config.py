"""Settings read from the environment (SPEC §7), with local secrets in instance/."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

DEFAULT_RATE_LIMIT = "1000/minute;100/second"
# The operator's ceiling: no organization's policy (so no token) may allow more.
DEFAULT_RATE_LIMIT_MAX = "6000/minute;300/second"


def _instance_secret(instance_path: Path, filename: str) -> str:
    """Read a secret from instance/, generating it on first run (file mode 600)."""
    instance_path.mkdir(parents=True, exist_ok=True)
    path = instance_path / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _database_url(url: str | None, instance_path: Path) -> str:
    if not url:
        return f"sqlite:///{instance_path / 'keysmith.db'}"
    # Heroku-style URLs name the dialect "postgres"; SQLAlchemy wants the driver spelled out.
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _origins(value: str) -> list[str]:
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("https", "http") or not rest or "/" in rest or "*" in rest:
            raise ValueError(
                f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com"
            )
    return origins


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class Config:
    """One class; every value can be overridden by the environment or by create_app(test_config)."""

    def __init__(self, instance_path: str, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        path = Path(instance_path)
        self.SECRET_KEY = env.get("SECRET_KEY") or _instance_secret(path, "secret_key")
        # Tokens are hashed with their own key so that rotating SECRET_KEY (sessions)
        # does not invalidate every API token, and vice versa when set explicitly.
        self.TOKEN_HMAC_KEY = (
            env.get("TOKEN_HMAC_KEY")
            or hmac.new(
                self.SECRET_KEY.encode(), b"keysmith token hmac key v1", hashlib.sha256
            ).hexdigest()
        )
        # Old keys still accepted for verification while tokens are rotated (docs/security.md).
        self.TOKEN_HMAC_OLD_KEYS = [
            k.strip() for k in env.get("TOKEN_HMAC_OLD_KEYS", "").split(",") if k.strip()
        ]
        # Webhook notices are signed with a secret derived per organization from this key.
        # Pin it (to the old TOKEN_HMAC_KEY) before rotating that key, so receivers keep theirs.
        # Unset: TOKEN_HMAC_KEY (services/hygiene.py reads it then).
        self.WEBHOOK_SIGNING_KEY = env.get("WEBHOOK_SIGNING_KEY") or None
        # Webhooks never reach this host or its networks, nor go out over plain http://,
        # unless the operator says so (services/outbound.py).
        self.WEBHOOK_ALLOW_PRIVATE = _flag(env.get("WEBHOOK_ALLOW_PRIVATE"))
        self.WEBHOOK_ALLOW_HTTP = _flag(env.get("WEBHOOK_ALLOW_HTTP"))
        # The address people use, e.g. https://keys.example.com: every absolute link (API
        # href and Location, invite and reset links, openapi.json) is made from it.
        self.BASE_URL = (env.get("BASE_URL") or "").strip().rstrip("/") or None
        if self.BASE_URL and not self.BASE_URL.startswith(("https://", "http://")):
            raise ValueError("BASE_URL must start with https:// (or http://)")
        # Host names answered besides BASE_URL's (unset and no BASE_URL: localhost only).
        self.TRUSTED_HOSTS = [
            h.strip().lower() for h in env.get("TRUSTED_HOSTS", "").split(",") if h.strip()
        ] or None
        # Origins whose pages may call /api/v1 from a browser (blueprints/api/cors.py); none
        # by default. Each is scheme://host[:port], as a browser sends it in Origin.
        self.CORS_ORIGINS = _origins(env.get("CORS_ORIGINS", ""))
        self.SQLALCHEMY_DATABASE_URI = _database_url(env.get("DATABASE_URL"), path)
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        self.REDIS_URL = env.get("REDIS_URL") or None
        # Every Redis client (limits, throttle, change notices) gives up after this long, so
        # a slow or gone Redis degrades to the in-memory fallback instead of hanging requests.
        self.REDIS_TIMEOUT_SECONDS = float(env.get("REDIS_TIMEOUT_SECONDS", "0.25"))
        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        self.RATELIMIT_KEY_PREFIX = env.get("RATELIMIT_KEY_PREFIX", "keysmith")
        self.RATELIMIT_HEADERS_ENABLED = True
        # Redis unreachable: each worker counts in its own memory until it answers again.
        self.RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
        self.RATE_LIMIT_DEFAULT = env.get("RATE_LIMIT_DEFAULT") or DEFAULT_RATE_LIMIT
        self.RATE_LIMIT_MAX = env.get("RATE_LIMIT_MAX") or DEFAULT_RATE_LIMIT_MAX
        self.BCRYPT_LOG_ROUNDS = int(env.get("BCRYPT_LOG_ROUNDS", "12"))
        # Failed sign-ins (services/throttle.py): per email and address pair, per address,
        # and per email from browsers that never signed in to it.
        self.LOGIN_THROTTLE = env.get("LOGIN_THROTTLE", "10 per 15 minutes")
        self.LOGIN_THROTTLE_IP = env.get("LOGIN_THROTTLE_IP", "10 per 15 minutes")
        self.LOGIN_THROTTLE_EMAIL = env.get("LOGIN_THROTTLE_EMAIL", "100 per hour")
        # Accounts (each with its own organization) made by sign-up from one address.
        self.SIGNUP_THROTTLE = env.get("SIGNUP_THROTTLE", "5 per hour")
        # Organizations one person may start from the console (New organization).
        self.MAX_OWNED_ORGANIZATIONS = int(env.get("MAX_OWNED_ORGANIZATIONS", "10"))
        # Test events and redeliveries an organization asks for (services/throttle.py).
        self.WEBHOOK_SEND_LIMIT = env.get("WEBHOOK_SEND_LIMIT", "10 per minute")
        self.MAX_CONTENT_LENGTH = 1024 * 1024
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = _flag(env.get("SESSION_COOKIE_SECURE"))
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
        # Number of reverse proxies in front of Keysmith whose X-Forwarded-For is trusted.
        self.PROXY_COUNT = int(env.get("PROXY_COUNT", "0"))
        # Whether those proxies set X-Forwarded-Proto / -Host themselves (a client's own are
        # believed otherwise); BASE_URL makes both unnecessary.
        self.PROXY_TRUST_PROTO = _flag(env.get("PROXY_TRUST_PROTO"))
        self.PROXY_TRUST_HOST = _flag(env.get("PROXY_TRUST_HOST"))
        # How long a verified token may be served from the per-worker cache (SPEC §2: ≤ 5 s).
        self.TOKEN_CACHE_SECONDS = float(env.get("TOKEN_CACHE_SECONDS", "5"))

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if k.isupper()}
