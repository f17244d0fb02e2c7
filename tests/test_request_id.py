"""X-Request-Id (SPEC §4): on every answer, echoed when the client's own is sane, in the
access log and in the audit events a request caused."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import API, bearer
from hot_path_support import gunicorn

from models import AuditEvent
from services import secrets as token_secrets

ROOT = Path(__file__).resolve().parent.parent
GENERATED = re.compile(r"req_[0-9a-f]{24}")


@pytest.mark.parametrize(
    "path",
    [f"{API}/whoami", f"{API}/openapi.json", f"{API}/nowhere", "/login", "/healthz", "/nowhere"],
)
def test_every_answer_carries_a_new_request_id(client, path):
    first = client.get(path).headers.get("X-Request-Id")
    second = client.get(path).headers.get("X-Request-Id")
    assert GENERATED.fullmatch(first or ""), first
    assert GENERATED.fullmatch(second or "") and second != first


# Python 3.12 warns of a fork while threads run (the suite's own); the child only writes.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_forked_workers_make_different_ids():
    """Ids come from a key and a counter of the process: each gunicorn worker (a fork) must
    draw its own, or siblings would repeat each other's ids."""
    from services.request_ids import new_request_id

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its first ids, then out without pytest's cleanup
        os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split()
    mine = [new_request_id() for _ in range(3)]
    assert len(theirs) == 3 and not set(theirs) & set(mine)


def test_an_unknown_host_refused_before_flask_carries_one_too(client):
    response = client.get(f"{API}/whoami", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert GENERATED.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize(
    "sent",
    ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:1.2_3", "x" * 200],
)
def test_a_sane_client_request_id_is_echoed(client, sent):
    response = client.get(f"{API}/whoami", headers={"X-Request-Id": sent})
    assert response.headers.get_all("X-Request-Id") == [sent]


@pytest.mark.parametrize(
    "sent",
    ["", "x" * 201, "has space", "semi;colon", "new\\nline", "é", "<script>", "a/b"],
)
def test_an_insane_client_request_id_is_replaced(client, sent):
    response = client.get(f"{API}/whoami", headers={"X-Request-Id": sent})
    assert GENERATED.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize("separator", ["_", ".", ":", "-"])
def test_a_secret_sent_as_request_id_is_neither_echoed_nor_kept(client, separator):
    secret = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    disguised = secret.replace("_", separator)  # still the secret, to whoever reads the log
    response = client.get(f"{API}/whoami", headers={"X-Request-Id": disguised})
    assert GENERATED.fullmatch(response.headers["X-Request-Id"])


def test_the_audit_event_a_request_caused_keeps_its_id(client, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, name="caller")
    created = client.post(
        f"{API}/api_tokens",
        json={"name": "traced"},
        headers={**bearer(secret), "X-Request-Id": "ticket-4711"},
    )
    assert created.status_code == 201
    event = db.session.scalar(
        sa.select(AuditEvent).where(
            AuditEvent.action == "token.created", AuditEvent.target_id == created.get_json()["id"]
        )
    )
    assert event.request_id == "ticket-4711"
    listed = client.get(
        f"{API}/audit_events", query_string={"target_id": event.target_id}, headers=bearer(secret)
    )
    assert [e["request_id"] for e in listed.get_json()["audit_events"]] == ["ticket-4711"]


def test_the_console_keeps_it_too_and_the_csv_shows_it(client, db, make_user, make_org):
    from conftest import PASSWORD

    owner = make_user()
    make_org(owner)
    client.sign_in(owner.email, PASSWORD)
    page = "/connections/api-tokens?environment=sandbox"
    response = client.form(
        "/connections/api-tokens",
        {"name": "from the console", "environment": "sandbox", "role": "viewer",
         "type": "generic", "expires_in_days": "30"},
        page=page,
        headers={"X-Request-Id": "console-1"},
    )  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["X-Request-Id"] == "console-1"
    export = client.get("/connections/audit-log.csv?environment=sandbox")
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    created = [r for r in rows if r["action"] == "token.created"]
    assert [r["request_id"] for r in created] == ["console-1"]


def test_the_access_log_names_each_requests_id(tmp_path):
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
    log = tmp_path / "access.log"
    with gunicorn(
        env, "-w", "1", "--access-logfile", str(log), log_path=tmp_path / "server.log"
    ) as base:
        request = urllib.request.Request(f"{base}/healthz", headers={"X-Request-Id": "find-me-42"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            assert response.headers["X-Request-Id"] == "find-me-42"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:  # noqa: S310
            generated = response.headers["X-Request-Id"]
    lines = log.read_text().splitlines()
    assert any(line.endswith(" find-me-42") and "/healthz" in line for line in lines), lines
    assert any(line.endswith(" " + generated) for line in lines), lines
