"""Who calls the API: the token in `Authorization: Bearer`, `X-API-Key` or HTTP Basic.

Session cookies never authenticate the API. Authentication runs once per request and is
cached on `g`: the rate limiter's key function needs the token before the view runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, g, request
from limits import parse_many

from extensions import db
from models import Membership, Organization
from services import tokens as token_service
from services import usage
from services.actor import Actor
from services.errors import AuthFailed

# Requests that carry no valid token (and openapi.json) are limited per client address.
UNAUTHENTICATED_RATE_LIMIT = "300/minute;30/second"
_MISSING_MESSAGE = "Send a token: Authorization: Bearer <token>, X-API-Key: <token>, or HTTP Basic."


def presented_secret() -> str | None:
    """The token in the request, from the first of the three accepted places that has one.

    None when no credentials are sent at all; "" when a header is there but unreadable.
    """
    if request.headers.get("Authorization"):
        auth = request.authorization
        if auth is None:
            return ""
        if auth.type == "bearer":
            return (auth.token or "").strip()
        if auth.type == "basic":
            return (auth.password or "").strip()
        return ""
    api_key = request.headers.get("X-API-Key")
    return api_key.strip() if api_key is not None else None


def _authenticate() -> Actor:
    secret = presented_secret()
    if secret is None:
        raise AuthFailed("missing_token", _MISSING_MESSAGE)
    token = token_service.verify(secret)
    # One query for the organization and the creator's membership in it now.
    organization, membership = db.session.execute(
        sa.select(Organization, Membership)
        .outerjoin(
            Membership,
            sa.and_(
                Membership.organization_id == Organization.id,
                Membership.user_id == token.created_by_user_id,
            ),
        )
        .where(Organization.id == token.organization_id)
    ).one()
    if token.created_by_user_id is not None and membership is None:
        # Removing a member revokes their tokens (SPEC §1); answer as if it were done.
        raise AuthFailed("token_revoked", "The member who created this token has left.")
    ip = request.remote_addr
    usage.record_use(token, ip)
    return Actor(
        organization=organization,
        membership=membership,
        token=token,
        ip=ip,
        user_agent=request.user_agent.string or None,
    )


def current_api_actor() -> Actor:
    """The calling token as an Actor, or AuthFailed (401) with SPEC §4's code."""
    if "api_actor" not in g:
        try:
            g.api_actor = _authenticate()
        except AuthFailed as exc:
            g.api_actor = exc
    if isinstance(g.api_actor, AuthFailed):
        raise g.api_actor
    return g.api_actor


def _actor_or_none() -> Actor | None:
    if request.endpoint == "api.openapi":
        return None
    try:
        return current_api_actor()
    except AuthFailed:
        return None


def rate_limit_key() -> str:
    """Per token when the request authenticates, else per client address."""
    actor = _actor_or_none()
    if actor is not None and actor.token is not None:
        return f"token:{actor.token.id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def _valid(limit: str | None) -> str | None:
    if not limit:
        return None
    try:
        parse_many(limit)
    except ValueError:
        current_app.logger.warning("Ignoring a malformed rate limit: %r", limit)
        return None
    return limit


def rate_limit_value() -> str:
    """The token's own limit, else its organization's policy, else RATE_LIMIT_DEFAULT."""
    actor = _actor_or_none()
    if actor is None or actor.token is None:
        return current_app.config.get("API_UNAUTHENTICATED_RATE_LIMIT", UNAUTHENTICATED_RATE_LIMIT)
    return (
        _valid(actor.token.rate_limit)
        or _valid(actor.organization.rate_limit)
        or current_app.config["RATE_LIMIT_DEFAULT"]
    )
