"""The OpenAPI 3.1 document of /api/v1, generated from the models in schemas.py."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from flask import request
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from blueprints.api import schemas
from models import EVENT_TYPES, ROLES, SCOPES, TOKEN_ROLES, TOKEN_TYPES

REF = "#/components/schemas/{model}"
# Enums that pydantic writes inline (Literal types), each made one shared component, so a
# generator makes one TokenRole type instead of one per field.
ENUMS = {
    "Environment": ("sandbox", "production"),
    "TokenRole": TOKEN_ROLES,
    "Scope": SCOPES,
    "TokenType": TOKEN_TYPES,
    "TokenStatus": ("active", "inactive", "expired", "revoked"),
    "EventType": EVENT_TYPES,
    "DeliveryEventType": (*EVENT_TYPES, "ping"),
    "MemberRole": ROLES,
}
ENUM_DESCRIPTIONS = {
    "Environment": "Where a token acts: each environment has its own tokens and audit log.",
    "TokenRole": "What a token may do: viewer reads, writer also changes tokens, admin all.",
    "Scope": "One permission; a token's scopes narrow its role.",
    "TokenType": "What the token is for; a label only.",
    "TokenStatus": "Derived: revoked, else expired, else inactive (suspended), else active.",
    "EventType": "A webhook event type.",
    "DeliveryEventType": "A webhook event type, or ping (a test event).",
    "MemberRole": "A person's role in the organization, highest first.",
}
# The input role also takes writer's old name; the output role is always a TokenRole.
ROLE_WITH_ALIAS = (*TOKEN_ROLES, "recorder")
RATE_HEADERS = {
    "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
    "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
    "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
    # Not a rate header, but on every answer alike (blueprints/answer_headers.py).
    "X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
}
ERRORS = {
    "400": (
        "BadRequest",
        "validation_error, duplicate_name, token_limit_reached, webhook_limit_reached, or "
        "idempotency_mismatch (an Idempotency-Key reused with another request).",
    ),
    "401": (
        "Unauthorized",
        "missing_token, invalid_token, token_expired, token_revoked or token_inactive.",
    ),
    "403": ("Forbidden", "insufficient_scope or ip_not_allowed."),
    "404": ("NotFound", "not_found: no such thing in the token's organization and environment."),
    "405": ("MethodNotAllowed", "method_not_allowed."),
    "409": (
        "Conflict",
        "idempotency_in_progress: a retry with this Idempotency-Key while the first request "
        "is still being answered; retry shortly.",
    ),
    "413": ("PayloadTooLarge", "The body is larger than 1 MiB."),
    "415": ("UnsupportedMediaType", "Send JSON or a form (urlencoded or multipart)."),
    "429": ("RateLimited", "rate_limited; wait for the seconds in Retry-After."),
    "500": ("InternalError", "internal_error; never a stack trace."),
    "503": ("Unavailable", "unavailable; retry shortly."),
}


def _tidy(node: Any, *, in_properties: bool = False) -> Any:
    """What generators read best: no `"default": null` (openapi-typescript makes a field
    with a default required), no titles (noise in generated names), and each known enum as
    a `$ref` to its one component."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are field names, not keywords
        return {name: _tidy(value) for name, value in node.items()}
    node = {
        key: _tidy(value, in_properties=key == "properties")
        for key, value in node.items()
        if not (key == "default" and value is None)
        and not (key == "title" and isinstance(value, str))
    }
    values = tuple(node.get("enum", ()))
    if node.get("type") == "string" and values:
        rest = {k: v for k, v in node.items() if k not in ("enum", "type")}
        for name, members in ENUMS.items():
            if values == tuple(members):
                return {"$ref": REF.format(model=name), **rest}
        if values == ROLE_WITH_ALIAS:
            return {
                "anyOf": [
                    {"$ref": REF.format(model="TokenRole")},
                    {"const": "recorder", "type": "string", "description": "writer's old name"},
                ],
                **rest,
            }
    return node


