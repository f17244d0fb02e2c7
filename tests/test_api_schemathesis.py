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
import importlib.util
import json
import re
import unicodedata
from datetime import timedelta

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from blueprints.api.schemas import EMAIL_LIKE_PATTERN
from models import (
    ApiToken,
    AuditEvent,
    IdempotencyKey,
    TokenUsage,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)
from services import tokens as token_service

EMAIL_LIKE = re.compile(EMAIL_LIKE_PATTERN)
# The document describes Idempotency-Key (issue 16 makes the server check it): until the
# server refuses a malformed key, invalid-request cases leave the header out.
IDEMPOTENCY_KEYS_CHECKED = importlib.util.find_spec("services.idempotency") is not None


def _isolated(fn, *args, **kwargs):
    """Run as a real server would: each request in a fresh context (its own g and session)."""
    return contextvars.Context().run(fn, *args, **kwargs)


def schema_valid_requests_are_not_refused_as_malformed(ctx, response, case):
    """A request the document calls valid is never answered validation_error, 413 or 415.

    Refusals that depend on state are fine: duplicate_name, token_limit_reached, 403, 404,
    and a change to a token the stateful phase revoked before (a validation_error naming
    only `token_id`, the path's token: revoking is for good).
    """
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return  # the stateful phase sends invalid requests too; those must be refused
    refused = response.status_code in (413, 415)
    if response.status_code == 400:
        error = json.loads(response.content)["error"]
        refused = error["code"] == "validation_error" and set(error["details"]) != {"token_id"}
    if refused:
        raise AssertionError(
            f"{case.operation.label} refused a request its schema allows: "
            f"{response.status_code} {response.content.decode()[:500]}\nbody: {case.body!r}"
        )


def _within_what_the_document_cannot_say(case) -> None:
    """Keep a valid case within the rules the document states only in descriptions: an
    expiry is in the future and within the key policy; a viewer has no tokens:write; a
    name has no invisible formatting character (no portable pattern lists them) and no
    fullwidth @; a webhook URL's host resolves to a public address."""
    if not isinstance(case.body, dict):
        return
    if case.operation.path.startswith("/webhooks") and isinstance(case.body.get("url"), str):
        # Whether a host is public is up to DNS, which no schema states: use one that is.
        case.body["url"] = "https://hooks.example.com/keysmith"
    if isinstance(case.body.get("expires_at"), str):
        case.body["expires_at"] = (utcnow() + timedelta(days=30)).isoformat()
    scopes = case.body.get("scopes")
    role = case.body.get("role", "viewer" if case.operation.method.upper() == "POST" else None)
    # A change without a role keeps the token's, which may be viewer.
    if role in ("viewer", None) and isinstance(scopes, list):
        case.body["scopes"] = [scope for scope in scopes if scope != "tokens:write"]
    name = case.body.get("name")
    if isinstance(name, str) and (
        any(unicodedata.category(c)[0] == "C" for c in name)
        # A fullwidth ＠ reads as @ once NFKC-normalized: the description says so.
        or EMAIL_LIKE.search(unicodedata.normalize("NFKC", name))
    ):
        case.body["name"] = "renamed " + name.encode("unicode_escape").hex()[:80]


# Every built-in check runs (schemathesis' default set). A valid request may still be
# refused for what the document cannot know: a name already taken, the token limit (400,
# which schema_valid_requests_are_not_refused_as_malformed tells from a validation_error).
CONFIG = {
    "checks": {
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "400", "401", "403", "404", "429"]
        }
    }
}


@pytest.fixture
def app_config():
    # ignored_auth resends requests without a valid token: many more in a second than the
    # per-address limit of unauthenticated requests allows (that limit has its own tests).
    return {"API_UNAUTHENTICATED_RATE_LIMIT": "1000000/minute"}


def _schema(app):
    config = SchemathesisConfig.from_dict(CONFIG)
    return _isolated(schemathesis.openapi.from_wsgi, "/api/v1/openapi.json", app, config=config)


