"""The endpoints of SPEC §4. Each loads and authorises through the token service, calls one
service function, commits once, and answers JSON built from the models in schemas.py."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pydantic_core
import sqlalchemy as sa
from flask import Response, current_app, jsonify, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import UnsupportedMediaType

from blueprints.api import bp, schemas
from blueprints.api.auth import current_api_actor, presented_secret
from blueprints.api.idempotency import commit_answer, idempotent
from extensions import db
from models import ApiToken, AuditEvent, WebhookDelivery, WebhookEndpoint, utcnow
from models.token import status_of
from services import audit, leaks, token_list, webhooks
from services import members as member_service
from services import tokens as token_service
from services.actor import Actor
from services.errors import DomainError, Forbidden, NotFound, ValidationFailed

FORM_TYPES = ("application/x-www-form-urlencoded",)  # what the document lists
LIST_FIELDS = ("scopes", "allowed_ips")
# What a change may set to null: never expires, all of the role, anywhere, the default.
NULLABLE_CHANGES = ("expires_at", "scopes", "allowed_ips", "rate_limit")
# In a form an empty value means "not set" (or, for expires_at, "never"); a name stays text.
KEEP_EMPTY = ("name",)


# ---------------------------------------------------------------- input

# Endpoints whose query string is a model of schemas.py; anywhere else a query is refused.
QUERY_ENDPOINTS = {"api.list_tokens", "api.revoke_token_by_name", "api.list_audit_events"}
QUERY_ENDPOINTS |= {"api.list_members", "api.get_token_usage"}
_MAY_TAKE_QUERY = QUERY_ENDPOINTS | {"api.openapi"}


@bp.before_request
def refuse_unknown_query_parameters() -> None:
    if not request.environ.get("QUERY_STRING"):
        return  # no query string, no parameters (without parsing one)
    if request.args and request.endpoint not in _MAY_TAKE_QUERY:
        raise ValidationFailed(
            "This endpoint takes no query parameters.",
            details={key[:100]: "Unknown query parameter." for key in list(request.args)[:20]},
        )


def _iso(value: datetime | None) -> str | None:
    # isoformat is faster than strftime; seconds, no offset: "2026-01-31T12:00:00Z".
    return value.isoformat(timespec="seconds")[:19] + "Z" if value else None


def _form_to_dict(form: MultiDict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        if key in LIST_FIELDS:
            data[key] = [s for v in values for s in v.replace(",", " ").split()]
        elif len(values) > 1:
            data[key] = values  # refused by the model: one value per field
        elif values[0] == "" and key not in KEEP_EMPTY:
            data[key] = None
        else:
            data[key] = values[0]
    return data


def is_json() -> bool:
    return request.mimetype == "application/json" or request.mimetype.endswith("+json")


def request_data(*, allow_list: bool = False, forms: bool = True) -> Any:
    """The body as a dict (or, with `allow_list`, a JSON list), from JSON or (with `forms`)
    a form; {} when there is no body."""
    if is_json():
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValidationFailed(
                "The body is not valid JSON.", details={"body": "Malformed JSON."}
            ) from None
        if _depth(data) > MAX_JSON_DEPTH:
            raise ValidationFailed(
                "The body nests too deeply.",
                details={"body": f"Nest at most {MAX_JSON_DEPTH} levels of objects and lists."},
            )
        if isinstance(data, list) and allow_list:
            return data
        if not isinstance(data, dict):
            wanted = "a JSON object or list" if allow_list else "a JSON object"
            raise ValidationFailed(details={"body": f"Send {wanted}."})
        return data
    if forms and request.mimetype in FORM_TYPES:
        return _form_to_dict(request.form)
    if not request.mimetype and not request.content_length and not request.get_data():
        return {}
    raise UnsupportedMediaType()


# No body of this API nests more than a few levels; anything deeper is refused before any
# recursive walk of it (a 600-deep list once made a RecursionError, a 500 and a 3,000-line
# traceback per request).
MAX_JSON_DEPTH = 16


def _depth(data: Any) -> int:
    """How deeply `data` nests, counted without recursion (stops once past the limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children)
    return deepest


