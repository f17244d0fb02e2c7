"""Clients nobody here wrote, generated from the served /api/v1/openapi.json, against a live
gunicorn on a real SQLite file (SPEC §4: they work unmodified).

- openapi-python-client (pinned in pyproject's dev extras): generate, import, then list,
  create with only a name, suspend, rotate and revoke, asserting each answer.
- openapi-typescript and tsc (tests/clients/package.json, installed by .ci/run with
  `npm ci`): generate api.d.ts, type-check tests/clients/smoke.ts with `tsc --strict`, then
  run the compiled script against the same server. Skipped, saying why, only where those
  npm tools are not installed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from hot_path_support import gunicorn, owner_actor, worker_config

from app import create_app
from extensions import db
from models import Membership, Organization
from services import accounts
from services import tokens as token_service

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
NPM_BIN = CLIENTS / "node_modules" / ".bin"
BIN = Path(sys.executable).parent
KEYS = {"SECRET_KEY": "client-tests-secret", "TOKEN_HMAC_KEY": "client-tests-hmac"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A migrated SQLite file with an organization and an admin token, served by gunicorn
    with our gunicorn.conf.py; yields (API base URL, the token's secret)."""
    tmp = tmp_path_factory.mktemp("clients")
    url = f"sqlite:///{tmp / 'ks.db'}"
    app = create_app(worker_config(url, **KEYS), instance_path=str(tmp / "inst"))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade(directory=str(ROOT / "migrations"))
        user = accounts.create_user(
            email="ada@example.com", name="Ada", password="correct horse battery"
        )
        org = Organization(name="Acme", rate_limit="1000/minute;100/second")
        db.session.add(org)
        db.session.flush()
        db.session.add(Membership(organization_id=org.id, user_id=user.id, role="owner"))
        _, secret = token_service.create_token(
            org, owner_actor(org), name="generated clients", environment="sandbox",
            role="admin", expires_at=token_service.expiry_from_days(30),
        )  # fmt: skip
        db.session.commit()
        db.engine.dispose()
    env = {**os.environ, **KEYS, "DATABASE_URL": url}
    env.pop("REDIS_URL", None)
    with gunicorn(env, "-w", "1", "--threads", "4", log_path=tmp / "server.log") as base:
        yield f"{base}/api/v1", secret


@pytest.fixture(scope="module")
def document(server, tmp_path_factory) -> Path:
    base, _ = server
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as response:  # noqa: S310
        doc = json.load(response)
    assert doc["servers"] == [{"url": base}]
    path = tmp_path_factory.mktemp("document") / "openapi.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_generated_python_client_works_unmodified(server, document, tmp_path, monkeypatch):
    base, secret = server
    generator = BIN / "openapi-python-client"
    generated = subprocess.run(
        [str(generator), "generate", "--path", str(document),
         "--output-path", str(tmp_path / "keysmith_client"), "--meta", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        _run_python_client(base, secret)
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "keysmith_client"]:
            del sys.modules[name]


def _run_python_client(base: str, secret: str) -> None:
    client_module = importlib.import_module("keysmith_client")
    tokens = importlib.import_module("keysmith_client.api.tokens")
    for name in ("list_tokens", "create_token", "update_token", "rotate_token", "revoke_token"):
        importlib.import_module(f"keysmith_client.api.tokens.{name}")
    models = importlib.import_module("keysmith_client.models")
    with client_module.AuthenticatedClient(base_url=base, token=secret) as client:
        _steps(client, tokens, models)


def _steps(client, tokens, models) -> None:
    listed = tokens.list_tokens.sync(client=client, length=10)
    assert isinstance(listed, models.TokenList), listed
    assert listed.query.total >= 1
    assert all(isinstance(t, models.Token) for t in listed.api_tokens)

    created = tokens.create_token.sync_detailed(
        client=client, body=models.TokenCreate(name="python client")
    )
    assert created.status_code == 201, created.content
    token = created.parsed
    assert isinstance(token, models.TokenWithSecret)
    assert token.token.startswith("ks_sbx_") and token.name == "python client"
    assert token.role == models.TokenRole.VIEWER
    assert created.headers["Location"].endswith(f"/api_tokens/{token.id}")

    patched = tokens.update_token.sync(
        client=client, token_id=token.id, body=models.TokenUpdate(active=False)
    )
    assert isinstance(patched, models.Token), patched
    assert patched.status == models.TokenStatus.INACTIVE
    assert patched.expires_at == token.expires_at  # nothing else changed

    rotated = tokens.rotate_token.sync(
        client=client, token_id=token.id, body=models.TokenRotate(grace_period_seconds=3600)
    )
    assert isinstance(rotated, models.TokenWithSecret), rotated
    assert rotated.token != token.token and rotated.id == token.id

    revoked = tokens.revoke_token.sync_detailed(client=client, token_id=token.id)
    assert revoked.status_code == 204
    after = importlib.import_module("keysmith_client.api.tokens.get_token").sync(
        client=client, token_id=token.id
    )
    assert after.status == models.TokenStatus.REVOKED

    refused = tokens.create_token.sync_detailed(
        client=client, body=models.TokenCreate(name="python client 2", role="root")
    )  # a value the types would not take: the server's own error, parsed
    assert refused.status_code == 400
    assert refused.parsed.error.code == "validation_error"
    assert refused.headers["X-Request-Id"]


def _npm_tool(name: str) -> Path:
    tool = NPM_BIN / name
    if not tool.exists() or shutil.which("node") is None:
        pytest.skip(
            f"{name} is not installed: run `npm ci --prefix tests/clients` (.ci/run does) "
            "with node on PATH"
        )
    return tool


@pytest.fixture
def npm_tools() -> tuple[Path, Path]:
    """Checked before the server starts, so a run without them skips at once."""
    return _npm_tool("openapi-typescript"), _npm_tool("tsc")


def test_generated_typescript_types_check_strictly_and_the_script_runs(
    npm_tools, server, document, tmp_path
):
    base, secret = server
    generate, tsc = npm_tools
    for name in ("smoke.ts", "tsconfig.json"):
        shutil.copy(CLIENTS / name, tmp_path / name)
    generated = subprocess.run(
        [str(generate), str(document), "-o", str(tmp_path / "api.d.ts")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    checked = subprocess.run(
        [str(tsc), "-p", str(tmp_path / "tsconfig.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '"strict": true' in (tmp_path / "tsconfig.json").read_text()
    ran = subprocess.run(
        ["node", str(tmp_path / "out" / "smoke.js"), base, secret],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout.strip().splitlines()[-1])["ok"] is True
