"""How another worker learns of a change (SPEC §2, issue 17), between two apps of this
process on one database (two workers, in effect): through Redis's notices within
milliseconds; without Redis, or while it is unreachable or silent, through the change
counter within about half a second. Never an error either way.

Deadlines carry slack for a loaded machine; `make bench` measures the delays themselves.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
from hot_path_support import owner_actor, worker_config

from app import create_app
from extensions import db as _db
from services import members, tokens
from services.actor import Actor
from services.errors import AuthFailed
from services.token_cache import verifier

COUNTER_DEADLINE = 1.0 + 1.0
NOTICE_DEADLINE = 0.1 + 0.4
REDIS_URL = os.environ.get("TEST_REDIS_URL")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def silent_redis():
    """Accepts connections and never says a word (a paused Redis, a stuck proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _redis_settings(kind: str, silent_redis: str) -> dict:
    if kind == "no-redis":
        return {}
    if kind == "redis-refusing":
        url = f"redis://127.0.0.1:{_closed_port()}/0"
    elif kind == "redis-silent":
        url = silent_redis
    else:
        url = REDIS_URL
    return {"REDIS_URL": url, "RATELIMIT_STORAGE_URI": url}


KINDS = ["no-redis", "redis-refusing", "redis-silent"] + (["redis"] if REDIS_URL else [])


@pytest.fixture(params=KINDS)
def workers(request, app, backend, database_urls, tmp_path, silent_redis):
    """This test's app (the worker that changes) and another on the same database."""
    settings = {**_redis_settings(request.param, silent_redis)}
    settings["RATELIMIT_KEY_PREFIX"] = f"keysmith-test-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        # Separate counters: only a notice can reach the other worker in time.
        mine, theirs = tmp_path / "mine", tmp_path / "theirs"
        deadline = NOTICE_DEADLINE
    else:
        mine = theirs = tmp_path / "host-changes"  # one host: one counter
        deadline = COUNTER_DEADLINE
    app.config.update(settings, TOKEN_CHANGES_FILE=str(mine))
    app.extensions.pop("keysmith_token_cache", None)  # made again with these settings
    other = create_app(
        worker_config(database_urls[backend], **settings, TOKEN_CHANGES_FILE=str(theirs)),
        instance_path=str(tmp_path / "other"),
    )
    yield app, other, deadline, request.param
    with other.app_context():
        _db.session.remove()
        _db.engine.dispose()
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"*{settings['RATELIMIT_KEY_PREFIX']}*"):
            client.delete(key)
        client.close()


def _code_on(worker, secret: str) -> str | None:
    with worker.app_context():
        try:
            tokens.verify(secret)
        except AuthFailed as exc:
            return exc.code
        finally:
            _db.session.remove()
    return None


def _wait_until_listening(worker) -> None:
    with worker.app_context():
        target = verifier()
        listener = target.notices.listener(target)
    deadline = time.monotonic() + 5
    while not listener.healthy(time.monotonic()):
        assert time.monotonic() < deadline, "the listener never heard Redis"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda token, actor: tokens.revoke_token(token, actor), "token_revoked"),
        (lambda token, actor: tokens.suspend_token(token, actor), "token_inactive"),
    ],
    ids=["revoke", "suspend"],
)
def test_another_worker_refuses_a_changed_token_within_the_bound(
    workers, make_org, make_token, db, change, code
):
    _, other, deadline, kind = workers
    org = make_org()
    token, secret = make_token(org)
    assert _code_on(other, secret) is None  # cached there now
    if kind == "redis":
        _wait_until_listening(other)
    time.sleep(0.1)

    changed = time.monotonic()
    change(token, owner_actor(org))
    db.session.commit()  # Redis refusing or silent: announcing fails quietly, no error

    seen = _code_on(other, secret)
    while seen is None and time.monotonic() - changed < deadline:
        time.sleep(0.005)
        seen = _code_on(other, secret)
    elapsed = time.monotonic() - changed
    assert seen == code, f"the other worker still accepted the token after {elapsed:.2f} s"


def test_removing_a_member_reaches_another_worker_within_the_bound(
    workers, make_org, make_member, make_token, db
):
    _, other, deadline, kind = workers
    org = make_org()
    member = make_member(org, role="admin")

    actor = Actor(organization=org, membership=member, ip="127.0.0.1")
    _, secret = make_token(org, actor)
    assert _code_on(other, secret) is None
    if kind == "redis":
        _wait_until_listening(other)

    changed = time.monotonic()
    members.remove_member(member, owner_actor(org))
    db.session.commit()

    seen = _code_on(other, secret)
    while seen is None and time.monotonic() - changed < deadline:
        time.sleep(0.005)
        seen = _code_on(other, secret)
    assert seen == "token_revoked", f"still accepted after {time.monotonic() - changed:.2f} s"
