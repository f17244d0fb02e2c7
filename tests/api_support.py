"""Helpers shared by the API tests (tests/test_api_*.py)."""

from __future__ import annotations

import base64

API = "/api/v1"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(secret: str, username: str = "anything") -> dict[str, str]:
    value = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def error_code(response) -> str:
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]["code"]


def unreachable_database_app(tmp_path):
    """The app on a database it cannot open (a directory is no SQLite file)."""
    from app import create_app

    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}",
            "RATELIMIT_STORAGE_URI": "memory://",
        },
        instance_path=str(tmp_path / "inst"),
    )
