"""The sign-in throttle against a real gunicorn (issue 14): 40 simultaneous wrong passwords
for one email reach bcrypt at most 10 times, on one worker with 8 threads (SQLite, the
embedded default) and on two workers sharing PostgreSQL and Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from hot_path_support import gunicorn

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "victim@example.com"
SETUPS = ["sqlite-1-worker-8-threads"] + (
    ["postgresql-redis-2-workers"]
    if os.environ.get("TEST_DATABASE_URL") and os.environ.get("TEST_REDIS_URL")
    else []
)


def _flask(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture(params=SETUPS)
def server(request, tmp_path) -> Iterator[str]:
    env = {
        **os.environ,
        "SECRET_KEY": "throttle-gunicorn-test",
        # Slow enough that the guesses really overlap inside the password check.
        "BCRYPT_LOG_ROUNDS": "10",
        "RATELIMIT_KEY_PREFIX": f"throttle-{uuid.uuid4().hex[:12]}",
        "LOGIN_THROTTLE": "10 per 15 minutes",
    }
    dropped = None
    if request.param.startswith("sqlite"):
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'ks.db'}"
        env.pop("REDIS_URL", None)
        options = ["--workers", "1", "--threads", "8"]
    else:
        admin = sa.make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
        dropped = f"keysmith_throttle_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{dropped}"'))
        engine.dispose()
        env["DATABASE_URL"] = admin.set(database=dropped).render_as_string(hide_password=False)
        env["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
        options = ["--workers", "2", "--threads", "4"]
    try:
        _flask(env, "db", "upgrade")
        _flask(
            env, "keysmith", "create-user", EMAIL, "Victims", "--password", "the right password!"
        )
        with gunicorn(env, *options, log_path=tmp_path / "server.log") as url:
            yield url
    finally:
        if dropped:
            engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)'))
            engine.dispose()
        if env.get("REDIS_URL"):
            import redis

            client = redis.Redis.from_url(env["REDIS_URL"])
            for key in client.scan_iter(f"*{env['RATELIMIT_KEY_PREFIX']}*"):
                client.delete(key)
            client.close()


def test_forty_parallel_guesses_reach_the_password_check_at_most_ten_times(server):
    def opened(_):  # each guesser has its form (cookie and CSRF token) before any submits
        browser = requests.Session()
        html = browser.get(f"{server}/login", timeout=10).text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
        return browser, token

    def guess(opened) -> int:
        browser, token = opened
        data = {"email": EMAIL, "password": "a wrong password", "csrf_token": token}
        return browser.post(f"{server}/login", data=data, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        browsers = list(pool.map(opened, range(40)))
        statuses = list(pool.map(guess, browsers))
    checked = statuses.count(401)  # a 401 is a password checked and found wrong
    assert statuses.count(429) == 40 - checked, statuses
    assert 1 <= checked <= 10, statuses
