"""The organization's live-token limit (SPEC §6) holds under concurrent creates from
several workers: 120 at once against a limit of 100 leave exactly 100."""

from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa
from hot_path_support import owner_actor, worker_config

from app import create_app
from extensions import db as _db
from models import ApiToken, Organization
from services import tokens
from services.errors import DomainError

ATTEMPTS = 120
LIMIT = 100


def _create(worker, org_id: int, name: str, start: threading.Barrier, outcomes: list) -> None:
    with worker.app_context():
        try:
            start.wait()
            org = _db.session.get(Organization, org_id)
            tokens.create_token(
                org,
                owner_actor(org),
                name=name,
                environment="sandbox",
                role="viewer",
                expires_at=tokens.expiry_from_days(30),
            )
            _db.session.commit()
            outcomes.append("created")
        except DomainError as exc:
            _db.session.rollback()
            outcomes.append(exc.code)
        except Exception as exc:  # anything else is a failure the assertion will show
            _db.session.rollback()
            outcomes.append(f"{type(exc).__name__}: {exc}")
        finally:
            _db.session.remove()


def test_concurrent_creates_never_exceed_the_token_limit(
    make_org, db, backend, database_urls, tmp_path
):
    org = make_org(max_live_tokens=LIMIT)
    org_id = org.id
    # Two apps, two connection pools: as two gunicorn workers on one database.
    workers = [
        create_app(
            # The default pools (15 connections each): the rest queue, as they would.
            worker_config(database_urls[backend]),
            instance_path=str(tmp_path / f"worker{i}"),
        )
        for i in range(2)
    ]
    start = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    threads = [
        threading.Thread(
            target=_create, args=(workers[i % 2], org_id, f"token-{i}", start, outcomes)
        )
        for i in range(ATTEMPTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for worker in workers:
        with worker.app_context():
            _db.engine.dispose()

    assert Counter(outcomes) == {"created": LIMIT, "token_limit_reached": ATTEMPTS - LIMIT}
    live = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(ApiToken)
        .where(ApiToken.organization_id == org_id, ApiToken.revoked_at.is_(None))
    )
    assert live == LIMIT
