"""POST /api/v1/leaks: secret scanners report tokens; live ones are revoked; counts only."""

import json

import pytest
import sqlalchemy as sa

from models import AuditEvent
from services import secrets as token_secrets

URL = "/api/v1/leaks"


def test_a_reported_token_is_revoked_and_the_answer_is_counts_only(
    client, db, make_org, make_token
):
    org = make_org()
    token, secret = make_token(org, environment="production")
    other, other_secret = make_token(org)
    unknown = token_secrets.new_secret("sandbox", token_secrets.new_token_id())

    response = client.post(URL, json={"tokens": [secret, unknown]})
    assert response.status_code == 200
    assert response.get_json() == {"received": 2, "revoked": 1}
    assert "X-RateLimit-Limit" in response.headers

    # The revoked token no longer authenticates; the other one still does.
    revoked = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401
    assert revoked.get_json()["error"]["code"] == "token_revoked"
    fine = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {other_secret}"})
    assert fine.status_code == 200

    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "token.revoked"))
    assert (event.target_id, event.actor_label, event.details) == (
        token.id,
        "leak report",
        {"reason": "leaked"},
    )


def _github_match(secret: str) -> dict:
    return {
        "token": secret,
        "type": "keysmith_api_token",
        "url": "https://github.com/octo/repo/blob/abc123/.env#L1",
        "source": "content",
    }


@pytest.mark.parametrize(
    "shape",
    [
        lambda secrets: {"tokens": secrets},
        lambda secrets: secrets,  # issue 8: a JSON list of strings
        lambda secrets: [_github_match(s) for s in secrets],  # GitHub secret scanning
    ],
    ids=["object", "list-of-strings", "github-matches"],
)
def test_a_report_is_taken_in_each_of_its_shapes(client, db, make_org, make_token, shape):
    org = make_org()
    token, secret = make_token(org)
    unknown = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    response = client.post(URL, json=shape([secret, unknown]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"received": 2, "revoked": 1}
    db.session.refresh(token)
    assert token.status == "revoked" and token.revoked_reason == "leaked"


def test_the_answer_does_not_say_which_string_was_a_token(client, make_org, make_token):
    org = make_org()
    _, secret = make_token(org)
    first = client.post(URL, json={"tokens": [secret]}).get_json()
    again = client.post(URL, json={"tokens": [secret]}).get_json()  # already revoked now
    assert first == {"received": 1, "revoked": 1}
    assert again == {"received": 1, "revoked": 0}


def test_admins_see_a_banner_members_do_not(
    client, db, make_org, make_user, make_member, make_token
):
    owner = make_user(email="owner@example.com")
    org = make_org(owner=owner)
    make_member(org, role="member", user=make_user(email="member@example.com"))
    _, secret = make_token(org)
    client.post(URL, json={"tokens": [secret]})

    client.sign_in("owner@example.com")
    assert "reported leaked" in client.get("/connections/api-tokens").get_data(as_text=True)
    client.form("/logout", page="/connections/api-tokens")
    client.sign_in("member@example.com")
    assert "reported leaked" not in client.get("/connections/api-tokens").get_data(as_text=True)


@pytest.mark.parametrize(
    "body",
    [
        {"tokens": []},
        {"tokens": "ks_sbx_x"},
        {"tokens": ["not a token"]},
        {"tokens": [1]},
        {"tokens": ["x" * 5000]},
        {"tokens": ["ks_sbx_" + "a" * 16 + "_" + "b" * 38] * 101},
        {"tokens": [], "extra": 1},
        {},
        [],
        ["not a token"],
        ["ks_sbx_" + "a" * 16 + "_" + "b" * 38] * 101,
        [1],
        [["nested"]],
        [{"token": "not a token"}],
        [{"type": "keysmith_api_token"}],
        [{"token": "SECRET", "colour": "blue"}],
        [{"token": "SECRET"}, "SECRET"],
        ["SECRET", {"token": "SECRET"}],
        "SECRET",
        None,
        7,
    ],
)
def test_malformed_reports_get_400_and_change_nothing(client, db, make_org, make_token, body):
    org = make_org()
    token, secret = make_token(org)
    raw = json.dumps(body).replace("SECRET", secret)  # a real secret, in a bad report
    response = client.post(URL, data=raw, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and error["details"], error
    db.session.refresh(token)
    assert token.status == "active"


def test_ten_thousand_strings_are_refused_without_work(client):
    response = client.post(URL, json={"tokens": ["ks_sbx_x"] * 10_000})
    assert response.status_code == 400


@pytest.fixture
def app_config(limit_storage):
    return limit_storage


def test_reports_are_rate_limited_per_address(client):
    # 60/minute;10/second in fixed windows: 130 reports span at most two minutes' windows
    # (and any number of seconds'), so some window must refuse, however slow the machine.
    statuses = []
    for _ in range(130):
        statuses.append(
            client.post(
                URL, json={"tokens": ["nope"]}, environ_base={"REMOTE_ADDR": "198.51.100.7"}
            ).status_code
        )
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and statuses[0] == 400
    other = client.post(
        URL, json={"tokens": ["nope"]}, environ_base={"REMOTE_ADDR": "198.51.100.8"}
    )
    assert other.status_code == 400


def test_an_oversized_report_is_json_413_with_rate_limit_headers(client):
    response = client.post(
        URL, data=b'{"tokens": ["' + b"x" * (1024 * 1024 + 10) + b'"]}',
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert "X-RateLimit-Limit" in response.headers