# Endpoints that take no token, or that only read: a previous secret may call them.
PUBLIC_ENDPOINTS = {"api.openapi", "api.report_leaks"}
READ_METHODS = ("GET", "HEAD", "OPTIONS")


@bp.before_request
def previous_secret_reads_only() -> None:
    """SPEC §2: a previous secret still inside its rotation grace reads, and nothing else,
    on every endpoint (the token service refuses it too, for each change it makes)."""
    if request.method in READ_METHODS or request.endpoint in PUBLIC_ENDPOINTS:
        return
    if request.endpoint is None or presented_secret() is None:
        return  # no route (404/405) or no token (401): the view or handler answers
    try:
        actor = current_api_actor()
    except DomainError:
        return  # the view answers the same 401/403 when it authenticates
    if actor.previous_secret:
        message = token_service.READ_ONLY_MESSAGE
        raise Forbidden(message, details={"previous_secret": message})


def query_data() -> dict[str, Any]:
    return {key: values if len(values) > 1 else values[0] for key, values in request.args.lists()}


def require_scope(actor: Actor, scope: str) -> None:
    if not actor.has_scope(scope):
        raise Forbidden(f"This token lacks the {scope} permission.")


# ---------------------------------------------------------------- output


# What token_json reads, in this order; a list loads these as plain rows (no ORM object).
TOKEN_FIELDS = (
    "id", "name", "environment", "role", "scopes", "type", "active", "prefix", "created_at",
    "updated_at", "expires_at", "last_used_at", "last_used_ip", "revoked_at", "created_by_label",
    "created_by_token_id", "allowed_ips", "rate_limit",
)  # fmt: skip
LIST_COLUMNS = tuple(ApiToken.__table__.c[name] for name in TOKEN_FIELDS)
_token_values = operator.attrgetter(*TOKEN_FIELDS)


def token_json(token: Any, secret: str | None = None) -> dict[str, Any]:
    """A token (or its verification snapshot) as schemas.Token's fields, with the secret
    when it was just made."""
    fields = _token_fields(_token_values(token), utcnow(), tokens_href())
    if secret is not None:
        fields["token"] = secret
    return fields


def tokens_json(rows: Any) -> list[dict[str, Any]]:
    """Rows of LIST_COLUMNS as schemas.Token's fields: plain dicts, no model per row, so a
    list of 100 costs little more than one (issue 17); tests hold them to the document."""
    now, href = utcnow(), tokens_href()
    return [_token_fields(row, now, href) for row in rows]


def _token_fields(values: Any, now: datetime, href: str) -> dict[str, Any]:
    (token_id, name, environment, role, scopes, type_, active, prefix, created_at, updated_at,
     expires_at, last_used_at, last_used_ip, revoked_at, created_by_label, created_by_token_id,
     allowed_ips, rate_limit) = values  # fmt: skip
    return {
        "id": token_id,
        "name": name,
        "environment": environment,
        "role": role,
        "scopes": list(scopes or ()),
        "type": type_,
        "active": active,
        "status": status_of(revoked_at, expires_at, active, now),
        "prefix": prefix,
        "created_at": _iso(created_at),
        "updated_at": _iso(updated_at),
        "expires_at": _iso(expires_at),
        "last_used_at": _iso(last_used_at),
        "last_used_ip": last_used_ip,
        "revoked_at": _iso(revoked_at),
        "created_by": created_by_label,
        "created_by_type": "token" if created_by_token_id is not None else "user",
        "allowed_ips": list(allowed_ips) if allowed_ips else None,
        "rate_limit": rate_limit,
        "href": href + token_id,
    }


_HREFS = "keysmith_tokens_href"
_HREFS_KEPT = 64


