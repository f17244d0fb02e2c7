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
