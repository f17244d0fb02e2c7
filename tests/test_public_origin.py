"""Absolute links come from configuration, never from the client's Host header (issue 14):
BASE_URL, the trusted hosts, and what a proxy's X-Forwarded-* headers are believed for."""

from __future__ import annotations

import json
import re

import pytest
from hot_path_support import another_worker
from werkzeug.test import EnvironBuilder

from extensions import db as _db
from tests.conftest import Client

BASE = "https://keys.example.com"
EVIL = {"Host": "evil.example"}


@pytest.fixture
def worker(backend, database_urls, tmp_path):
    """Another app on the test's database with extra settings; its engine is closed after."""
    made = []

    def make(**settings):
        app = another_worker(database_urls[backend], str(tmp_path / f"w{len(made)}"), **settings)
        app.test_client_class = Client
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            _db.engine.dispose()


def _bearer(secret: str, **headers) -> dict:
    return {"Authorization": f"Bearer {secret}", **headers}


def test_with_base_url_links_name_it_and_another_host_is_refused(worker, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org, role="admin")
    app = worker(BASE_URL=BASE)
    client = app.test_client()
    own = {"Host": "keys.example.com"}

    created = client.post("/api/v1/api_tokens", json={"name": "ci"}, headers=_bearer(secret, **own))
    assert created.status_code == 201
    assert created.headers["Location"].startswith(f"{BASE}/api/v1/api_tokens/")
    assert created.get_json()["href"].startswith(f"{BASE}/api/v1/api_tokens/")
    servers = client.get("/api/v1/openapi.json", headers=own).get_json()["servers"]
    assert servers == [{"url": f"{BASE}/api/v1"}]

    refused = client.post("/api/v1/api_tokens", json={"name": "x"}, headers=_bearer(secret, **EVIL))
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "validation_error"
    assert "evil.example" not in refused.get_data(as_text=True)
    assert client.get("/api/v1/openapi.json", headers=EVIL).status_code == 400
    page = client.get("/login", headers=EVIL)
    assert page.status_code == 400 and "BASE_URL" in page.get_data(as_text=True)
    # A load balancer probes by address.
    assert client.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_the_invite_link_names_base_url(worker, db, make_org, make_user):
    owner = make_user(email="owner@example.com")
    make_org(owner=owner)
    # The test client's requests say Host: localhost; the link still names BASE_URL.
    client = worker(BASE_URL=BASE, TRUSTED_HOSTS=["localhost"]).test_client()
    # Over HTTPS, Flask-WTF wants a same-origin Referer on every form post, as browsers send.
    client.environ_base["HTTP_REFERER"] = f"{BASE}/settings/members"
    client.sign_in("owner@example.com")
    page = client.form(
        "/settings/members",
        {"email": "new@example.com", "role": "member"},
        page="/settings/members",
    )
    link = re.search(r'<code id="invite-link">([^<]+)</code>', page.get_data(as_text=True))
    assert link and link.group(1).startswith(f"{BASE}/invites/")


def test_without_base_url_only_local_hosts_are_answered(client, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org)
    assert client.get("/login").status_code == 200  # Host: localhost
    assert client.get("/login", headers={"Host": "127.0.0.1:5000"}).status_code == 200
    assert client.get("/login", headers=EVIL).status_code == 400
    assert client.get("/api/v1/api_tokens", headers=_bearer(secret, **EVIL)).status_code == 400
    assert client.get("/api/v1/openapi.json", headers=EVIL).status_code == 400


def test_trusted_hosts_are_answered_with_their_own_links(worker, db, make_org, make_token):
    org = make_org()
    _, secret = make_token(org)
    client = worker(TRUSTED_HOSTS=["keys.internal"]).test_client()
    listed = client.get("/api/v1/openapi.json", headers={"Host": "keys.internal"})
    assert listed.get_json()["servers"] == [{"url": "http://keys.internal/api/v1"}]
    assert client.get("/api/v1/openapi.json").status_code == 400  # localhost is not listed