def tokens_href() -> str:
    """Where tokens live: a token's href is this and its id (url_for once, not per row).

    It depends only on the app and on the scheme, host and script root the request came to,
    so it is kept per app for each of those (a few: PublicOrigin answers only our hosts),
    rather than built by url_for on every answer that shows a token (whoami among them)."""
    environ = request.environ
    key = (environ.get("wsgi.url_scheme"), environ.get("HTTP_HOST"), environ.get("SCRIPT_NAME"))
    kept = current_app.extensions.setdefault(_HREFS, {})
    href = kept.get(key)
    if href is None:
        # get_token's route is list_tokens' plus "/<token_id>" (ids are URL-safe).
        href = url_for("api.list_tokens", _external=True) + "/"
        if len(kept) >= _HREFS_KEPT:
            kept.clear()
        kept[key] = href
    return href


def event_json(event: AuditEvent) -> dict[str, Any]:
    """schemas.AuditEvent's fields as a plain dict (no model per row of a list)."""
    return {
        "id": event.id,
        "action": event.action,
        "actor": {"type": event.actor_type, "label": event.actor_label},
        "environment": event.environment,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_label": event.target_label,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "details": dict(event.details or {}),
        "request_id": event.request_id,
        "created_at": _iso(event.created_at),
    }


def _count(query: sa.Select) -> int:
    subquery = query.order_by(None).subquery()
    return db.session.scalar(sa.select(sa.func.count()).select_from(subquery)) or 0


def page_of(
    query: sa.Select,
    unfiltered: sa.Select,
    offset: int,
    length: int,
    *,
    plain: bool = False,
    after: sa.ColumnElement[bool] | None = None,
    filtered: bool = True,
    stored_total: int | None = None,
):
    """One page of `query` with Librato's `query` envelope and `has_more`; `plain`: rows of
    its columns, not ORM objects; `after` is the keyset condition of a `starting_after`
    cursor (no OFFSET scan however deep)."""
    page = query if after is None else query.where(after)  # an offset counts from the cursor
    page = page.offset(offset).limit(length + 1)
    rows = list(db.session.connection().execute(page) if plain else db.session.scalars(page))
    has_more = len(rows) > length
    rows = rows[:length]
    total = _count(unfiltered) if stored_total is None else stored_total
    envelope = {
        "found": _count(query) if filtered else total,
        "length": len(rows),
        "offset": offset,
        "total": total,
        "has_more": has_more,
    }
    return rows, envelope


def with_next_link(payload: dict[str, Any], rows: list[Any], *, cursor: bool = True) -> Response:
    """The list as JSON, with `Link: <…starting_after=last id>; rel="next"` when more follow
    (without `cursor`, a list that pages by offset alone: `<…offset=next>`)."""
    response = json_response(payload)
    if payload["query"]["has_more"] and rows:
        args = request.args.to_dict()
        if cursor:
            args.pop("offset", None)
            args["starting_after"] = str(rows[-1].id)
        else:
            args["offset"] = str(payload["query"]["offset"] + len(rows))
        url = url_for(request.endpoint, _external=True, **args)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


def _cursor_row(query: sa.Select, model: Any, cursor: object) -> Any:
    row = db.session.scalar(query.where(model.id == cursor).order_by(None))
    if row is None:  # like any id that is not in the token's organization and environment
        message = "starting_after names nothing in this list (another environment's, perhaps)."
        raise NotFound(message, details={"starting_after": message})
    return row


def json_response(payload: Any, status: int = 200) -> Response:
    """jsonify's answer, encoded by pydantic-core (a few times faster for long lists)."""
    return Response(pydantic_core.to_json(payload), status, mimetype="application/json")


def with_secret(payload: dict[str, Any], status: int) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- endpoints


@bp.get("/whoami")
def whoami():
    actor = current_api_actor()
    token = actor.token
    assert token is not None
    # schemas.WhoAmI's fields, as a plain dict (no model to build on the hottest path).
    return json_response(
        {
            "token": token_json(token),
            "organization": {"id": actor.organization.id, "name": actor.organization.name},
            "environment": token.environment,
            "role": token.role,
            "effective_role": token_service.effective_role(actor),
            "scopes": sorted(actor.scopes),
            "created_by": token.created_by_label,
            "created_by_type": token.created_by_type,
            "previous_secret": actor.previous_secret,
        }
    )


