from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent


def test_healthz_answers_ok_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_503_when_the_database_is_gone(tmp_path):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            # A directory cannot be opened as a SQLite database file.
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}",
        },
        instance_path=str(tmp_path / "inst"),
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable"}


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response.headers["Location"])
    assert icon.status_code == 200 and b"<svg" in icon.data
    icon.close()


def test_pages_answer_503_not_500_when_the_database_is_gone(tmp_path):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            "WTF_CSRF_ENABLED": False,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}",
        },
        instance_path=str(tmp_path / "inst"),
    )
    client = app.test_client()
    response = client.post("/login", data={"email": "a@example.com", "password": "x" * 12})
    assert response.status_code == 503
    assert "cannot reach its database" in response.get_data(as_text=True)
    api = client.get("/api/v1/whoami", headers={"Authorization": "Bearer ks_sbx_x"})
    assert api.status_code in (401, 503) and api.is_json


def test_a_signed_in_person_gets_the_503_page_when_the_database_goes(tmp_path):
    """The layout reads the signed-in person from the database: when it is gone, the error
    page must not need it (a bare 500 otherwise)."""
    from flask_migrate import upgrade
    from hot_path_support import worker_config

    from app import create_app
    from extensions import db
    from services import accounts
    from tests.conftest import PASSWORD, Client

    database = tmp_path / "gone.db"
    app = create_app(
        worker_config(f"sqlite:///{database}", WTF_CSRF_ENABLED=False),
        instance_path=str(tmp_path / "inst"),
    )
    app.test_client_class = Client
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        accounts.sign_up(
            email="ada@example.com", password=PASSWORD, name="Ada", organization="Acme",
            default_rate_limit="10/second",
        )  # fmt: skip
        db.session.commit()
        client = app.test_client()
        signed_in = client.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
        assert signed_in.status_code == 302
        for path in database.parent.glob("gone.db*"):
            path.unlink()
        db.engine.dispose()  # new connections find an empty file: no tables
        for url in ("/connections/api-tokens", "/connections/audit-log", "/settings/members"):
            response = client.get(url)
            assert response.status_code == 503, url
            assert "cannot reach its database" in response.get_data(as_text=True)
        posted = client.post("/connections/api-tokens", data={"name": "x"})
        assert posted.status_code == 503


def test_healthz_answers_head_and_leaves_other_methods_to_flask(client):
    head = client.head("/healthz")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["X-Content-Type-Options"] == "nosniff"
    assert client.post("/healthz").status_code == 405


def test_healthz_survives_a_pooled_connection_the_database_closed(app, client, db, backend):
    if backend != "postgresql":
        pytest.skip("a file has no server to close the connection")
    assert client.get("/healthz").status_code == 200  # its pool holds a connection now
    with db.engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_503_when_the_database_server_ends_its_connections_for_good(
    app, client, db, backend
):
    """The probe's connection is ended and no new one is let in: not ok, however the
    driver reports the dead connection (psycopg answers the ping with an error result)."""
    if backend != "postgresql":
        pytest.skip("a file has no server to close the connection")
    assert client.get("/healthz").status_code == 200  # its pool holds a connection now
    name = db.engine.url.database
    admin = sa.create_engine(db.engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.get_json() == {"status": "unavailable"}
        assert response.headers["Retry-After"] == "5"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert client.get("/healthz").status_code == 200  # and ok again once it lets them in
