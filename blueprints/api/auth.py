"""Who calls the API: the token in `Authorization: Bearer`, `X-API-Key` or HTTP Basic.

Session cookies never authenticate the API. Authentication runs once per request and is
cached on `g`: the rate limiter's key function needs the token before the view runs.
On the hot path it runs no SQL: the token, its organization and its creator's membership
come from the verification cache (services/token_cache.py), at most 5 s old, forgotten
at once on this worker when any of them changes.

A token with an IP allowlist is refused (403 `ip_not_allowed`) from any other address.
The client address is `request.remote_addr`: X-Forwarded-For counts only behind
PROXY_COUNT trusted proxies (werkzeug's ProxyFix, set up in create_app).
"""

from __future__ import annotations

import contextlib

from flask import current_app, g, request
from limits import parse

from extensions import counted_limits, db, limit_key
from services import audit, network, usage
from services import tokens as token_service
from services.actor import Actor
from services.errors import AuthFailed, IpNotAllowed
from services.token_cache import VerifiedToken, token_access

# Requests that carry no valid token (and openapi.json) are limited per client address.
UNAUTHENTICATED_RATE_LIMIT = "300/minute;30/second"
_MISSING_MESSAGE = "Send a token: Authorization: Bearer <token>, X-API-Key: <token>, or HTTP Basic."
# A flood from a refused address writes at most this many audit events per token and address.
IP_DENIED_AUDIT_LIMIT = parse("1/minute")


def presented_secret() -> str | None:
    """The token in the request, from the first of the three accepted places that has one.

    None when no credentials are sent at all; "" when a header is there but unreadable.
    """
    environ = request.environ
    header = environ.get("HTTP_AUTHORIZATION")
    if header:
        # The common case without werkzeug's parser, read exactly as it would read it.
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "bearer":
            rest = rest.strip(" \t")
            if "=" not in rest.rstrip("="):
                return rest.strip()
        try:
            auth = request.authorization
        except (ValueError, UnicodeError):  # e.g. non-ASCII bytes where base64 should be
            return ""
        if auth is None:
            return ""
        if auth.type == "bearer":
            return (auth.token or "").strip()
        if auth.type == "basic":
            # The token as password (`curl -u anything:<token>`), or Stripe's way, as user
            # name with an empty password (`curl -u <token>:`).
            password, username = (auth.password or "").strip(), (auth.username or "").strip()
            return password or username
        return ""
    api_key = environ.get("HTTP_X_API_KEY")  # what request.headers["X-API-Key"] reads
    return api_key.strip() if api_key is not None else None


_OTHER_SCHEME_MESSAGE = (
    "The token is not valid. Keysmith does not read the Authorization scheme '{scheme}': "
    "send 'Authorization: Bearer <token>' (or X-API-Key: <token>, or HTTP Basic)."
)
_NO_SCHEME_MESSAGE = (
    "The token is not valid. The Authorization header needs a scheme: "
    "'Authorization: Bearer <token>' (or use X-API-Key: <token>)."
)


def _authenticate() -> Actor:
    secret = presented_secret()
    if secret is None:
        raise AuthFailed("missing_token", _MISSING_MESSAGE)
    if not secret:
        header = (request.environ.get("HTTP_AUTHORIZATION") or "").strip()
        if header.startswith("ks_"):
            raise AuthFailed("invalid_token", _NO_SCHEME_MESSAGE)  # a bare `Authorization: <key>`
        scheme = header.partition(" ")[0]
        if scheme and scheme.lower() not in ("bearer", "basic"):  # GitHub's `token`, Digest...
            # Named back only when it reads as a scheme (never a pasted value's start).
            named = scheme if scheme.isascii() and scheme.isalpha() and len(scheme) <= 20 else "?"
            raise AuthFailed("invalid_token", _OTHER_SCHEME_MESSAGE.format(scheme=named))
    token, previous_secret = token_service.verify_secret(secret)
    # The organization and the creator's membership in it now (≤ 5 s old, no SQL if cached).
    access = token_access(token.organization_id, token.created_by_user_id)
    if access is None:
        raise AuthFailed("invalid_token", "The token is not valid.")
    if token.created_by_user_id is not None and access.membership is None:
        # Removing a member revokes their tokens (SPEC §1); answer as if it were done.
        raise AuthFailed("token_revoked", "The member who created this token has left.")
    environ = request.environ  # request.remote_addr and .user_agent read these
    actor = Actor(
        # Snapshots that read like the rows; a view that needs more reads it from the session.
        organization=access.organization,  # type: ignore[arg-type]
        membership=access.membership,  # type: ignore[arg-type]
        token=token,
        ip=environ.get("REMOTE_ADDR"),
        user_agent=environ.get("HTTP_USER_AGENT") or None,
        previous_secret=previous_secret,
    )
    if not network.ip_allowed(token.allowed_ips, actor.ip):
        _audit_ip_denied(actor, token)
        raise IpNotAllowed()
    usage.record_use(token, actor.ip)
    return actor


def _audit_ip_denied(actor: Actor, token: VerifiedToken) -> None:
    """Audit a refused address, at most once a minute per token and address."""
    args = limit_key("token-ip-denied", token.id, actor.ip or "unknown")
    try:
        first_this_minute = counted_limits.hit(IP_DENIED_AUDIT_LIMIT, *args)
    except Exception:  # the refusal stands; only its audit event is skipped
        current_app.logger.warning("Could not bound the ip_denied audit", exc_info=True)
        return
    if not first_this_minute:
        return
    audit.record(
        actor,
        "token.ip_denied",
        environment=token.environment,
        target_type="token",
        target_id=token.id,
        target_label=token.name,
        details={"ip": actor.ip},
    )
    try:
        db.session.commit()  # its own commit: the request itself is refused
    except Exception:
        db.session.rollback()
        current_app.logger.warning("Could not write the ip_denied audit event", exc_info=True)


def current_api_actor() -> Actor:
    """The calling token as an Actor, or AuthFailed (401) with SPEC §4's code, or
    IpNotAllowed (403) from an address outside the token's allowlist."""
    found = g.get("api_actor")
    if found is None:
        try:
            found = _authenticate()
        except (AuthFailed, IpNotAllowed) as exc:
            found = exc
        g.api_actor = found
    if isinstance(found, Exception):
        raise found
    return found


def rate_limit_key_and_value() -> tuple[str, str]:
    """Per token when the request authenticates, else per client address; and the limit:
    the token's own if within its organization's policy, else the policy's, which itself
    holds only within the operator's RATE_LIMIT_MAX (SPEC §2, §6). openapi.json is counted
    per address."""
    actor = None
    if request.endpoint != "api.openapi":
        # Without a valid token: limited per client address, not in the token's bucket.
        with contextlib.suppress(AuthFailed, IpNotAllowed):
            actor = current_api_actor()
    if actor is not None and actor.token is not None:
        return f"token:{actor.token.id}", token_service.caller_rate_limit(actor)
    return (
        f"ip:{request.remote_addr or 'unknown'}",
        current_app.config.get("API_UNAUTHENTICATED_RATE_LIMIT", UNAUTHENTICATED_RATE_LIMIT),
    )
