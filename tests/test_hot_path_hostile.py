"""Hostile input on the hot path: any string as a token, junk in forms and auth headers.
Never a 500; a malformed token never reaches the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hot_path_support import statements
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Organization, User
from services import tokens
from services.errors import AuthFailed

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NASTY_TOKENS = [
    "",
    " ",
    "ks_",
    "ks_prod_",
    "ks_sbx_" + "A" * 16 + "_" + "B" * 38,  # right shape, wrong checksum
    "ks_prod_\x00" + "A" * 60,
    "ks_prod_" + "é" * 60,
    "x" * 100_000,
    "Bearer Bearer",
    "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
    "-1",
    "9" * 400,
    '{"token": []}',
]


@FUZZ
@given(secret=st.text(max_size=300))
def test_any_string_as_a_token_is_refused_before_the_database(app, db, secret):
    with statements(db.engine) as seen, pytest.raises(AuthFailed) as refused:
        tokens.verify(secret)
    assert refused.value.code == "invalid_token"
    assert seen == []


@FUZZ
@given(
    email=st.text(max_size=300),
    password=st.text(max_size=300),
    name=st.text(max_size=300),
    organization=st.text(max_size=300),
)
def test_sign_up_with_junk_never_fails_badly_nor_half_writes(
    client, db, email, password, name, organization
):
    def counts() -> tuple[int, int]:
        return tuple(
            db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (User, Organization)
        )

    before = counts()
    data = {"email": email, "password": password, "name": name, "organization": organization}
    response = client.form("/signup", data, page="/signup")

    assert response.status_code < 500
    made = 1 if response.status_code == 302 else 0
    assert counts() == (before[0] + made, before[1] + made)  # both or neither


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\xfd", b"email=%FF%FE&password=%00", b"email=" + b"\x00" * 1000, b"&&&==&="],
)
def test_login_with_invalid_bytes_never_fails_badly(client, body):
    token = client.csrf_token("/login")
    response = client.post(
        "/login",
        data=body + b"&csrf_token=" + token.encode(),
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code < 500


@pytest.mark.parametrize("value", NASTY_TOKENS)
@pytest.mark.parametrize("header", ["Authorization: Bearer", "X-API-Key", "Basic"])
def test_malformed_tokens_in_each_auth_header_get_401_json(client, header, value):
    import base64

    if header == "Basic":
        raw = base64.b64encode(b"anything:" + value.encode("utf-8", "surrogatepass")).decode()
        headers = {"Authorization": f"Basic {raw}"}
    elif header == "X-API-Key":
        headers = {"X-API-Key": value}
    else:
        headers = {"Authorization": f"Bearer {value}"}
    response = client.get("/api/v1/whoami", headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] in ("missing_token", "invalid_token")
