"""The OpenAPI 3.1 document of /api/v1, generated from the models in schemas.py."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from flask import request
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from blueprints.api import schemas

REF = "#/components/schemas/{model}"
RATE_HEADERS = {
    "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
    "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
    "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
}
ERRORS = {
    "400": (
        "BadRequest",
        "validation_error, duplicate_name, token_limit_reached or webhook_limit_reached.",
    ),
    "401": (
        "Unauthorized",
        "missing_token, invalid_token, token_expired, token_revoked or token_inactive.",
    ),
    "403": ("Forbidden", "insufficient_scope or ip_not_allowed."),
    "404": ("NotFound", "not_found: no such thing in the token's organization and environment."),
    "405": ("MethodNotAllowed", "method_not_allowed."),
    "413": ("PayloadTooLarge", "The body is larger than 1 MiB."),
    "415": ("UnsupportedMediaType", "Send JSON or a form (urlencoded or multipart)."),
    "429": ("RateLimited", "rate_limited; wait for the seconds in Retry-After."),
    "500": ("InternalError", "internal_error; never a stack trace."),
    "503": ("Unavailable", "unavailable; retry shortly."),
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Query strings and forms have no null: drop it from an optional field's schema."""
    schema = copy.deepcopy(schema)
    options = schema.pop("anyOf", None)
    if options is not None:
        options = [o for o in options if o.get("type") != "null"]
        if len(options) == 1:
            schema.update(options[0])
        else:
            schema["anyOf"] = options
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _without_null(prop),
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


def _form_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    schema["properties"] = {k: _without_null(v) for k, v in schema["properties"].items()}
    return schema


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {
            "application/json": {"schema": _ref(model)},
            "application/x-www-form-urlencoded": {"schema": _form_schema(model)},
        },
    }


def _ok(description: str, model: type[BaseModel] | None, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "headers": {**RATE_HEADERS}}
    response["headers"].update(headers)
    if model is not None:
        response["content"] = {"application/json": {"schema": _ref(model)}}
    return response


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in sorted(codes)}


TOKEN_ID = {
    "name": "token_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The token's public id.",
}
# What any request may be answered, before a view runs: a malformed chunked body (400), a
# method the path does not take, a body over 1 MiB (even on a GET), the limit, a bug.
ANY = ("400", "405", "413", "429", "500")
# With a token: its failures (401), a scope it lacks or an address outside its allowlist
# (403), a query parameter the endpoint does not take (400), the database away (503).
AUTHENTICATED = (*ANY, "401", "403", "503")
ONE_TOKEN = (*AUTHENTICATED, "404")
WITH_BODY = ("415",)  # only views that read a body care what it is
WEBHOOK_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The endpoint's public id (we_...).",
}
WEBHOOKS_NOTE = " Needs an admin-role token (all scopes) of an owner or admin."


def _json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


UPDATE_SUMMARY = "Change what is sent: name, active, role, scopes, expiry, allowlist, rate limit."


def _operation(summary: str, op_id: str, responses: dict[str, Any], **extra: Any):
    return {"summary": summary, "operationId": op_id, "responses": responses, **extra}