@bp.get("/api_tokens")
def list_tokens():
    actor = current_api_actor()
    require_scope(actor, "tokens:read")
    params = schemas.parse(schemas.TokenListQuery, query_data())
    unfiltered = token_service.tokens_of(actor.organization, actor.environment)
    # Newest first, ties by id descending too, so a cursor is one (created_at, id) range.
    query = unfiltered.order_by(None).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if params.name is not None:
        query = query.where(ApiToken.name == params.name)
    if params.active is not None:
        query = query.where(ApiToken.active.is_(params.active))
    if params.status is not None:
        query = token_service.with_status(query, params.status, utcnow())
    if params.role is not None:
        query = query.where(ApiToken.role == token_service.normalize_role(params.role))
    if params.type is not None:
        query = query.where(ApiToken.type == params.type)
    after = None
    if params.starting_after is not None:
        # The rows strictly after the cursor's in the list's order.
        mark = _cursor_row(unfiltered, ApiToken, params.starting_after)
        after = sa.tuple_(ApiToken.created_at, ApiToken.id) < sa.tuple_(mark.created_at, mark.id)
    filtered = any(
        value is not None
        for value in (params.name, params.active, params.status, params.role, params.type)
    )
    total = db.session.scalar(
        sa.select(token_list.stored_count(actor.organization, actor.environment))
    )
    rows, envelope = page_of(
        query.with_only_columns(*LIST_COLUMNS),
        unfiltered,
        params.offset,
        params.length,
        plain=True,
        after=after,
        filtered=filtered,
        stored_total=int(total or 0),
    )
    return with_next_link({"query": envelope, "api_tokens": tokens_json(rows)}, rows)


@bp.get("/api_tokens/<token_id>")
def get_token(token_id: str):
    actor = current_api_actor()
    require_scope(actor, "tokens:read")
    token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    return jsonify(token_json(token))


def _expiry(body: schemas.TokenCreate) -> Any:
    if body.expires_in_days is not None:
        return token_service.expiry_from_days(body.expires_in_days)
    if "expires_at" in body.model_fields_set:
        return body.expires_at  # an explicit null: never, where the policy allows it
    return token_service.UNSET  # the default: 90 days, never beyond the calling token's


def _new_expiry(body: schemas.TokenRotate) -> Any:
    """A rotation's new expiry, if it asks for one; UNSET keeps the token's."""
    if body.expires_in_days is None and "expires_at" not in body.model_fields_set:
        return token_service.UNSET
    return _expiry(body)  # type: ignore[arg-type]


def _given(body: schemas.TokenCreate, field: str) -> Any:
    """A field as sent (null included); UNSET when absent, so the service's default (never
    wider than the calling token) applies."""
    return getattr(body, field) if field in body.model_fields_set else token_service.UNSET


@bp.post("/api_tokens")
@idempotent
def create_token():
    actor = current_api_actor()
    token_service.require_may_create(actor)  # permission first: no policy in messages
    body = schemas.parse(
        schemas.TokenCreate,
        request_data(),
        checks=schemas.Checks(actor.organization),
        strict=is_json(),
    )
    token, secret = token_service.create_token(
        actor.organization,
        actor,
        name=body.name,
        environment=body.environment or actor.environment,
        role=body.role,
        scopes=body.scopes or [],
        type=body.type,
        expires_at=_expiry(body),
        allowed_ips=_given(body, "allowed_ips"),
        rate_limit=_given(body, "rate_limit"),
    )
    response = with_secret(token_json(token, secret), 201)
    response.headers["Location"] = url_for("api.get_token", token_id=token.id, _external=True)
    return commit_answer(response)  # made before the commit: nothing after it can fail it


