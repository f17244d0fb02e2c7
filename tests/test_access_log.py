"""gunicorn's access log (gunicorn.conf.py) never shows a secret, even one put in a URL."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hot_path_support import gunicorn

from services import secrets as token_secrets

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str) -> None:
    with contextlib.suppress(urllib.error.HTTPError):  # 401s and 404s are expected
        urllib.request.urlopen(url, timeout=5).close()  # noqa: S310 - our own local server


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The environment of a gunicorn serving a freshly migrated SQLite file, no Redis."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ks.db'}",
        "SECRET_KEY": "gunicorn-test",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return env


def test_the_access_log_redacts_secrets_in_paths_and_queries(tmp_path, env):
    log = tmp_path / "access.log"
    secret = token_secrets.new_secret("production", token_secrets.new_token_id())
    with gunicorn(
        env, "-w", "1", "--access-logfile", str(log), log_path=tmp_path / "server.log"
    ) as base:
        _get(f"{base}/api/v1/api_tokens/{secret}")
        _get(f"{base}/api/v1/whoami?token={secret}")
        _get(f"{base}/api/v1/whoami?token={secret[:30]}")  # a cut one too
    text = log.read_text()
    assert "/api/v1/whoami" in text and "ks_[REDACTED]" in text
    assert secret not in text and secret[:30] not in text


def test_a_path_with_a_newline_cannot_forge_a_log_line(tmp_path, env):
    """Attack review: `/healthz%0A<a line of our format>` wrote a second, forged line into
    the access log. A client's text stays on its own line, escaped."""
    log = tmp_path / "access.log"
    forged = '127.0.0.1 [01/Jan/2020:15:00:00 +0000] "POST /api/v1/api_tokens" 201 575B'
    with gunicorn(
        env, "-w", "1", "--access-logfile", str(log), log_path=tmp_path / "server.log"
    ) as base:
        _get(f"{base}/api/v1/nowhere%0A" + urllib.parse.quote(forged))
        _get(f"{base}/healthz%0D%0A" + urllib.parse.quote(forged))
    # (The harness's own readiness probes are plain `GET /healthz` lines.)
    lines = [line for line in log.read_text().splitlines() if '"GET /healthz"' not in line]
    assert len(lines) == 2, lines
    assert not any(line.startswith("127.0.0.1 [01/Jan/2020") for line in lines)
    assert all("\\x0a" in line for line in lines)


def test_an_enormous_token_in_each_header_gets_the_json_401_from_gunicorn(tmp_path, env):
    """gunicorn.conf.py lets a 60 KB header through, so Keysmith answers it (SPEC §4)."""
    huge = "ks_sbx_" + "A" * 45_000  # base64 makes the Basic header 60 KB
    basic = "Basic " + base64.b64encode(f"x:{huge}".encode()).decode()
    with gunicorn(env, "-w", "1", log_path=tmp_path / "server.log") as base:
        for header in (
            {"Authorization": f"Bearer {huge}"},
            {"X-API-Key": huge},
            {"Authorization": basic},
        ):
            request = urllib.request.Request(f"{base}/api/v1/whoami", headers=header)
            try:
                urllib.request.urlopen(request, timeout=5)  # noqa: S310 - our own local server
            except urllib.error.HTTPError as error:
                body = json.loads(error.read())
                assert error.code == 401, header.keys()
                assert body["error"]["code"] == "invalid_token"
            else:
                raise AssertionError("an enormous token was accepted")
