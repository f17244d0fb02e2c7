"""Fixtures: a real database (SQLite file, and PostgreSQL when TEST_DATABASE_URL is set),
the app on it, a client that speaks CSRF, and factories that return real rows."""

from __future__ import annotations

import contextvars
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hot_path_support import owner_actor, worker_config

from app import create_app
from extensions import db as _db
from extensions import limiter
from models import ApiToken, Base, Membership, Organization, User
from services import accounts
from services import tokens as token_service
from services.actor import Actor

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


def _pg_admin_url() -> sa.URL:
    url = sa.make_url(os.environ["TEST_DATABASE_URL"])
    return url.set(drivername="postgresql+psycopg")


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One throw-away database per backend for the whole run, migrated by Alembic."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'keysmith.db'}"}
    created = None
    if "postgresql" in BACKENDS:
        admin = _pg_admin_url()
        created = f"keysmith_test_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{created}"'))
        engine.dispose()
        urls["postgresql"] = admin.set(database=created).render_as_string(hide_password=False)
    for url in urls.values():
        app = create_app(worker_config(url), instance_path=str(tmp_path_factory.mktemp("inst")))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade(directory=str(ROOT / "migrations"))
            _db.engine.dispose()
    yield urls
    if created:
        engine = sa.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def app_config() -> dict:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def app(backend, database_urls, app_config, tmp_path) -> Iterator[Flask]:
    app = create_app(
        worker_config(database_urls[backend], **app_config), instance_path=str(tmp_path / "inst")
    )
    with app.app_context():
        yield app
        _db.session.remove()
        _wipe(_db.engine)
        _db.engine.dispose()
    # Only the in-process storage: on Redis, reset() would delete every deployment's and every
    # parallel test's limits (limit_storage deletes this test's own prefix instead).
    if app.config["RATELIMIT_STORAGE_URI"].startswith("memory"):
        limiter.reset()


_SEQUENCES: dict[str, list[str]] = {}


def _wipe(engine: sa.Engine) -> None:
    """Empty every table, so each test starts from a clean, migrated database.

    DELETE, children first, and the id sequences set back to 1 (on PostgreSQL): a test
    leaves a few rows, and TRUNCATE of 16 tables cost 80 ms a test (a minute of CI)."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"DELETE FROM {table}"))
        if engine.dialect.name == "postgresql":
            url = str(engine.url)
            if url not in _SEQUENCES:
                _SEQUENCES[url] = list(
                    conn.scalars(
                        sa.text(
                            "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) "
                            "FROM pg_sequences"
                        )
                    )
                )
            conn.execute(
                sa.text("SELECT setval(s, 1, false) FROM unnest(CAST(:s AS text[])) AS s"),
                {"s": _SEQUENCES[url]},
            )


@pytest.fixture
def db(app):
    return _db


_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


class Client(FlaskClient):
    """A test client that fetches a CSRF token the way a browser has one: from a page.

    Each request runs in a fresh context, as on a real server: the test's own app
    context (and its `g` and database session) is not shared with the request.
    """

    def open(self, *args, **kwargs):
        # Buffered: a streamed body is read while its request context is still there, as a
        # server reads it, not later in the test's own context.
        kwargs.setdefault("buffered", True)
        response = contextvars.Context().run(super().open, *args, **kwargs)
        _db.session.expire_all()  # what the test holds may have changed under it
        return response

    def csrf_token(self, page: str = "/login") -> str:
        html = self.get(page).get_data(as_text=True)
        match = _CSRF.search(html)
        assert match, f"no CSRF token on {page}"
        return match.group(1) or match.group(2)

    def form(self, url: str, data: dict | None = None, *, page: str = "/login", **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token(page))
        return self.post(url, data=data, **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD):
        response = self.form("/login", {"email": email, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return response


@pytest.fixture
def client(app) -> Client:
    app.test_client_class = Client
    return app.test_client()


@pytest.fixture
def make_user(db):
    def make(email: str | None = None, name: str = "Ada", password: str = PASSWORD) -> User:
        user = accounts.create_user(
            email=email or f"user-{uuid.uuid4().hex[:8]}@example.com", name=name, password=password
        )
        db.session.commit()
        return user

    return make


@pytest.fixture
def make_org(db, make_user):
    def make(owner: User | None = None, name: str = "Acme", **policy) -> Organization:
        owner = owner or make_user()
        org = Organization(name=name, rate_limit="1000/minute;100/second", **policy)
        db.session.add(org)
        db.session.flush()
        db.session.add(Membership(organization_id=org.id, user_id=owner.id, role="owner"))
        db.session.commit()
        return org

    return make


@pytest.fixture
def make_member(db, make_user):
    def make(org: Organization, role: str = "member", user: User | None = None) -> Membership:
        user = user or make_user()
        membership = Membership(organization_id=org.id, user_id=user.id, role=role)
        db.session.add(membership)
        db.session.commit()
        return membership

    return make


@pytest.fixture
def make_token(db):
    """Create a token through the service; returns (token, secret)."""

    def make(
        org: Organization,
        actor: Actor | None = None,
        *,
        name: str | None = None,
        environment: str = "sandbox",
        role: str = "admin",
        expires_in_days: int | None = 365,  # API callers: children may expire up to then
        **kwargs,
    ) -> tuple[ApiToken, str]:
        token, secret = token_service.create_token(
            org,
            actor or owner_actor(org),
            name=name or f"token-{uuid.uuid4().hex[:6]}",
            environment=environment,
            role=role,
            expires_at=token_service.expiry_from_days(expires_in_days),
            **kwargs,
        )
        db.session.commit()
        return token, secret

    return make


LIMIT_STORAGES = ["memory"] + (["redis"] if os.environ.get("TEST_REDIS_URL") else [])


@pytest.fixture(params=LIMIT_STORAGES)
def limit_storage(request) -> Iterator[dict]:
    """Settings for Flask-Limiter's storage: in-process, and Redis when TEST_REDIS_URL is set.

    Redis runs get their own key prefix, and their keys are deleted afterwards.
    """
    if request.param == "memory":
        yield {"RATELIMIT_STORAGE_URI": "memory://"}
        return
    import redis

    prefix = f"keysmith-test-{uuid.uuid4().hex[:12]}"
    url = os.environ["TEST_REDIS_URL"]
    yield {"RATELIMIT_STORAGE_URI": url, "REDIS_URL": url, "RATELIMIT_KEY_PREFIX": prefix}
    client = redis.Redis.from_url(url)
    # Flask-Limiter keeps the prefix of the first app it was bound to in this process.
    for used in {prefix, limiter._key_prefix} - {None, ""}:
        for key in client.scan_iter(f"*{used}*"):
            client.delete(key)
    client.close()
