"""Keysmith against the floor (issue 17, SPEC §2 and §8), called by `make bench` per setup.

- The floor: a bare Flask app whose one view returns `jsonify(status="ok")` (`bare_app`
  below), served by the same gunicorn settings (workers, 8 threads) in the same run as
  Keysmith. One keep-alive client per request kind; each round sends the bare view,
  whoami and healthz once each in a shuffled order, so drift of a shared machine hits
  them alike; then rounds of a list of 1 and a list of 100 tokens, apart (a list's work
  after its answer would land on the light request that follows). Medians give
  whoami / bare (<= 1.5), healthz / bare (<= 1.2) and list 100 / list 1 (<= 2).
- Revocation: the bench process, a worker of its own on the same database (and Redis),
  revokes a token that the server's workers hold in their caches, at a random moment,
  while several keep-alive connections (one thread each) ask the server until each has
  been refused; the delay runs from the revoking commit's return to the last refusal.
  p50 and max of 20 trials: <= 100 ms with Redis (notices), <= 1 s without (the change
  counter on this host).

Only the standard library is imported at the top: gunicorn imports this module to serve
`bench.floor:bare_app()`.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_FLOOR_ROUNDS", 1500))
TRIALS = 20
REVOCATION_CONNECTIONS = 4
PASSWORD = "correct horse battery"


def bare_app():
    """The floor: Flask and one view, nothing else."""
    from flask import Flask, jsonify

    app = Flask("bare")

    @app.get("/")
    def ok():
        return jsonify(status="ok")

    return app


# ---------------------------------------------------------------- servers and clients


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(spec: str, env: dict, workers: int, ready_path: str, threads: int = 8) -> Iterator[int]:
    """gunicorn serving `spec` with the bench's settings; yields its port once it answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
         "--bind", f"127.0.0.1:{port}", "--keep-alive", "60", "--log-level", "warning", spec],
        cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", ready_path)
                ready = conn.getresponse().status == 200
                conn.close()
                if ready:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start {spec}")
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


