"""Test helpers shared by conftest.py and test modules: the app settings of a test
"worker" on a database, the owner as an actor, and a SQL statement counter.

(Not in conftest.py: test modules cannot import it by name once tests/browser/ has one.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from app import create_app
from extensions import db
from models import Membership, Organization
from services.actor import Actor


def worker_config(url: str, **extra) -> dict:
    """The settings of a test app ("worker") on this database; conftest's app uses them too."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "TOKEN_HMAC_KEY": "test-token-hmac-key",
        "SQLALCHEMY_DATABASE_URI": url,
        "BCRYPT_LOG_ROUNDS": 4,
        # Tests sign up many people from 127.0.0.1; test_signup_throttle.py checks the default.
        "SIGNUP_THROTTLE": "10000 per hour",
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


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(env: dict[str, str], *options: str, log_path: Path, start_timeout: float = 30):
    """gunicorn serving `app:create_app()` on a free port for the block; yields its base URL.

    Waits for /healthz to answer 200; if the server dies or never answers, fails with its log.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{port}",
             "app:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310
                        if response.status == 200:
                            break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text()}")
                    time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