@bp.route("/api_tokens/<token_id>", methods=["PUT", "PATCH"])
def update_token(token_id: str):
    actor = current_api_actor()
    token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    token_service.require_manage(actor, token)
    body = schemas.parse(
        schemas.TokenUpdate,
        request_data(),
        checks=schemas.Checks(actor.organization, token),
        strict=is_json(),
    )
    changes = {
        field: getattr(body, field)
        for field in body.model_fields_set
        if getattr(body, field) is not None or field in NULLABLE_CHANGES
    }
    token_service.update_token(token, actor, **changes)
    db.session.commit()
    return jsonify(token_json(token))


@bp.delete("/api_tokens/<token_id>")
def revoke_token(token_id: str):
    actor = current_api_actor()
    token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    token_service.revoke_token(token, actor)
    db.session.commit()
    return "", 204


@bp.delete("/api_tokens")
def revoke_token_by_name():
    actor = current_api_actor()
    params = schemas.parse(schemas.DeleteByNameQuery, query_data())
    token = token_service.find_live_by_name(actor.organization, actor.environment, params.name)
    token_service.revoke_token(token, actor)
    db.session.commit()
    return "", 204


@bp.post("/api_tokens/<token_id>/rotate")
@idempotent
def rotate_token(token_id: str):
    actor = current_api_actor()
    token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    token_service.require_manage(actor, token)
    body = schemas.parse(schemas.TokenRotate, request_data(), strict=is_json())
    secret = token_service.rotate_token(
        token, actor, grace_seconds=body.grace_period_seconds, expires_at=_new_expiry(body)
    )
    return commit_answer(with_secret(token_json(token, secret), 200))


@bp.get("/audit_events")
def list_audit_events():
    actor = current_api_actor()
    require_scope(actor, "audit:read")
    params = schemas.parse(schemas.AuditListQuery, query_data())
    unfiltered = audit.events_of(actor.organization, environment=actor.environment)
    query = audit.events_of(
        actor.organization,
        environment=actor.environment,
        action=params.action,
        target_id=params.target_id,
    )
    after = None
    if params.starting_after is not None:
        mark = _cursor_row(unfiltered, AuditEvent, params.starting_after)
        after = sa.tuple_(AuditEvent.created_at, AuditEvent.id) < sa.tuple_(
            mark.created_at, mark.id
        )
    filtered = params.action is not None or params.target_id is not None
    rows, envelope = page_of(
        query, unfiltered, params.offset, params.length, after=after, filtered=filtered
    )
    return with_next_link({"query": envelope, "audit_events": [event_json(e) for e in rows]}, rows)


@bp.post("/leaks")
def report_leaks():
    """Secret scanners report strings that look like our tokens; no authentication.

    `{"tokens": [...]}`, a bare list of the strings, or GitHub's list of matches. Live
    matches are revoked. The answer is counts only, never which string matched.
    """
    reported = schemas.leaked_secrets(request_data(allow_list=True, forms=False))
    report = leaks.report_leaks(
        reported, ip=request.remote_addr, user_agent=request.user_agent.string or None
    )
    db.session.commit()
    return jsonify(schemas.LeakReportResult(**asdict(report)).model_dump())


# ---------------------------------------------------------------- webhooks (SPEC §9)

DELIVERIES_LISTED = 100


def webhook_json(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    fields = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "status": "failing"
        if endpoint.failing_since
        else ("enabled" if endpoint.enabled else "disabled"),
        "failing_since": _iso(endpoint.failing_since),
        "created_at": _iso(endpoint.created_at),
        "updated_at": _iso(endpoint.updated_at),
        "created_by": endpoint.created_by_label,
        "href": url_for("api.get_webhook", webhook_id=endpoint.id, _external=True),
    }
    if secret is not None:
        return schemas.WebhookWithSecret(**fields, secret=secret).model_dump()
    return schemas.Webhook(**fields).model_dump()


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return schemas.WebhookDelivery(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event.type,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_duration_ms=delivery.last_duration_ms,
        last_error=delivery.last_error,
        next_attempt_at=_iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        last_attempt_at=_iso(delivery.last_attempt_at),
        delivered_at=_iso(delivery.delivered_at),
        created_at=_iso(delivery.created_at),
    ).model_dump()


