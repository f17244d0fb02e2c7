"""gunicorn's access log (gunicorn.conf.py) never shows a secret, even one put in a URL."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services import secrets as token_secrets

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> None:
    with contextlib.suppress(urllib.error.HTTPError):  # 401s and 404s are expected
        urllib.request.urlopen(url, timeout=5).close()  # noqa: S310 - our own local server


def test_the_access_log_redacts_secrets_in_paths_and_queries(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ks.db'}",
        "SECRET_KEY": "access-log-test",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    port, log = _free_port(), tmp_path / "access.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
         "--access-logfile", str(log), "app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    secret = token_secrets.new_secret("production", token_secrets.new_token_id())
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        _get(f"{base}/api/v1/api_tokens/{secret}")
        _get(f"{base}/api/v1/whoami?token={secret}")
        _get(f"{base}/api/v1/whoami?token={secret[:30]}")  # a cut one too
    finally:
        server.terminate()
        server.wait(timeout=10)
    text = log.read_text()
    assert "/api/v1/whoami" in text and "ks_[REDACTED]" in text
    assert secret not in text and secret[:30] not in text