@pytest.mark.parametrize(
    "mode, additional",
    [
        (GenerationMode.POSITIVE, [schema_valid_requests_are_not_refused_as_malformed]),
        (GenerationMode.NEGATIVE, []),
    ],
    ids=["valid-requests", "invalid-requests"],
)
def test_every_operation_conforms_to_the_openapi_document(
    app, db, make_org, make_token, mode, additional
):
    # The most lenient policy: what it forbids, the document states only in descriptions.
    org = make_org(allow_never_expires=True, max_lifetime_days=3650)
    make_token(org, name="existing sandbox token", role="viewer")
    make_token(org, name="existing production token", environment="production")
    target, _ = make_token(org, name="target of fixed-id cases", role="admin")
    token, secret = make_token(org, name="schemathesis caller", role="admin")
    # Generated traffic must not trip a limit; the policy's own per-second window bounds a
    # token's limit too, so both are raised.
    org.rate_limit = token.rate_limit = "10000000/minute;1000000/second"
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

    schema = _schema(app)
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
            elif not IDEMPOTENCY_KEYS_CHECKED:
                assume("Idempotency-Key" not in (case.headers or {}))
            restore_target()
            response = _isolated(case.call, headers=headers)
            case.validate_response(response, additional_checks=additional, headers=headers)

        run()

    # The caller survived its own fuzzing: it still authenticates.
    response = _isolated(app.test_client().get, "/api/v1/whoami", headers=headers)
    assert response.status_code == 200


def test_the_stateful_phase_follows_the_documents_links(app, db, make_org, make_token):
    """Sequences of calls chained by the document's links (create -> get, change, rotate,
    usage, revoke; the same for webhooks), every built-in check on each answer."""
    org = make_org(allow_never_expires=True, max_lifetime_days=3650, max_live_tokens=1000)
    token, secret = make_token(org, name="schemathesis caller", role="admin")
    # Far above what it sends: a 429 decided by how fast this machine is would make
    # scenarios that Hypothesis replays answer otherwise (FlakyStrategyDefinition). The
    # policy's own per-second window bounds a token's limit too.
    org.rate_limit = token.rate_limit = "10000000/minute;1000000/second"
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    created: set[str] = set()
    followed: list[str] = []

    def start_over() -> None:
        """Each scenario meets the same state, so a replayed one is answered alike (what
        Hypothesis needs to shrink it): only the caller, and no webhooks."""
        for model in (TokenUsage, WebhookDelivery, WebhookEvent, WebhookEndpoint, IdempotencyKey):
            db.session.execute(sa.delete(model))
        db.session.execute(sa.delete(ApiToken).where(ApiToken.id != token.id))
        db.session.execute(sa.delete(AuditEvent))
        db.session.commit()

    class Machine(_schema(app).as_state_machine()):
        def setup(self):
            start_over()

        def before_call(self, case):
            # Ids inferred from answers (whoami, the list) include the caller's own: it may
            # suspend, rotate or revoke itself, which would leave nothing to test with.
            if case.method.upper() != "GET":
                assume((case.path_parameters or {}).get("token_id") != token.id)
                assume((case.query or {}).get("name") != token.name)
            if case.meta is None or case.meta.generation.mode.is_positive:
                _within_what_the_document_cannot_say(case)
            elif not IDEMPOTENCY_KEYS_CHECKED:
                (case.headers or {}).pop("Idempotency-Key", None)
            token_id = (case.path_parameters or {}).get("token_id")
            if token_id in created:
                followed.append(case.operation.label)

        def get_call_kwargs(self, case):
            return {"headers": headers}

        def call(self, case, **kwargs):
            return _isolated(case.call, **kwargs)

        def after_call(self, response, case):
            super().after_call(response, case)
            assert response.status_code != 429, "rate limited: the scenarios would not repeat"
            if case.operation.label == "POST /api_tokens" and response.status_code == 201:
                created.add(json.loads(response.content)["id"])

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                additional_checks=[schema_valid_requests_are_not_refused_as_malformed],
                headers=headers,  # the caller's own credentials: explicit, not generated
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Machine.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert created and followed, "no link was followed"
    # The caller survived: it still authenticates.
    response = _isolated(app.test_client().get, "/api/v1/whoami", headers=headers)
    assert response.status_code == 200
