"""The database failing in the middle of a request (issue 16): a commit that fails is a 503
and leaves nothing; a connection that dies after the commit, or before teardown, never
turns the answer into an error; an outage is never counted against a limit.

The faults are real: PostgreSQL ends the request's own connection (pg_terminate_backend, as
a fast shutdown does) at the chosen moment; on SQLite, a database that cannot be opened."""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa
from api_support import API, bearer, error_code, unreachable_database_app

from extensions import db as _db
from models import ApiToken


@contextlib.contextmanager
def connection_ended_at(moment: str, *, times: int = 1):
    """PostgreSQL ends the connection of the session's transaction at `moment` (a session
    event: after_begin, before_commit, after_commit), the first `times` times."""
    engine = sa.create_engine(_db.engine.url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    left = {"times": times, "pid": None}

    def note_pid(session, *args) -> None:
        if session.in_nested_transaction():
            return  # a savepoint's release: not the commit
        left["pid"] = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()

    def end(session, *args) -> None:
        if left["times"] <= 0 or (moment != "after_begin" and session.in_nested_transaction()):
            return
        left["times"] -= 1
        if moment == "after_begin":
            pid = args[-1].exec_driver_sql("SELECT pg_backend_pid()").scalar()
        elif moment == "after_commit":
            pid = left["pid"]  # noted before the commit: no SQL may run in after_commit
        else:
            pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(100):  # the backend goes asynchronously
                gone = admin.execute(
                    sa.text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid},
                ).scalar()
                if gone:
                    break
                time.sleep(0.01)

    if moment == "after_commit":
        sa.event.listen(_db.session, "before_commit", note_pid)
    sa.event.listen(_db.session, moment, end)
    try:
        yield
    finally:
        sa.event.remove(_db.session, moment, end)
        if moment == "after_commit":
            sa.event.remove(_db.session, "before_commit", note_pid)
        engine.dispose()


@pytest.fixture
def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip("PostgreSQL ends a connection on demand; SQLite has none to end")


@pytest.fixture
def caller(make_org, make_token):
    return make_token(make_org(), name="caller", role="admin")


def _named(db, name: str) -> list[ApiToken]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.name == name)))


def test_an_api_create_whose_commit_fails_is_503_and_leaves_no_token(
    postgresql_only, client, db, caller
):
    _, secret = caller
    headers = {**bearer(secret), "Idempotency-Key": "retry-me"}
    with connection_ended_at("before_commit"):
        failed = client.post(f"{API}/api_tokens", json={"name": "ci"}, headers=headers)
    assert failed.status_code == 503 and error_code(failed) == "unavailable"
    assert _named(db, "ci") == []
    # The retry (same key) does the work: a 5xx was not stored, and the name is free.
    retried = client.post(f"{API}/api_tokens", json={"name": "ci"}, headers=headers)
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert len(_named(db, "ci")) == 1


def test_an_api_create_whose_connection_dies_after_the_commit_is_answered(
    postgresql_only, client, db, caller
):
    _, secret = caller
    with connection_ended_at("after_commit"):
        created = client.post(f"{API}/api_tokens", json={"name": "ci"}, headers=bearer(secret))
    assert created.status_code == 201
    new_secret = created.get_json()["token"]
    assert client.get(f"{API}/whoami", headers=bearer(new_secret)).status_code == 200


def test_an_api_rotate_whose_connection_dies_after_the_commit_is_answered(
    postgresql_only, client, db, caller, make_org, make_token
):
    caller_token, secret = caller
    target, _ = make_token(caller_token.organization, name="target", expires_in_days=30)
    with connection_ended_at("after_commit"):
        rotated = client.post(f"{API}/api_tokens/{target.id}/rotate", headers=bearer(secret))
    assert rotated.status_code == 200
    assert (
        client.get(f"{API}/whoami", headers=bearer(rotated.get_json()["token"])).status_code == 200
    )


def test_a_connection_ended_mid_request_is_a_clean_503_and_the_next_request_works(
    postgresql_only, app, client, db, caller
):
    _, secret = caller
    with connection_ended_at("after_begin"):
        # The first statement of the request fails: a clean 503, and teardown's rollback on
        # the dead connection raises nothing.
        first = client.get(f"{API}/whoami", headers=bearer(secret))
    assert first.status_code in (200, 503) and first.is_json
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200


def test_a_connection_ended_after_the_view_leaves_its_answer(
    postgresql_only, app, client, db, caller
):
    """The view answered; then the database ends the connection, before teardown rolls the
    session back on it (the rollback raised out of Flask: gunicorn's bare 500)."""
    _, secret = caller
    engine = sa.create_engine(db.engine.url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    ended = []

    @app.after_request
    def end_the_connection(response):
        if not ended:
            pid = db.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with engine.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                while admin.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid},
                ).scalar():
                    time.sleep(0.01)
            ended.append(pid)
        return response

    try:
        answered = client.get(f"{API}/whoami", headers=bearer(secret))
        assert ended and answered.status_code == 200
        assert answered.get_json()["token"]["name"] == "caller"
        assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200
    finally:
        engine.dispose()


def test_a_page_create_whose_commit_fails_says_it_may_not_be_saved(
    postgresql_only, client, db, make_org, make_user
):
    owner = make_user()
    make_org(owner=owner)
    client.sign_in(owner.email)
    token = client.csrf_token("/connections/api-tokens")
    form = {"name": "deploy", "environment": "sandbox", "role": "writer", "type": "generic"}
    form.update(expires_in_days="30", csrf_token=token)
    with connection_ended_at("before_commit"):
        failed = client.post("/connections/api-tokens", data=form)
    assert failed.status_code == 503
    page = failed.get_data(as_text=True)
    assert "Nothing was changed" not in page and "may not have been saved" in page
    assert _named(db, "deploy") == []

    with connection_ended_at("after_commit"):
        created = client.post("/connections/api-tokens", data=form)
    assert created.status_code == 200
    assert "ks_sbx_" in created.get_data(as_text=True)  # the secret, shown once
    assert len(_named(db, "deploy")) == 1


def test_sign_ins_answered_503_do_not_count_against_the_throttle(tmp_path):
    from services.rate_limits import rate_limits

    app = unreachable_database_app(tmp_path)
    app.config.update(WTF_CSRF_ENABLED=False, LOGIN_THROTTLE="3 per 15 minutes")
    client = app.test_client()
    data = {"email": "ada@example.com", "password": "not the password"}
    answers = [client.post("/login", data=data).status_code for _ in range(5)]
    assert answers == [503] * 5
    with app.app_context():
        counts = rate_limits().first_hit_memory.counts
    assert counts and {count for count, _ in counts.values()} == {0}
