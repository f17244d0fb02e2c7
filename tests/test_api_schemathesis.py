"""Property-based runs of the whole API against its own OpenAPI document (schemathesis).

Every operation gets 25 generated requests (derandomized, so runs repeat), sent with a
valid admin token of a seeded organization, first with random ids and then with the id of
a real token. Valid requests: no 5xx, every response and its status are in the document,
and none is refused as malformed (so a rule the API enforces but the document does not
state fails here). Invalid requests (schemathesis' negative mode): still never a 5xx, and
every status is in the document.
"""

from __future__ import annotations

import contextvars
import json
import unicodedata
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from models import ApiToken, utcnow
from services import tokens as token_service


def _isolated(fn, *args, **kwargs):
    """Run as a real server would: each request in a fresh context (its own g and session)."""
    return contextvars.Context().run(fn, *args, **kwargs)


def schema_valid_requests_are_not_refused_as_malformed(ctx, response, case):
    """A request the document calls valid is never answered validation_error, 413 or 415.

    Refusals that depend on state are fine: duplicate_name, token_limit_reached, 403, 404.
    """
    refused = response.status_code in (413, 415)
    if response.status_code == 400:
        refused = json.loads(response.content)["error"]["code"] == "validation_error"
    if refused:
        raise AssertionError(
            f"{case.operation.label} refused a request its schema allows: "
            f"{response.status_code} {response.content.decode()[:500]}\nbody: {case.body!r}"
        )


def _within_what_the_document_cannot_say(case) -> None:
    """Keep a valid case within the rules the document states only in descriptions: an
    expiry is in the future and within the key policy; a viewer has no tokens:write; a
    name has no invisible formatting character (no portable pattern lists them); a webhook
    URL's host resolves to a public address."""
    if not isinstance(case.body, dict):
        return
    if case.operation.path.startswith("/webhooks") and isinstance(case.body.get("url"), str):
        # Whether a host is public is up to DNS, which no schema states: use one that is.
        case.body["url"] = "https://hooks.example.com/keysmith"
    if isinstance(case.body.get("expires_at"), str):
        case.body["expires_at"] = (utcnow() + timedelta(days=30)).isoformat()
    scopes = case.body.get("scopes")
    role = case.body.get("role", "viewer" if case.operation.method.upper() == "POST" else None)
    assume(not (role == "viewer" and isinstance(scopes, list) and "tokens:write" in scopes))
    name = case.body.get("name")
    assume(not (isinstance(name, str) and any(unicodedata.category(c)[0] == "C" for c in name)))


@pytest.mark.parametrize(
    "mode, checks",
    [
        (
            GenerationMode.POSITIVE,
            [
                not_a_server_error,
                response_schema_conformance,
                status_code_conformance,
                schema_valid_requests_are_not_refused_as_malformed,
            ],
        ),
        (GenerationMode.NEGATIVE, [not_a_server_error, status_code_conformance]),
    ],
    ids=["valid-requests", "invalid-requests"],
)
def test_every_operation_conforms_to_the_openapi_document(
    app, db, make_org, make_token, mode, checks
):
    # The most lenient policy: what it forbids, the document states only in descriptions.
    org = make_org(allow_never_expires=True, max_lifetime_days=3650)
    make_token(org, name="existing sandbox token", role="viewer")
    make_token(org, name="existing production token", environment="production")
    target, _ = make_token(org, name="target of fixed-id cases", role="admin")
    token, secret = make_token(org, name="schemathesis caller", role="admin")
    token.rate_limit = "100000/minute"  # generated traffic must not trip the burst limit
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}

    def restore_target() -> None:
        """Each case meets the target as it was: not revoked (a DELETE case revokes it),
        an admin with all scopes, under its own name."""
        row = db.session.get(ApiToken, target.id)
        row.revoked_at = row.revoked_reason = None
        row.role, row.scopes, row.active, row.name = "admin", [], True, target.name
        row.expires_at = token_service.expiry_from_days(30)
        db.session.commit()

    schema = _isolated(schemathesis.openapi.from_wsgi, "/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation of the document but openapi.json itself, which schemathesis skips.
    assert len(operations) == 19, sorted(op.label for op in operations)

    # Random ids (404s), then the id of a real token of the caller's environment.
    runs = [(op, None) for op in operations] + [
        (op, {"token_id": target.id}) for op in operations if "{token_id}" in op.path
    ]
    for operation, path_parameters in runs:

        @settings(
            max_examples=25,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def run(case):
            if mode == GenerationMode.POSITIVE:
                _within_what_the_document_cannot_say(case)
            restore_target()
            response = _isolated(case.call, headers=headers)
            case.validate_response(response, checks=checks, headers=headers)

        run()

    # The caller survived its own fuzzing: it still authenticates.
    response = _isolated(app.test_client().get, "/api/v1/whoami", headers=headers)
    assert response.status_code == 200