def webhook_manager() -> Actor:
    """The caller, if it may manage webhooks: an admin-role token (all scopes) of an owner
    or admin. Checked before anything else, so nobody else learns what exists."""
    actor = current_api_actor()
    if not webhooks.can_manage(actor):
        raise Forbidden(
            "Webhooks need an admin-role token of an owner or admin.",
            details={"role": "admin"},
        )
    return actor


@bp.get("/webhooks")
def list_webhooks():
    actor = webhook_manager()
    endpoints = db.session.scalars(webhooks.endpoints_of(actor.organization))
    return jsonify({"webhooks": [webhook_json(e) for e in endpoints]})


@bp.post("/webhooks")
def create_webhook():
    actor = webhook_manager()
    body = schemas.parse(schemas.WebhookCreate, request_data(forms=False), strict=True)
    endpoint, secret = webhooks.create_endpoint(
        actor.organization, actor, url=body.url, events=body.events, enabled=body.enabled
    )
    db.session.commit()
    response = with_secret(webhook_json(endpoint, secret), 201)
    response.headers["Location"] = url_for(
        "api.get_webhook", webhook_id=endpoint.id, _external=True
    )
    return response


@bp.get("/webhooks/<webhook_id>")
def get_webhook(webhook_id: str):
    actor = webhook_manager()
    return jsonify(webhook_json(webhooks.get_endpoint_or_404(actor.organization, webhook_id)))


@bp.patch("/webhooks/<webhook_id>")
def update_webhook(webhook_id: str):
    actor = webhook_manager()
    body = schemas.parse(schemas.WebhookUpdate, request_data(forms=False), strict=True)
    endpoint = webhooks.get_endpoint_or_404(actor.organization, webhook_id)
    changes = {
        field: getattr(body, field)
        for field in body.model_fields_set
        if getattr(body, field) is not None
    }
    webhooks.update_endpoint(endpoint, actor, **changes)
    db.session.commit()
    return jsonify(webhook_json(endpoint))


@bp.delete("/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str):
    actor = webhook_manager()
    webhooks.delete_endpoint(webhooks.get_endpoint_or_404(actor.organization, webhook_id), actor)
    db.session.commit()
    return "", 204


@bp.get("/webhooks/<webhook_id>/deliveries")
def list_webhook_deliveries(webhook_id: str):
    actor = webhook_manager()
    endpoint = webhooks.get_endpoint_or_404(actor.organization, webhook_id)
    rows = db.session.scalars(webhooks.deliveries_of(endpoint).limit(DELIVERIES_LISTED))
    return jsonify({"deliveries": [delivery_json(d) for d in rows]})


@bp.get("/openapi.json")
def openapi():
    from blueprints.api.openapi import document

    return jsonify(document())


# ---------------------------------------------------------------- members and usage (issue 19)


@bp.get("/members")
def list_members():
    actor = current_api_actor()
    require_scope(actor, "members:read")
    params = schemas.parse(schemas.MemberListQuery, query_data())
    query = member_service.members_of(actor.organization)
    rows, envelope = page_of(query, query, params.offset, params.length)
    members = [
        schemas.Member(
            id=m.id,
            email=m.user.email,
            name=m.user.name,
            role=m.role,
            joined_at=_iso(m.created_at),
        ).model_dump()
        for m in rows
    ]
    return with_next_link({"query": envelope, "members": members}, rows, cursor=False)


@bp.get("/api_tokens/<token_id>/usage")
def get_token_usage(token_id: str):
    actor = current_api_actor()
    require_scope(actor, "tokens:read")
    token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    params = schemas.parse(schemas.UsageQuery, query_data())
    days = token_service.requests_per_day(token, days=params.days)
    return jsonify(
        schemas.TokenUsage(
            token_id=token.id,
            days=params.days,
            total=sum(count for _, count in days),
            usage=[schemas.UsageDay(date=day.isoformat(), requests=n) for day, n in days],
        ).model_dump()
    )