def _paths() -> dict[str, Any]:
    token_ok = _ok("The token.", schemas.Token)
    return {
        "/whoami": {
            "get": _operation(
                "The calling token, its organization, environment, role and scopes.",
                "whoami",
                {"200": _ok("Who is calling.", schemas.WhoAmI), **_errors(*AUTHENTICATED)},
            )
        },
        "/api_tokens": {
            "get": _operation(
                "List the tokens of the calling token's environment.",
                "listTokens",
                {"200": _ok("A page of tokens.", schemas.TokenList), **_errors(*ONE_TOKEN)},
                parameters=_query_parameters(schemas.TokenListQuery),
            ),
            "post": _operation(
                "Create a token; the answer carries its secret, once.",
                "createToken",
                {
                    "201": _ok(
                        "Created. `token` is the secret: store it now.",
                        schemas.TokenWithSecret,
                        Location={
                            "description": "The new token's URL.",
                            "schema": {"type": "string"},
                        },
                    ),
                    **_errors(*AUTHENTICATED, *WITH_BODY),
                },
                requestBody=_body(schemas.TokenCreate),
            ),
            "delete": _operation(
                "Revoke the live token with this name.",
                "revokeTokenByName",
                {"204": _ok("Revoked.", None), **_errors(*ONE_TOKEN)},
                parameters=_query_parameters(schemas.DeleteByNameQuery),
            ),
        },
        "/api_tokens/{token_id}": {
            "parameters": [TOKEN_ID],
            "get": _operation(
                "One token's metadata.",
                "getToken",
                {"200": token_ok, **_errors(*ONE_TOKEN)},
            ),
            "put": _operation(
                UPDATE_SUMMARY,
                "replaceToken",
                {"200": token_ok, **_errors(*ONE_TOKEN, *WITH_BODY)},
                requestBody=_body(schemas.TokenUpdate, required=False),
            ),
            "patch": _operation(
                UPDATE_SUMMARY,
                "updateToken",
                {"200": token_ok, **_errors(*ONE_TOKEN, *WITH_BODY)},
                requestBody=_body(schemas.TokenUpdate, required=False),
            ),
            "delete": _operation(
                "Revoke the token, for good.",
                "revokeToken",
                {"204": _ok("Revoked.", None), **_errors(*ONE_TOKEN)},
            ),
        },
        "/api_tokens/{token_id}/rotate": {
            "parameters": [TOKEN_ID],
            "post": _operation(
                "A new secret for the token; the old one works for the grace period.",
                "rotateToken",
                {
                    "200": _ok("Rotated.", schemas.TokenWithSecret),
                    **_errors(*ONE_TOKEN, *WITH_BODY),
                },
                requestBody=_body(schemas.TokenRotate, required=False),
            ),
        },
        "/audit_events": {
            "get": _operation(
                "The audit events of the calling token's environment, newest first.",
                "listAuditEvents",
                {
                    "200": _ok("A page of events.", schemas.AuditEventList),
                    **_errors(*ONE_TOKEN),  # 404: a starting_after that is not in the list
                },
                parameters=_query_parameters(schemas.AuditListQuery),
            )
        },
        "/leaks": {
            "post": _operation(
                "Report leaked tokens (for secret scanners; no authentication). "
                "Live matches are revoked; the answer is counts only.",
                "reportLeaks",
                {
                    "200": _ok("Received.", schemas.LeakReportResult),
                    **_errors(*ANY, *WITH_BODY, "503"),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [_ref(m) for m in schemas.LEAK_REPORT_SHAPES]}
                        }
                    },
                },
                security=[],
            )
        },
        "/webhooks": {
            "get": _operation(
                "The organization's webhook endpoints." + WEBHOOKS_NOTE,
                "listWebhooks",
                {"200": _ok("The endpoints.", schemas.WebhookList), **_errors(*AUTHENTICATED)},
            ),
            "post": _operation(
                "Add an endpoint; the answer carries its signing secret, once." + WEBHOOKS_NOTE,
                "createWebhook",
                {
                    "201": _ok(
                        "Created. `secret` signs its deliveries: store it now.",
                        schemas.WebhookWithSecret,
                        Location={
                            "description": "The new endpoint's URL.",
                            "schema": {"type": "string"},
                        },
                    ),
                    **_errors(*AUTHENTICATED, *WITH_BODY),
                },
                requestBody=_json_body(schemas.WebhookCreate),
            ),
        },
        "/webhooks/{webhook_id}": {
            "parameters": [WEBHOOK_ID],
            "get": _operation(
                "One endpoint." + WEBHOOKS_NOTE,
                "getWebhook",
                {"200": _ok("The endpoint.", schemas.Webhook), **_errors(*ONE_TOKEN)},
            ),
            "patch": _operation(
                "Change what is sent: url, events, enabled." + WEBHOOKS_NOTE,
                "updateWebhook",
                {
                    "200": _ok("The endpoint.", schemas.Webhook),
                    **_errors(*ONE_TOKEN, *WITH_BODY),
                },
                requestBody=_json_body(schemas.WebhookUpdate, required=False),
            ),
            "delete": _operation(
                "Delete the endpoint; its pending deliveries are not sent." + WEBHOOKS_NOTE,
                "deleteWebhook",
                {"204": _ok("Deleted.", None), **_errors(*ONE_TOKEN)},
            ),
        },
        "/webhooks/{webhook_id}/deliveries": {
            "parameters": [WEBHOOK_ID],
            "get": _operation(
                "The endpoint's newest deliveries." + WEBHOOKS_NOTE,
                "listWebhookDeliveries",
                {
                    "200": _ok("Deliveries, newest first.", schemas.WebhookDeliveryList),
                    **_errors(*ONE_TOKEN),
                },
            ),
        },
        "/openapi.json": {
            "get": _operation(
                "This document. No authentication.",
                "openapi",
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "headers": {**RATE_HEADERS},
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(*ANY),
                },
                security=[],
            )
        },
    }


def _webhooks() -> dict[str, Any]:
    """What Keysmith POSTs to an endpoint, one entry per event type (docs/api.md)."""
    signature = {
        "name": "Keysmith-Signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": r"^t=\d+(,v1=[0-9a-f]{64})+$"},
        "description": 't=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">; a second v1 '
        "while a rolled secret overlaps. Refuse a t more than 5 minutes away.",
    }
    return {
        event_type: {
            "post": {
                "summary": f"The {event_type} event.",
                "operationId": f"{event_type.replace('.', '_')}_event",
                "parameters": [signature],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(model)}},
                },
                "responses": {
                    "2XX": {"description": "Received. Anything else is retried for 3 days."}
                },
                "security": [],
            }
        }
        for event_type, model in schemas.EVENT_MODELS.items()
    }


@cache
def _components() -> dict[str, Any]:
    models = [(m, "validation") for m in schemas.REQUEST_MODELS] + [
        (m, "serialization") for m in schemas.RESPONSE_MODELS
    ]
    _, definitions = models_json_schema(models, ref_template=REF)
    rate_header = {"schema": {"type": "integer"}}
    return {
        "schemas": definitions["$defs"],
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The token."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "basic": {
                "type": "http",
                "scheme": "basic",
                "description": "Any username; the token is the password.",
            },
        },
        "headers": {
            "X-RateLimit-Limit": {**rate_header, "description": "Requests allowed per window."},
            "X-RateLimit-Remaining": {**rate_header, "description": "Requests left."},
            "X-RateLimit-Reset": {**rate_header, "description": "When it resets (Unix time)."},
            "Retry-After": {**rate_header, "description": "Seconds to wait."},
        },
        "responses": {
            name: {
                "description": description,
                "headers": {
                    **RATE_HEADERS,
                    **(
                        {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
                        if status == "429"
                        else {}
                    ),
                },
                "content": {"application/json": {"schema": _ref(schemas.Error)}},
            }
            for status, (name, description) in ERRORS.items()
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keysmith API",
            "version": "1",
            "description": "Manage a team's API tokens and webhooks and read its audit log. "
            "Authenticate with the token itself. See docs/api.md.",
        },
        "servers": [{"url": request.url_root.rstrip("/") + "/api/v1"}],
        "security": [{"bearer": []}, {"apiKey": []}, {"basic": []}],
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": _components(),
    }
