"""Property-based runs of the whole API against its own OpenAPI document (schemathesis).

Every operation gets 25 generated requests (derandomized, so runs repeat), sent with a
valid admin token of a seeded organization, first with random ids and then with the id of
a real token. Valid requests: no 5xx, and every response matches the document. Invalid
requests (schemathesis' negative mode): still never a 5xx.
"""

from __future__ import annotations

import contextvars

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance


def _isolated(fn, *args, **kwargs):
    """Run as a real server would: each request in a fresh context (its own g and session)."""
    return contextvars.Context().run(fn, *args, **kwargs)


@pytest.mark.parametrize(
    "mode, checks",
    [
        (GenerationMode.POSITIVE, [not_a_server_error, response_schema_conformance]),
        (GenerationMode.NEGATIVE, [not_a_server_error]),
    ],
    ids=["valid-requests", "invalid-requests"],
)
def test_every_operation_conforms_to_the_openapi_document(
    app, db, make_org, make_token, mode, checks
):
    org = make_org()
    make_token(org, name="existing sandbox token", role="viewer")
    make_token(org, name="existing production token", environment="production")
    target, _ = make_token(org, name="target of fixed-id cases", role="viewer")
    token, secret = make_token(org, name="schemathesis caller", role="admin")
    token.rate_limit = "100000/minute"  # generated traffic must not trip the burst limit
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}

    schema = _isolated(schemathesis.openapi.from_wsgi, "/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation of the document but openapi.json itself, which schemathesis skips.
    assert len(operations) == 11, sorted(op.label for op in operations)

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
            response = _isolated(case.call, headers=headers)
            case.validate_response(response, checks=checks, headers=headers)

        run()

    # The caller survived its own fuzzing: it still authenticates.
    response = _isolated(app.test_client().get, "/api/v1/whoami", headers=headers)
    assert response.status_code == 200
