"""Helpers of the hot-path tests: another worker on the same database, and a SQL counter.

(Not in conftest.py: test modules cannot import it by name once tests/browser/ has one.)
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import sqlalchemy as sa
from flask import Flask

from app import create_app
from extensions import db
from models import Membership, Organization
from services.actor import Actor


def worker_config(url: str, **extra) -> dict:
    """The settings of conftest's app, for another app ("worker") on the same database."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "TOKEN_HMAC_KEY": "test-token-hmac-key",
        "SQLALCHEMY_DATABASE_URI": url,
        "BCRYPT_LOG_ROUNDS": 4,
        "RATELIMIT_STORAGE_URI": "memory://",
        "RATELIMIT_KEY_PREFIX": f"keysmith-test-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def another_worker(url: str, instance_path: str, **extra) -> Flask:
    return create_app(worker_config(url, **extra), instance_path=instance_path)


def owner_actor(org: Organization) -> Actor:
    membership = db.session.scalar(
        sa.select(Membership).where(
            Membership.organization_id == org.id, Membership.role == "owner"
        )
    )
    return Actor(organization=org, membership=membership, ip="127.0.0.1", user_agent="pytest")


@contextmanager
def statements(engine: sa.Engine):
    """Every SQL statement the engine runs inside the block."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def writes(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
