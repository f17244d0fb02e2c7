"""A Redis that accepts connections and never answers (paused, SIGSTOPped, a stuck proxy):
every Redis client gives up after REDIS_TIMEOUT_SECONDS and the API answers from the
in-memory fallback, instead of holding each request until Redis comes back (issue 16)."""

from __future__ import annotations

import socket
import threading

import pytest
from api_support import API, bearer

# Far above what the timeouts allow (a few of 0.25 s on the first request), far below "never".
HANG_BOUND_SECONDS = 5


@pytest.fixture(scope="module")
def stalled_redis():
    """A TCP server on 127.0.0.1 that accepts and then says nothing, ever."""
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


@pytest.fixture
def app_config(stalled_redis):
    return {"REDIS_URL": stalled_redis, "RATELIMIT_STORAGE_URI": stalled_redis}


def _within_bound(call):
    """The call's result, or a failure if it is still waiting after the bound."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(HANG_BOUND_SECONDS)
    assert not worker.is_alive(), f"still waiting for Redis after {HANG_BOUND_SECONDS} s"
    return result[0]


def test_whoami_answers_while_redis_never_replies(app, make_org, make_token):
    _, secret = make_token(make_org())
    client = app.test_client()
    for _ in range(3):
        response = _within_bound(lambda: client.get(f"{API}/whoami", headers=bearer(secret)))
        assert response.status_code == 200
        assert "X-RateLimit-Limit" in response.headers  # counted in memory meanwhile


def test_every_redis_client_has_the_shared_timeouts(app):
    from extensions import redis_options

    options = redis_options(app.config)
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.25
    assert app.config["RATELIMIT_STORAGE_OPTIONS"]["socket_timeout"] == 0.25


def test_failed_sign_ins_from_many_threads_answer_while_redis_never_replies(
    app, make_org, make_user
):
    """The sign-in throttle falls back to memory too, on every thread at once, never a 500."""
    from concurrent.futures import ThreadPoolExecutor

    make_org(owner=make_user("ada@example.com"))

    def fail(i: int) -> int:
        client = app.test_client()
        with app.app_context():
            html = client.get("/login").get_data(as_text=True)
        token = html.split('name="csrf_token"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
        data = {"email": "ada@example.com", "password": "not it at all", "csrf_token": token}
        environ = {"REMOTE_ADDR": f"10.9.0.{i}"}
        return client.post("/login", data=data, environ_base=environ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = _within_bound(lambda: list(pool.map(fail, range(16))))
    assert set(statuses) <= {401, 429} and statuses.count(401) >= 10