def _without_defaults(node: Any, *, in_properties: bool = False) -> Any:
    """No `default` in the models: openapi-typescript makes a body field with a default
    required (role: "viewer" would be), so each default is stated in its description and
    applied by the server."""
    if isinstance(node, list):
        return [_without_defaults(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _without_defaults(value, in_properties=key == "properties" and not in_properties)
        for key, value in node.items()
        if in_properties or key != "default"
    }


# Answers that are another object plus a field or two: written as allOf that object, so
# generated code has one Token (and TokenWithSecret extends it), not two copies.
EXTENDS = {"TokenWithSecret": "Token", "WebhookWithSecret": "Webhook"}


def _extension(child: dict[str, Any], parent: dict[str, Any], name: str) -> dict[str, Any]:
    own = {k: v for k, v in child["properties"].items() if k not in parent["properties"]}
    extra: dict[str, Any] = {"type": "object", "properties": own, "required": sorted(own)}
    if "description" in child:
        extra["description"] = child["description"]
    return {"allOf": [{"$ref": REF.format(model=name)}, extra]}


def _enum_components() -> dict[str, Any]:
    return {
        name: {"type": "string", "enum": list(members), "description": ENUM_DESCRIPTIONS[name]}
        for name, members in ENUMS.items()
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


FORM_NOTE = (
    " The same fields are also accepted form-encoded (application/x-www-form-urlencoded, as "
    "Librato's curl examples send them): lists comma- or space-separated, an empty value "
    "means not sent, or null where null is allowed. The JSON body is the documented one; "
    "the form is described in `x-form-urlencoded`, which generators skip."
)


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """A JSON body. The form-encoded variant lives in an extension, not in `content`: a
    second media type makes openapi-python-client generate code that fails at import."""
    return {
        "required": required,
        "description": FORM_NOTE.strip(),
        "content": {"application/json": {"schema": _ref(model)}},
        "x-form-urlencoded": {
            "mediaType": "application/x-www-form-urlencoded",
            "schema": _form_schema(model),
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
PATCH_NOTE = (
    'A field not sent stays as it is (PUT and PATCH alike): `{"active": false}` suspends '
    "the token and leaves its expiry, allowlist and rate limit alone. An explicit null "
    "clears what can be cleared: expires_at (never expires, where the policy allows it), "
    "scopes (all the role allows), allowed_ips (anywhere), rate_limit (the policy's default)."
)


TAGS = [
    {"name": "tokens", "description": "The API tokens of the calling token's environment."},
    {"name": "audit", "description": "The audit log of the calling token's environment."},
    {"name": "members", "description": "The people of the organization and their roles."},
    {"name": "webhooks", "description": "Endpoints that receive signed event notices."},
    {"name": "leaks", "description": "Where secret scanners report leaked tokens."},
    {"name": "meta", "description": "The calling token, and this document."},
]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "1 to 255 printable ASCII characters of your choosing (a random UUID, "
    "say) that make a retry safe: the same "
    "key with the same body within 24 hours gets the first answer again, secret included; "
    "the same key with another body is 400 idempotency_mismatch, and a retry while the first "
    "is still running may be 409 idempotency_in_progress.",
}
IDEMPOTENT = ("409",)  # what an Idempotency-Key adds to an operation's answers


def _links(op_id: str, parameter: str, targets: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links from an answer carrying an `id` to the operations that take it (what
    schemathesis' stateful phase follows, and documentation for people)."""
    return {
        name: {
            "operationId": target,
            "parameters": {parameter: "$response.body#/id"},
            "description": f"The id of what {op_id} answered.",
        }
        for name, target in targets.items()
    }


TOKEN_LINKS = {
    "GetToken": "getToken",
    "UpdateToken": "updateToken",
    "RotateToken": "rotateToken",
    "GetTokenUsage": "getTokenUsage",
    "RevokeToken": "revokeToken",
}
WEBHOOK_LINKS = {
    "GetWebhook": "getWebhook",
    "UpdateWebhook": "updateWebhook",
    "ListWebhookDeliveries": "listWebhookDeliveries",
    "DeleteWebhook": "deleteWebhook",
}


def _operation(summary: str, op_id: str, responses: dict[str, Any], *, tag: str, **extra: Any):
    return {
        "tags": [tag],
        "summary": summary,
        "operationId": op_id,
        "responses": responses,
        **extra,
    }


def _created(description: str, model: type[BaseModel], links: dict[str, Any]) -> dict[str, Any]:
    response = _ok(
        description,
        model,
        Location={"description": "Its URL.", "schema": {"type": "string"}},
    )
    response["links"] = links
    return response


def _paths() -> dict[str, Any]:
    token_ok = _ok("The token.", schemas.Token)
    rotated = _ok("Rotated.", schemas.TokenWithSecret)
    rotated["links"] = _links("rotateToken", "token_id", TOKEN_LINKS)
    return {
        "/whoami": {
            "get": _operation(
                "The calling token, its organization, environment, role and scopes.",
                "whoami",
                {"200": _ok("Who is calling.", schemas.WhoAmI), **_errors(*AUTHENTICATED)},
                tag="meta",
            )
        },
        "/api_tokens": {
            "get": _operation(
                "List the tokens of the calling token's environment.",
                "listTokens",
                {"200": _ok("A page of tokens.", schemas.TokenList), **_errors(*ONE_TOKEN)},
                tag="tokens",
                parameters=_query_parameters(schemas.TokenListQuery),
            ),
            "post": _operation(
                "Create a token; the answer carries its secret, once.",
                "createToken",
                {
                    "201": _created(
                        "Created. `token` is the secret: store it now.",
                        schemas.TokenWithSecret,
                        _links("createToken", "token_id", TOKEN_LINKS),
                    ),
                    **_errors(*AUTHENTICATED, *WITH_BODY, *IDEMPOTENT),
                },
                tag="tokens",
                parameters=[IDEMPOTENCY_KEY],
                requestBody=_body(schemas.TokenCreate),
            ),
            "delete": _operation(
                "Revoke the live token with this name.",
                "revokeTokenByName",
                {"204": _ok("Revoked.", None), **_errors(*ONE_TOKEN)},
                tag="tokens",
                parameters=_query_parameters(schemas.DeleteByNameQuery),
            ),
        },
        "/api_tokens/{token_id}": {
            "parameters": [TOKEN_ID],
            "get": _operation(
                "One token's metadata.",
                "getToken",
                {"200": token_ok, **_errors(*ONE_TOKEN)},
                tag="tokens",
            ),
            "put": _operation(
                UPDATE_SUMMARY,
                "replaceToken",
                {"200": token_ok, **_errors(*ONE_TOKEN, *WITH_BODY)},
                tag="tokens",
                description=PATCH_NOTE,
                requestBody=_body(schemas.TokenUpdate, required=False),
            ),
            "patch": _operation(
                UPDATE_SUMMARY,
                "updateToken",
                {"200": token_ok, **_errors(*ONE_TOKEN, *WITH_BODY)},
                tag="tokens",
                description=PATCH_NOTE,
                requestBody=_body(schemas.TokenUpdate, required=False),
            ),
            "delete": _operation(
                "Revoke the token, for good.",
                "revokeToken",
                {"204": _ok("Revoked.", None), **_errors(*ONE_TOKEN)},
                tag="tokens",
            ),
        },
        "/api_tokens/{token_id}/rotate": {
            "parameters": [TOKEN_ID],
            "post": _operation(
                "A new secret for the token; the old one works for the grace period.",
                "rotateToken",
                {"200": rotated, **_errors(*ONE_TOKEN, *WITH_BODY, *IDEMPOTENT)},
                tag="tokens",
                parameters=[IDEMPOTENCY_KEY],
                requestBody=_body(schemas.TokenRotate, required=False),
            ),
        },
        "/api_tokens/{token_id}/usage": {
            "parameters": [TOKEN_ID],
            "get": _operation(
                "The token's requests per day, oldest first, today last (UTC days), as its "
                "page's chart shows them; counted within a minute.",
                "getTokenUsage",
                {"200": _ok("Requests per day.", schemas.TokenUsage), **_errors(*ONE_TOKEN)},
                tag="tokens",
                parameters=_query_parameters(schemas.UsageQuery),
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
                tag="audit",
                parameters=_query_parameters(schemas.AuditListQuery),
            )
        },
        "/members": {
            "get": _operation(
                "The organization's members and their roles (scope members:read).",
                "listMembers",
                {"200": _ok("A page of members.", schemas.MemberList), **_errors(*AUTHENTICATED)},
                tag="members",
                parameters=_query_parameters(schemas.MemberListQuery),
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
                tag="leaks",
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
                tag="webhooks",
            ),
            "post": _operation(
                "Add an endpoint; the answer carries its signing secret, once." + WEBHOOKS_NOTE,
                "createWebhook",
                {
                    "201": _created(
                        "Created. `secret` signs its deliveries: store it now.",
                        schemas.WebhookWithSecret,
                        _links("createWebhook", "webhook_id", WEBHOOK_LINKS),
                    ),
                    **_errors(*AUTHENTICATED, *WITH_BODY),
                },
                tag="webhooks",
                requestBody=_json_body(schemas.WebhookCreate),
            ),
        },
        "/webhooks/{webhook_id}": {
            "parameters": [WEBHOOK_ID],
            "get": _operation(
                "One endpoint." + WEBHOOKS_NOTE,
                "getWebhook",
                {"200": _ok("The endpoint.", schemas.Webhook), **_errors(*ONE_TOKEN)},
                tag="webhooks",
            ),
            "patch": _operation(
                "Change what is sent: url, events, enabled." + WEBHOOKS_NOTE,
                "updateWebhook",
                {
                    "200": _ok("The endpoint.", schemas.Webhook),
                    **_errors(*ONE_TOKEN, *WITH_BODY),
                },
                tag="webhooks",
                requestBody=_json_body(schemas.WebhookUpdate, required=False),
            ),
            "delete": _operation(
                "Delete the endpoint; its pending deliveries are not sent." + WEBHOOKS_NOTE,
                "deleteWebhook",
                {"204": _ok("Deleted.", None), **_errors(*ONE_TOKEN)},
                tag="webhooks",
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
                tag="webhooks",
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
                tag="meta",
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
    models_ = _without_defaults(_tidy(definitions["$defs"], in_properties=True))
    for child, parent in EXTENDS.items():
        models_[child] = _extension(models_[child], models_[parent], parent)
    return {
        "schemas": {**_enum_components(), **models_},
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
            "X-Request-Id": {
                "required": True,
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,200}$"},
                "description": "This request's id: the client's own X-Request-Id when it is "
                "1-200 of A-Z a-z 0-9 . _ : - (and not a token), else a new one. It is in the "
                "access log and in the audit events the request caused.",
            },
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
        "paths": _tidy(_paths(), in_properties=True),
        "webhooks": _tidy(_webhooks(), in_properties=True),
        "tags": TAGS,
        "components": _components(),
    }