def test_a_clients_own_forwarded_host_and_proto_are_not_believed_behind_a_proxy(
    worker, db, make_org, make_token
):
    org = make_org()
    _, secret = make_token(org, role="admin")
    client = worker(PROXY_COUNT=1).test_client()
    forged = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
              "X-Forwarded-For": "198.51.100.4"}  # fmt: skip
    created = client.post(
        "/api/v1/api_tokens", json={"name": "ci"}, headers=_bearer(secret, **forged)
    )
    assert created.status_code == 201
    assert created.headers["Location"].startswith("http://localhost/api/v1/api_tokens/")

    # An operator whose proxy sets them itself may say so.
    trusting = worker(PROXY_COUNT=1, PROXY_TRUST_HOST=True, PROXY_TRUST_PROTO=True,
                      TRUSTED_HOSTS=["keys.example.com"]).test_client()  # fmt: skip
    proxied = {"X-Forwarded-Host": "keys.example.com", "X-Forwarded-Proto": "https"}
    servers = trusting.get("/api/v1/openapi.json", headers=proxied).get_json()["servers"]
    assert servers == [{"url": "https://keys.example.com/api/v1"}]
    assert trusting.get("/api/v1/openapi.json", headers={"X-Forwarded-Host": "evil.example"}
                        ).status_code == 400  # fmt: skip


def test_security_headers(worker, client):
    page = client.get("/login")
    assert "base-uri 'none'" in page.headers["Content-Security-Policy"]
    assert "camera=()" in page.headers["Permissions-Policy"]
    assert "Strict-Transport-Security" not in page.headers  # plain HTTP
    secure = worker(SESSION_COOKIE_SECURE=True).test_client().get("/login")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=63072000")


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/api/v1/whoami", "localhost"),  # the API's 401
        ("/api/v1/nowhere", "localhost"),  # its 404
        ("/healthz", "localhost"),  # answered before Flask
        ("/static/app.js", "localhost"),
        ("/login", "evil.example"),  # refused before Flask
    ],
)
def test_every_answer_carries_the_security_headers_once(client, path, host):
    response = client.get(path, headers={"Host": host})
    for name, value in (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    ):
        assert response.headers.get_all(name) == [value], (path, name)


def test_an_answer_that_sets_its_own_security_header_keeps_it(worker, client):
    app = worker()

    @app.get("/own-policy")
    def own_policy():
        return "", 200, {"Referrer-Policy": "no-referrer", "X-Frame-Options": "SAMEORIGIN"}

    response = app.test_client().get("/own-policy")
    assert response.headers.get_all("Referrer-Policy") == ["no-referrer"]
    assert response.headers.get_all("X-Frame-Options") == ["SAMEORIGIN"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_last_resort_answer_carries_them_too(worker, client, monkeypatch):
    """An error that escapes Flask (here, after the API's own last hook set the rate-limit
    headers) is answered by the last-resort layer: with every answer's headers, once, and
    without the first answer's rate-limit headers."""
    app = worker()

    def explodes(response):
        raise RuntimeError("boom")

    def unhandled(error):
        raise error

    app.after_request_funcs[None].insert(0, explodes)  # runs after the API's finishing hook
    monkeypatch.setattr(app, "handle_exception", unhandled)  # past Flask's own handlers
    logged = []
    monkeypatch.setattr("blueprints.last_resort.log.error", lambda *a: logged.append(a))
    # As a server calls it: werkzeug's test client re-raises whatever comes with exc_info.
    answered = []
    environ = EnvironBuilder("/api/v1/whoami", base_url="http://localhost").get_environ()
    body = b"".join(app.wsgi_app(environ, lambda *args: answered.append(args)))
    status, headers, exc_info = answered[-1]
    assert logged and exc_info is not None, "not the last-resort answer"
    assert status.startswith("500")
    assert json.loads(body)["error"]["code"] == "internal_error"
    names = [name for name, _ in headers]
    assert names.count("X-Frame-Options") == 1 and names.count("X-Request-Id") == 1
    assert "X-RateLimit-Limit" not in names
