"""Faults under load (issue 16): a real gunicorn (2 workers) on a PostgreSQL cluster and a
Redis of this test's own, on free ports, while client threads create tokens and call whoami
through: Redis paused (CLIENT PAUSE), Redis stopped (SIGSTOP) then continued, Redis killed
and restarted, PostgreSQL shut down (fast) and started again.

It asserts what a client relies on: no 5xx but 503 (always JSON, never gunicorn's page), no
request over 1 s while Redis is paused, every acknowledged create's secret works afterwards,
every unacknowledged create left no token, nothing counted against a limit (no 429), and no
traceback in the server's log.

The PostgreSQL cluster is made with initdb in a temporary directory (as the `postgres` OS
user when run as root: initdb and pg_ctl refuse root); the shared servers on 5432 and 6379
are never touched. Skipped, saying why, only where no PostgreSQL server binaries or no
redis-server exist.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from hot_path_support import free_port, gunicorn

pytestmark = pytest.mark.faults

CLIENTS = 6
WORKERS = 2
PAUSE_SECONDS = 3
# What gunicorn's server reads from the environment: ours only, whatever the shell exported.
STRIPPED = (
    "DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "TEST_REDIS_URL", "SECRET_KEY",
    "TOKEN_HMAC_KEY", "TOKEN_HMAC_OLD_KEYS", "RATELIMIT_KEY_PREFIX", "GUNICORN_CMD_ARGS",
    "WEB_CONCURRENCY", "REDIS_TIMEOUT_SECONDS", "RATE_LIMIT_DEFAULT", "RATE_LIMIT_MAX",
    "BASE_URL", "TRUSTED_HOSTS", "PROXY_COUNT",
)  # fmt: skip
NO_LIMIT = "100000/minute;10000/second"


# ---------------------------------------------------------------- servers of our own


def _pg_bindir() -> str | None:
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and all(
            os.access(os.path.join(directory, name), os.X_OK) for name in ("initdb", "pg_ctl")
        ):
            return directory
    return None


class Postgres:
    """A cluster in a temporary directory, on a free port of 127.0.0.1."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="keysmith-faults-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and pg_ctl refuse root: run them as postgres
            import pwd

            if shutil.which("runuser") is None:
                pytest.skip("running as root needs runuser to start PostgreSQL as postgres")
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root needs a `postgres` OS user to run initdb")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.as_user, *args],
            check=True, capture_output=True, timeout=timeout, cwd=self.root,
        )  # fmt: skip

    def init(self) -> None:
        self._run(
            f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        self._run(
            f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """redis-server on a free port, no persistence; paused, stopped and killed at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.answers():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def pause(self, seconds: float) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        client.close()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


# ---------------------------------------------------------------- the load


@dataclass
class Answer:
    kind: str  # "create" or "whoami"
    started: float
    seconds: float
    status: int | None  # None: no answer at all (refused, reset, timed out)
    content_type: str
    body: bytes
    name: str | None = None


class Load:
    """CLIENTS threads, each creating a token and calling whoami in turn, until stopped."""

    def __init__(self, port: int, secret: str) -> None:
        self.port, self.secret = port, secret
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def _request(self, kind: str, method: str, path: str, body: dict | None, name=None) -> Answer:
        headers = {"Authorization": f"Bearer {self.secret}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            answer = Answer(
                kind, started, time.monotonic() - started, response.status,
                response.getheader("Content-Type", ""), response.read(), name,
            )  # fmt: skip
        except (OSError, http.client.HTTPException):
            answer = Answer(kind, started, time.monotonic() - started, None, "", b"", name)
        finally:
            conn.close()
        with self._lock:
            self.answers.append(answer)
        return answer

    def _client(self, number: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            name = f"fault-{number}-{i}-{uuid.uuid4().hex[:6]}"
            self._request(
                "create", "POST", "/api/v1/api_tokens",
                {"name": name, "role": "viewer", "expires_in_days": 30}, name,
            )  # fmt: skip
            self._request("whoami", "GET", "/api/v1/whoami", None)
            time.sleep(0.02)  # a steady load, not a benchmark, on a small shared machine

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


# ---------------------------------------------------------------- fixture and test


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    workdir = tmp_path_factory.mktemp("faults")
    postgres = Postgres(bindir)
    redis_server = Redis(workdir)
    try:
        postgres.init()
        postgres.start()
        redis_server.start()
        engine = sa.create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE keysmith"))
        engine.dispose()
        yield {"postgres": postgres, "redis": redis_server, "workdir": workdir}
    finally:
        redis_server.stop()
        postgres.remove()


def _seed(database_url: str, instance: Path) -> str:
    """Migrate, and make an owner, an organization without limits and an admin token."""
    from flask_migrate import upgrade

    from app import create_app
    from extensions import db
    from models import Membership
    from services import accounts, tokens
    from services.actor import Actor

    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "faults-secret",
            "TOKEN_HMAC_KEY": "faults-hmac",
            "BCRYPT_LOG_ROUNDS": 4,
            "RATELIMIT_STORAGE_URI": "memory://",
            "RATE_LIMIT_MAX": NO_LIMIT,
        },
        instance_path=str(instance),
    )
    with app.app_context():
        upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))
        user, org = accounts.sign_up(
            email="owner@example.com", password="correct horse battery", name="Owner",
            organization="Faults", default_rate_limit=NO_LIMIT,
        )  # fmt: skip
        org.max_live_tokens = 100_000
        org.rate_limit = NO_LIMIT
        db.session.flush()
        membership = db.session.scalar(
            sa.select(Membership).where(Membership.organization_id == org.id)
        )
        actor = Actor(organization=org, membership=membership, ip="127.0.0.1")
        token, secret = tokens.create_token(
            org, actor, name="load", environment="sandbox", role="admin",
            expires_at=tokens.expiry_from_days(365),
        )  # fmt: skip
        token.rate_limit = NO_LIMIT
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return secret


def _names_stored(database_url: str, names: list[str]) -> set[str]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT name FROM api_tokens WHERE name = ANY(:names)"), {"names": names}
            )
            return {row.name for row in rows}
    finally:
        engine.dispose()


def test_faults_never_cost_a_secret_a_hang_or_a_bare_500(servers, tmp_path):
    postgres: Postgres = servers["postgres"]
    redis_server: Redis = servers["redis"]
    database_url = postgres.url("keysmith")
    secret = _seed(database_url, tmp_path / "seed")
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        SECRET_KEY="faults-secret",
        TOKEN_HMAC_KEY="faults-hmac",
        RATE_LIMIT_MAX=NO_LIMIT,
        BCRYPT_LOG_ROUNDS="4",
    )
    log_path = tmp_path / "gunicorn.log"
    phases: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def phase(name: str):
        start = time.monotonic()
        yield
        phases[name] = (start, time.monotonic())

    with gunicorn(env, "--workers", str(WORKERS), "--threads", "8", log_path=log_path) as url:
        port = int(url.rsplit(":", 1)[1])
        with Load(port, secret) as load:
            time.sleep(2)  # steady
            with phase("redis paused"):
                redis_server.pause(PAUSE_SECONDS)
                time.sleep(PAUSE_SECONDS)
            time.sleep(1.5)
            with phase("redis stopped"):
                redis_server.signal(signal.SIGSTOP)
                time.sleep(3)
                redis_server.signal(signal.SIGCONT)
            time.sleep(1.5)
            with phase("redis killed"):
                redis_server.kill()
                time.sleep(2)
                redis_server.start()
            time.sleep(2)
            for cycle in (1, 2):  # twice: each meets requests at other points of their work
                with phase(f"postgres down {cycle}"):
                    postgres.stop("fast")
                    time.sleep(2)
                    postgres.start()
                time.sleep(2)
            time.sleep(1)  # everything is back
        answers = load.answers

        # Every acknowledged create's secret works now.
        acknowledged = [
            (a.name, json.loads(a.body)["token"])
            for a in answers
            if a.kind == "create" and a.status == 201
        ]
        broken = []
        for name, new_secret in acknowledged:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", "/api/v1/whoami", headers={"Authorization": f"Bearer {new_secret}"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status != 200 or json.loads(body)["token"]["name"] != name:
                broken.append((name, response.status))
    log = log_path.read_text(errors="replace")

    statuses = sorted({a.status for a in answers}, key=str)
    summary = {
        name: sorted({(a.kind, a.status) for a in answers if start <= a.started <= end}, key=str)
        for name, (start, end) in phases.items()
    }
    samples = {a.status: a.body[:300] for a in answers if a.kind == "create"}
    assert acknowledged, f"no create succeeded at all: {samples}"
    assert [a for a in answers if a.status is None] == [], "requests got no answer at all"
    bad = [(a.kind, a.status, a.content_type, a.body[:200]) for a in answers if a.status >= 500]
    assert all(status == 503 for _, status, _, _ in bad), bad
    not_json = [(a.kind, a.status, a.content_type) for a in answers if "json" not in a.content_type]
    assert not_json == [], not_json  # gunicorn's own error page is HTML
    assert 429 not in statuses, f"an outage was counted against a limit: {summary}"
    assert {a.status for a in answers} <= {200, 201, 503}, summary

    start, end = phases["redis paused"]
    paused = [a for a in answers if start <= a.started <= end - 0.3]
    assert paused, "no request ran while Redis was paused"
    slowest = max(a.seconds for a in paused)
    assert slowest <= 1.0, f"a request took {slowest:.2f} s while Redis was paused"
    assert any(a.status == 503 for a in answers), f"the outage was not seen: {summary}"

    assert broken == [], f"acknowledged creates whose secret does not work: {broken}"
    unacknowledged = [a.name for a in answers if a.kind == "create" and a.status != 201]
    assert unacknowledged, "no create failed: the database outage was not met"
    assert _names_stored(database_url, unacknowledged) == set(), "a refused create left a token"

    assert "Traceback" not in log, log[-6000:]
