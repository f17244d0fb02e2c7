"""Idempotency-Key on the API's create and rotate (SPEC §4; services/idempotency.py).

`@idempotent` wraps the view: without the header nothing changes. With it, the calling token
is authenticated, the key claimed (or its stored answer replayed, with `Idempotent-Replayed:
true`), and the view runs; `commit_answer()` seals a 2xx answer into the claim and commits
both at once. A 400 (validation_error, duplicate_name, token_limit_reached) is stored too,
in a transaction of its own; 401/403/404/409/429 and every 5xx are not, so a retry after
them does the work.
"""

from __future__ import annotations

import contextlib
import json
from functools import wraps

from flask import Response, g, request
from werkzeug.exceptions import HTTPException

from blueprints.api.auth import current_api_actor
from blueprints.api.errors import response_for
from extensions import db
from services import idempotency
from services.errors import DomainError, NotFound

STORED_HEADERS = ("Location", "Content-Type", "Cache-Control")


def fingerprint() -> bytes:
    """What makes two requests the same: method, path and body (JSON compared parsed, so
    spacing and key order do not matter; a form compared field by field)."""
    raw = request.get_data(cache=True)
    body: object = raw.decode("latin-1")
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        with contextlib.suppress(ValueError, RecursionError):  # compared as text then
            body = json.loads(raw) if raw.strip() else {}
    elif request.mimetype == "application/x-www-form-urlencoded":
        body = sorted(request.form.items(multi=True))
    return json.dumps(
        [request.method, request.path, request.mimetype, body], sort_keys=True, default=str
    ).encode()


def _answer(response: Response) -> idempotency.Answer:
    headers = {k: response.headers[k] for k in STORED_HEADERS if k in response.headers}
    return idempotency.Answer(response.status_code, response.get_data(), headers)


def _replay(answer: idempotency.Answer) -> Response:
    response = Response(answer.body, status=answer.status)
    for key, value in answer.headers.items():
        response.headers[key] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def may_see_again(actor, token_id: str | None) -> None:
    """A stored answer hands out a secret again: only to a caller who may still manage that
    token now, in every dimension of the ceiling (SPEC §2). A writer token demoted to viewer
    after its create, or narrowed below the token it rotated, gets the refusal a new request
    would get, never the secret. Raises DomainError (403/404) otherwise."""
    from services import tokens as token_service

    token_service.require_may_create(actor)
    if token_id is None:  # a stored refusal: it hands out nothing
        return
    try:
        token = token_service.get_token_or_404(actor.organization, actor.environment, token_id)
    except NotFound:  # no such token any more: its secret opens nothing
        return
    token_service.require_manage(actor, token)
    token_service.check_within_caller(actor, token)


def _token_of(answer: idempotency.Answer) -> str | None:
    if not 200 <= answer.status < 300:
        return None
    try:
        return str(json.loads(answer.body)["id"])
    except (ValueError, KeyError, TypeError):
        return None


def idempotent(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        raw = request.headers.get(idempotency.HEADER)
        if raw is None:
            return view(*args, **kwargs)
        key = idempotency.valid_key(raw)
        actor = current_api_actor()  # 401/403 first: a key never answers for another token
        scope = idempotency.scope_for(actor.organization.id, actor.token.id, key, fingerprint())
        found = idempotency.claim(scope)
        if isinstance(found, idempotency.Answer):
            try:
                may_see_again(actor, _token_of(found))
            except DomainError as error:
                db.session.rollback()
                return response_for(error)
            return _replay(found)
        g.idempotency_claim = (found, scope)
        try:
            return view(*args, **kwargs)
        except (DomainError, HTTPException) as error:
            status = error.status if isinstance(error, DomainError) else error.code
            if status != 400:
                raise
            db.session.rollback()  # the claim goes with the work; the refusal is stored alone
            response = response_for(error)
            idempotency.store(scope, _answer(response))
            return commit_answer(response)
        finally:
            g.pop("idempotency_claim", None)

    return wrapped


def commit_answer(response: Response) -> Response:
    """Commit the work with its answer (made before the commit, from what was written; a 2xx
    is sealed into the Idempotency-Key claim first): nothing after the commit may turn this
    answer into an error. A commit that fails raises: the answer is 503, and neither the
    work nor its stored answer exists."""
    claimed = g.pop("idempotency_claim", None)
    if claimed is not None and 200 <= response.status_code < 300:
        row, scope = claimed
        idempotency.seal(row, scope, _answer(response))
    db.session.commit()
    g.answer_committed = True
    return response