class Client:
    """One keep-alive connection; reconnects if the server closed it."""

    def __init__(self, port: int, path: str, headers: dict | None = None) -> None:
        self.port, self.path, self.headers = port, path, headers or {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, headers: dict | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request("GET", self.path, headers=headers or self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- the figures


def bench_floor(setup, *, fresh_app, make_app, seed, report: Callable, env: dict) -> None:
    """Every figure of this module for one setup of bench/__main__.py."""
    app = fresh_app(setup, "floor")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    seeded = seed(app, 100)
    server_env = {**env, "DATABASE_URL": url}
    with (
        serve("app:create_app()", server_env, setup.workers, "/healthz") as port,
        serve("bench.floor:bare_app()", {}, setup.workers, "/") as bare_port,
    ):
        _latencies(setup, port, bare_port, seeded["secret"], report)
        # The revoker: a worker of the bench's own, with the server's Redis and prefix.
        revoker = make_app(
            url,
            **{k: v for k, v in setup.server_env.items() if k in ("REDIS_URL",)},
            RATELIMIT_KEY_PREFIX=setup.server_env.get("RATELIMIT_KEY_PREFIX", "keysmith"),
        )
        _revocation(setup, port, revoker, report)
        _dispose(revoker)
    _dispose(app)


def _latencies(setup, port: int, bare_port: int, secret: str, report: Callable) -> None:
    auth = {"Authorization": f"Bearer {secret}"}
    clients = {
        "bare": Client(bare_port, "/"),
        "whoami": Client(port, "/api/v1/whoami", auth),
        "healthz": Client(port, "/healthz"),
        "list1": Client(port, "/api/v1/api_tokens?length=1", auth),
        "list100": Client(port, "/api/v1/api_tokens?length=100", auth),
    }
    for kind, client in clients.items():
        status, body = client.get()
        if status != 200:
            raise RuntimeError(f"{kind} answered {status}: {body[:200]!r}")
    for _ in range(200):  # warm up
        for client in clients.values():
            client.get()
    times: dict[str, list[float]] = {kind: [] for kind in clients}
    # The light requests apart from the lists: a list's tail work (after its answer) would
    # otherwise land on whichever request follows it.
    for kinds, rounds in (
        (["bare", "whoami", "healthz"], 2 * ROUNDS),
        (["list1", "list100"], ROUNDS),
    ):
        for _ in range(rounds):
            random.shuffle(kinds)
            for kind in kinds:
                start = time.perf_counter()
                clients[kind].get()
                times[kind].append(time.perf_counter() - start)
    for client in clients.values():
        client.close()
    median = {kind: statistics.median(values) for kind, values in times.items()}

    def ratio(label: str, top: str, bottom: str, target: float) -> None:
        value = median[top] / median[bottom]
        report(
            f"{label} ({setup.server})",
            f"{value:.2f} ({median[top] * 1e3:.2f}/{median[bottom] * 1e3:.2f} ms)",
            f"<= {target}",
            value <= target,
        )

    ratio("whoami / bare Flask latency", "whoami", "bare", 1.5)
    ratio("healthz / bare Flask latency", "healthz", "bare", 1.2)
    ratio("list 100 / list 1 latency", "list100", "list1", 2)


def _trial_tokens(app, count: int) -> list[tuple[str, str]]:
    import sqlalchemy as sa

    from extensions import db
    from models import Membership
    from services import accounts, tokens
    from services.actor import Actor

    unlimited = "10000000/minute;1000000/second"
    with app.app_context():
        _, org = accounts.sign_up(
            email=f"revoker-{uuid.uuid4().hex[:8]}@example.com",
            password=PASSWORD,
            name="Revoker",
            organization="Revocations",
            default_rate_limit=unlimited,
        )
        db.session.flush()
        membership = db.session.scalar(
            sa.select(Membership).where(Membership.organization_id == org.id)
        )
        actor = Actor(organization=org, membership=membership, ip="127.0.0.1")
        made = [
            tokens.create_token(
                org, actor, name=f"trial-{i}", environment="production", role="viewer",
                expires_at=tokens.expiry_from_days(30),
            )
            for i in range(count)
        ]  # fmt: skip
        db.session.commit()
        result = [(token.id, secret) for token, secret in made]
        db.session.remove()
        return result


def _revoke(app, token_id: str, go: threading.Event) -> float:
    """Revoke the token, setting `go` just before its transaction commits; returns when the
    commit returned, the moment the revoking worker itself refuses the token."""
    from extensions import db
    from models import ApiToken, Organization
    from services import tokens
    from services.actor import Actor

    with app.app_context():
        token = db.session.get(ApiToken, token_id)
        org = db.session.get(Organization, token.organization_id)
        tokens.revoke_token(token, Actor(organization=org, membership=None))
        go.set()
        db.session.commit()  # the notices go once it has committed
        committed = time.perf_counter()
        db.session.remove()
        return committed


def _revocation(setup, port: int, revoker, report: Callable) -> None:
    with_redis = "REDIS_URL" in setup.server_env
    target = 0.1 if with_redis else 1.0
    label = f"revocation seen by another worker, p50 / max of {TRIALS} ({setup.server})"
    clients = [Client(port, "/api/v1/whoami") for _ in range(REVOCATION_CONNECTIONS)]
    delays = []
    for token_id, secret in _trial_tokens(revoker, TRIALS):
        headers = {"X-API-Key": secret}
        for client in clients:  # cached by whichever worker holds each connection
            for _ in range(2):
                status, body = client.get(headers)
                if status != 200:
                    raise RuntimeError(f"whoami answered {status}: {body[:200]!r}")
        time.sleep(random.uniform(0.05, 0.55))  # any moment of the workers' own checks
        # Each connection asks on its own thread, so one's answer never waits for another's.
        go, refused_at = threading.Event(), [0.0] * len(clients)

        def ask(i: int, client: Client, go=go, headers=headers, refused_at=refused_at) -> None:
            go.wait()
            stop = time.perf_counter() + 10
            while time.perf_counter() < stop:
                status, body = client.get(headers)
                if status == 401 and b"token_revoked" in body:
                    refused_at[i] = time.perf_counter()
                    return
                time.sleep(0.001)

        askers = [threading.Thread(target=ask, args=pair) for pair in enumerate(clients)]
        for asker in askers:
            asker.start()
        started = _revoke(revoker, token_id, go)
        for asker in askers:
            asker.join()
        delays.append(max(0.0, max(refused_at) - started) if all(refused_at) else 10.0)
    for client in clients:
        client.close()
    p50, worst = statistics.median(delays), max(delays)
    if os.environ.get("BENCH_VERBOSE"):
        print("    delays (ms):", sorted(round(d * 1e3) for d in delays))
    report(
        label,
        f"{p50 * 1e3:.0f} / {worst * 1e3:.0f} ms",
        f"<= {target * 1e3:.0f} ms",
        worst <= target,
    )


def _dispose(app) -> None:
    from extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()
