"""GET /api/v1/openapi.json: an OpenAPI 3.1 document generated from the API's own models."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest
import schemathesis
from api_support import API, bearer, unreachable_database_app

from blueprints.api.schemas import NAME_PATTERN, SECRET_PATTERN
from services import secrets as token_secrets
from services.tokens import NAME_MAX

METHODS = {"get", "put", "patch", "post", "delete"}


@pytest.fixture
def app_config():
    # Every operation is sent several requests without a token within a second or two: more
    # than the per-address limit of unauthenticated requests allows (that limit has its tests).
    return {"API_UNAUTHENTICATED_RATE_LIMIT": "10000/minute"}


def _non_null(schema):
    """An optional field's schema without its `null` branch."""
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    assert len(options) == 1, schema
    return options[0]


def _document(client):
    response = client.get(f"{API}/openapi.json")  # no token needed
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_served_without_auth_and_is_openapi_3_1(client):
    doc = _document(client)
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": f"http://localhost{API}"}]
    assert doc["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "The token."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "Any username; the token is the password.",
        },
    }
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}, {"basic": []}]
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []


def test_every_route_and_method_of_the_api_is_documented(app, client):
    doc = _document(client)
    documented = {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(\w+)>", r"{\1}", rule.rule.removeprefix(API))
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _send(client, path, method, token_id="Q2t8mWz1aPq0LbXy", **kwargs):
    return client.open(f"{API}{path.replace('{token_id}', token_id)}", method=method, **kwargs)


def test_what_the_api_answers_a_failing_request_is_documented(client, make_org, make_token):
    """Each operation is sent the requests that fail before or around its own rules, and
    must answer as it says; every status it answers must be in its document."""
    org = make_org()
    target, _ = make_token(org, name="target", role="viewer")
    _, secret = make_token(org, name="caller")
    _, fenced = make_token(org, name="fenced", allowed_ips=["192.0.2.0/24"])
    doc = _document(client)
    for path, method, operation in _operations(doc):
        attempts = {"a body over 1 MiB": (413, {"data": b"x" * (1024 * 1024 + 1)})}
        if operation.get("security") != []:
            attempts |= {
                "no token": (401, {}),
                "an unknown query parameter": (400, {"query_string": {"colour": "red"}}),
                "a token used outside its allowlist": (403, {"headers": bearer(fenced)}),
            }
        if "requestBody" in operation:
            attempts["a text/plain body"] = (415, {"data": "x", "content_type": "text/plain"})
        for what, (status, kwargs) in attempts.items():
            if what != "no token":
                kwargs.setdefault("headers", bearer(secret))
            response = _send(client, path, method, target.id, **kwargs)
            where = f"{method.upper()} {path} with {what}"
            assert response.status_code == status, (where, response.get_data(as_text=True))
            assert str(status) in operation["responses"], f"{where}: {status} is not documented"


def test_every_operation_that_needs_the_database_documents_503(client, tmp_path):
    doc = _document(client)
    down = unreachable_database_app(tmp_path).test_client()
    secret = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    for path, method, operation in _operations(doc):
        response = _send(down, path, method, json={"tokens": [secret]}, headers=bearer(secret))
        expected = 200 if path == "/openapi.json" else 503
        assert response.status_code == expected, (method, path, response.get_data(as_text=True))
        assert str(expected) in operation["responses"], (method, path)


def test_every_operation_documents_its_errors_with_the_error_schema(client):
    doc = _document(client)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            codes = set(operation["responses"])
            assert {"400", "405", "413", "429", "500"} <= codes, (path, method)
            if operation.get("security") != []:  # unauthenticated: openapi.json, leaks
                assert {"401", "403", "503"} <= codes, (path, method)
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    name = response["$ref"].rsplit("/", 1)[-1]
                    content = doc["components"]["responses"][name]["content"]
                    assert content["application/json"]["schema"] == error_ref
    rotate = doc["paths"]["/api_tokens/{token_id}/rotate"]["post"]["responses"]
    assert "404" in rotate


def test_request_bodies_are_json_with_the_form_in_an_extension_and_refuse_unknown_fields(
    client, make_org, make_token
):
    """One media type per body: a second one (the form) makes openapi-python-client's
    create_token fail at import (NameError: Unset). The form is still accepted, and
    described where generators do not look."""
    doc = _document(client)
    schemas = doc["components"]["schemas"]
    for path, method, model in [
        ("/api_tokens", "post", "TokenCreate"),
        ("/api_tokens/{token_id}", "put", "TokenUpdate"),
        ("/api_tokens/{token_id}", "patch", "TokenUpdate"),
        ("/api_tokens/{token_id}/rotate", "post", "TokenRotate"),
    ]:
        body = doc["paths"][path][method]["requestBody"]
        assert set(body["content"]) == {"application/json"}
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        form = body["x-form-urlencoded"]
        assert form["mediaType"] == "application/x-www-form-urlencoded"
        assert set(form["schema"]["properties"]) == set(schemas[model]["properties"])
        assert "form-encoded" in body["description"]
        assert schemas[model]["additionalProperties"] is False
    _, secret = make_token(make_org(), name="caller", role="admin")
    created = client.post(
        f"{API}/api_tokens", data={"name": "from a form", "role": "writer"}, headers=bearer(secret)
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["role"] == "writer"
    assert set(schemas["TokenCreate"]["properties"]) == {
        "name", "role", "scopes", "type", "environment", "expires_at", "expires_in_days",
        "allowed_ips", "rate_limit",
    }  # fmt: skip
    assert schemas["TokenCreate"]["required"] == ["name"]


def test_the_list_parameters_are_documented_with_their_bounds(client):
    doc = _document(client)
    params = {p["name"]: p for p in doc["paths"]["/api_tokens"]["get"]["parameters"]}
    assert set(params) == {
        *("offset", "length", "starting_after", "name", "active", "status", "role", "type")
    }
    assert params["length"]["schema"]["maximum"] == 100
    events = doc["paths"]["/audit_events"]["get"]["parameters"]
    assert "starting_after" in {p["name"] for p in events}


def test_schemathesis_loads_every_operation(client):
    schema = schemathesis.openapi.from_dict(_document(client))
    results = list(schema.get_all_operations())
    assert len(results) == 20
    for result in results:
        result.ok()  # raises if an operation's definition is invalid


def test_the_document_validates_against_the_openapi_3_1_meta_schema(client):
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    errors = [error.message for error in OPENAPI_31_VALIDATOR.iter_errors(_document(client))]
    assert errors == []


def test_a_tokens_name_is_documented_with_its_bounds_and_pattern(client):
    schemas = _document(client)["components"]["schemas"]
    for model in ("TokenCreate", "TokenUpdate"):
        name = _non_null(schemas[model]["properties"]["name"])
        assert (name["minLength"], name["maxLength"], name["pattern"]) == (
            1,
            NAME_MAX,
            NAME_PATTERN,
        ), model


@pytest.mark.parametrize(
    "name, valid",
    [
        ("", False),
        ("   ", False),
        ("x" * NAME_MAX, True),
        ("x" * (NAME_MAX + 1), False),
        ("a\x00b", False),
        ("tab\there", False),
        ("\x85", False),
        (" ci deploy ", True),
        ("ada@example.com", False),
        ("deploy @ night", True),
        ("Déploiement 🔑", True),
    ],
)
def test_the_document_and_the_api_agree_on_what_a_name_is(
    client, make_org, make_token, name, valid
):
    """Drift between the schema and the rule it documents fails here, not in a client."""
    doc = _document(client)
    schema = {**doc["components"]["schemas"]["TokenCreate"], "components": doc["components"]}
    assert jsonschema_rs.Draft202012Validator(schema).is_valid({"name": name}) is valid
    _, secret = make_token(make_org(), name="caller")
    response = client.post(f"{API}/api_tokens", json={"name": name}, headers=bearer(secret))
    assert response.status_code == (201 if valid else 400), response.get_data(as_text=True)
    if not valid:
        assert set(response.get_json()["error"]["details"]) == {"name"}


def test_the_documented_email_pattern_is_the_services_own():
    from blueprints.api.schemas import EMAIL_LIKE_PATTERN
    from services.tokens import _EMAIL_LIKE

    assert _EMAIL_LIKE.pattern == EMAIL_LIKE_PATTERN


def _leak_report_validator(doc):
    body = doc["paths"]["/leaks"]["post"]["requestBody"]["content"]["application/json"]
    # The operation's schema, with the components its $refs point into.
    return jsonschema_rs.Draft202012Validator({**body["schema"], "components": doc["components"]})


def test_a_leak_report_is_documented_in_its_three_shapes_with_the_token_pattern(client):
    doc = _document(client)
    body = doc["paths"]["/leaks"]["post"]["requestBody"]["content"]["application/json"]
    assert [option["$ref"].rsplit("/", 1)[-1] for option in body["schema"]["oneOf"]] == [
        "LeakReport",
        "LeakList",
        "SecretScanningReport",
    ]
    schemas = doc["components"]["schemas"]
    for strings in (schemas["LeakReport"]["properties"]["tokens"], schemas["LeakList"]):
        assert (strings["minItems"], strings["maxItems"]) == (1, 100)
        assert strings["items"]["pattern"] == SECRET_PATTERN
        assert strings["items"]["maxLength"] == 200
    assert schemas["SecretScanningMatch"]["properties"]["token"]["pattern"] == SECRET_PATTERN
    assert schemas["SecretScanningMatch"]["required"] == ["token"]


@pytest.mark.parametrize(
    "report, valid",
    [
        ({"tokens": ["SECRET"]}, True),
        (["SECRET"], True),
        ([{"token": "SECRET", "type": "t", "url": "https://x", "source": "content"}], True),
        ({"tokens": ["SECRET\n"]}, False),
        (["xSECRET"], False),
        ([], False),
        (["SECRET"] * 101, False),
        ([{"token": "SECRET"}, "SECRET"], False),
        ([{"token": "SECRET", "colour": "blue"}], False),
        ("SECRET", False),
    ],
)
def test_the_document_and_the_api_agree_on_what_a_leak_report_is(client, report, valid):
    secret = token_secrets.new_secret("production", token_secrets.new_token_id())
    report = json.loads(json.dumps(report).replace("SECRET", secret))
    assert _leak_report_validator(_document(client)).is_valid(report) is valid
    response = client.post(f"{API}/leaks", json=report)
    assert response.status_code == (200 if valid else 400), response.get_data(as_text=True)


def _walk(node, where=""):
    """Every schema-like dict of the document, with where it is."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}/{i}")


def test_no_schema_has_a_null_default_nor_a_title(client):
    """openapi-typescript makes a field with a default required: `default: null` made a
    minimal create fail to type-check (TS2740)."""
    doc = _document(client)
    for where, node in _walk({"paths": doc["paths"], "components": doc["components"]}):
        if not where.endswith("/properties"):  # there, keys are field names
            assert not ("default" in node and node["default"] is None), where
            assert not isinstance(node.get("title"), str), where


def _nullable(schema):
    return schema.get("type") == "null" or any(
        o.get("type") == "null" for o in schema.get("anyOf", [])
    )


@pytest.mark.parametrize(
    "model, nullable",
    [
        ("TokenCreate", {"expires_at", "allowed_ips", "rate_limit"}),
        ("TokenUpdate", {"expires_at", "allowed_ips", "rate_limit", "scopes"}),
        ("TokenRotate", {"expires_at"}),
        ("WebhookCreate", set()),
        ("WebhookUpdate", set()),
    ],
)
def test_request_fields_are_optional_and_nullable_only_where_null_means_something(
    client, model, nullable
):
    schema = _document(client)["components"]["schemas"][model]
    assert schema.get("required", []) in ([], ["name"], ["url", "events"])
    for field in schema.get("required", []):
        assert not _nullable(schema["properties"][field]), field
    assert {f for f, s in schema["properties"].items() if _nullable(s)} == nullable


def test_enums_and_objects_are_shared_components(client):
    doc = _document(client)
    schemas = doc["components"]["schemas"]
    assert schemas["TokenRole"] == {
        "type": "string",
        "enum": ["admin", "writer", "viewer"],
        "description": schemas["TokenRole"]["description"],
    }
    assert schemas["Token"]["properties"]["role"] == {"$ref": "#/components/schemas/TokenRole"}
    assert schemas["Token"]["properties"]["environment"] == {
        "$ref": "#/components/schemas/Environment"
    }
    assert schemas["Token"]["properties"]["scopes"]["items"] == {
        "$ref": "#/components/schemas/Scope"
    }
    role_in = schemas["TokenCreate"]["properties"]["role"]["anyOf"]
    assert role_in[0] == {"$ref": "#/components/schemas/TokenRole"}
    assert role_in[1]["const"] == "recorder"
    assert schemas["TokenList"]["properties"]["api_tokens"]["items"] == {
        "$ref": "#/components/schemas/Token"
    }
    for child, parent in (("TokenWithSecret", "Token"), ("WebhookWithSecret", "Webhook")):
        base, own = schemas[child]["allOf"]
        assert base == {"$ref": f"#/components/schemas/{parent}"}
        assert not set(own["properties"]) & set(schemas[parent]["properties"])
    # Nowhere an inline copy of a shared enum.
    text = json.dumps(doc["paths"]) + json.dumps(schemas)
    assert text.count('["admin", "writer", "viewer"]') == 1
    assert text.count('["sandbox", "production"]') == 1


def test_every_operation_has_a_tag_that_the_document_describes(client):
    doc = _document(client)
    tags = {tag["name"] for tag in doc["tags"]}
    seen = set()
    for path, method, operation in _operations(doc):
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, (path, method)
        seen |= set(operation["tags"])
    assert seen == tags


def test_create_and_rotate_document_the_idempotency_key_header_and_links(client):
    doc = _document(client)
    for path in ("/api_tokens", "/api_tokens/{token_id}/rotate"):
        operation = doc["paths"][path]["post"]
        (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is False
    assert "idempotency_mismatch" in doc["components"]["responses"]["BadRequest"]["description"]
    links = doc["paths"]["/api_tokens"]["post"]["responses"]["201"]["links"]
    operation_ids = {op["operationId"] for _, _, op in _operations(doc)}
    assert {link["operationId"] for link in links.values()} == {
        "getToken", "updateToken", "rotateToken", "revokeToken", "getTokenUsage",
    }  # fmt: skip
    for link in links.values():
        assert link["operationId"] in operation_ids
        assert link["parameters"] == {"token_id": "$response.body#/id"}


# ---------------------------------------------------------------- PATCH as documented


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_change_of_active_alone_leaves_expiry_allowlist_and_rate_limit_alone(
    client, db, make_org, make_token, method
):
    """What a generated client sends to "just suspend" a token: only `active`."""
    org = make_org(allow_never_expires=True)
    _, secret = make_token(org, name="caller", role="admin")
    target, _ = make_token(org, name="target", allowed_ips=["192.0.2.0/24"], rate_limit="50/minute")
    expires_at = target.expires_at
    response = client.open(
        f"{API}/api_tokens/{target.id}", method=method, json={"active": False},
        headers=bearer(secret),
    )  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["active"] is False and body["status"] == "inactive"
    assert body["allowed_ips"] == ["192.0.2.0/24"]
    assert body["rate_limit"] == "50/minute"
    assert body["expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    db.session.refresh(target)
    assert (target.allowed_ips, target.rate_limit) == (["192.0.2.0/24"], "50/minute")
    assert target.expires_at is not None


def test_an_explicit_null_clears_what_can_be_cleared(client, db, make_org, make_token):
    """(Expiry and allowlist take null too, but a token may never remove either: the
    delegation ceiling's tests cover those.)"""
    org = make_org()
    _, secret = make_token(org, name="caller", role="admin")
    target, _ = make_token(org, name="target", rate_limit="50/minute", scopes=["tokens:read"])
    expires_at = target.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    response = client.patch(
        f"{API}/api_tokens/{target.id}",
        json={"rate_limit": None, "scopes": None},
        headers=bearer(secret),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["rate_limit"], body["scopes"], body["expires_at"]) == (None, [], expires_at)
    assert (body["name"], body["active"], body["role"]) == ("target", True, "admin")


@pytest.mark.parametrize("field", ["name", "active", "role"])
def test_null_is_refused_where_it_means_nothing(client, make_org, make_token, field):
    org = make_org()
    _, secret = make_token(org, name="caller", role="admin")
    target, _ = make_token(org, name="target")
    response = client.patch(
        f"{API}/api_tokens/{target.id}", json={field: None}, headers=bearer(secret)
    )
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) == {field}


def test_a_form_field_left_empty_is_not_sent(client, make_org, make_token):
    """Librato's forms: `active=` (empty) changes nothing, as before."""
    org = make_org()
    _, secret = make_token(org, name="caller", role="admin")
    target, _ = make_token(org, name="target", rate_limit="50/minute")
    response = client.put(
        f"{API}/api_tokens/{target.id}", data={"active": "", "name": "renamed"},
        headers=bearer(secret),
    )  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["name"], body["active"], body["rate_limit"]) == ("renamed", True, "50/minute")


def test_a_create_with_only_a_name_gets_the_documented_defaults(client, make_org, make_token):
    _, secret = make_token(make_org(), name="caller", role="admin")
    response = client.post(f"{API}/api_tokens", json={"name": "minimal"}, headers=bearer(secret))
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["role"], body["type"], body["environment"]) == ("viewer", "generic", "sandbox")
    assert body["expires_at"] is not None


def test_every_answer_documents_its_request_id(client):
    doc = _document(client)
    header = doc["components"]["headers"]["X-Request-Id"]
    assert header["required"] is True
    for path, method, operation in _operations(doc):
        for status, response in operation["responses"].items():
            if "$ref" in response:
                response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
            assert response["headers"]["X-Request-Id"] == {
                "$ref": "#/components/headers/X-Request-Id"
            }, (method, path, status)
