"""`flask keysmith ...`: what an operator scripts on a fresh install."""

import sqlalchemy as sa

from models import ApiToken, AuditEvent, Organization, User
from services import secrets as token_secrets
from services import tokens


def _run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["keysmith", *args], input=input)


def test_create_first_user_then_manage_tokens(app, db):
    result = _run(
        app, "create-user", "Ops@Example.com", "Ops Org", "--password", "a long operator password"
    )
    assert result.exit_code == 0, result.output
    org = db.session.scalar(sa.select(Organization))
    assert db.session.scalar(sa.select(User.email)) == "ops@example.com"

    created = _run(
        app,
        "tokens",
        "create",
        "--org",
        str(org.id),
        "--name",
        "deploy",
        "--environment",
        "production",
        "--role",
        "writer",
    )
    assert created.exit_code == 0, created.output
    secret = created.output.strip()
    assert token_secrets.TOKEN_PATTERN.fullmatch(secret)
    token = tokens.verify(secret)
    assert (token.name, token.environment, token.role) == ("deploy", "production", "writer")

    listed = _run(app, "tokens", "list", "--org", str(org.id))
    assert "deploy" in listed.output and secret not in listed.output

    rotated = _run(app, "tokens", "rotate", "--org", str(org.id), token.id)
    new_secret = rotated.output.strip()
    assert new_secret != secret and tokens.verify(new_secret).id == token.id

    revoked = _run(app, "tokens", "revoke", "--org", str(org.id), token.id)
    assert revoked.exit_code == 0
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).status == "revoked"
    events = db.session.execute(
        sa.select(AuditEvent.action, AuditEvent.actor_label)
        .where(AuditEvent.action.like("token.%"))
        .order_by(AuditEvent.id)
    ).all()
    assert events == [
        ("token.created", "ops@example.com"),  # the token belongs to the owner
        ("token.rotated", "cli"),
        ("token.revoked", "cli"),
    ]


def test_a_cli_token_works_on_the_api_with_its_owners_rights(app, db, client):
    _run(app, "create-user", "boot@example.com", "Boot", "--password", "a long operator password")
    org_id = db.session.scalar(sa.select(Organization.id))
    secret = _run(
        app, "tokens", "create", "--org", str(org_id), "--name", "boot", "--role", "admin"
    ).output.strip()
    auth = {"Authorization": f"Bearer {secret}"}
    who = client.get("/api/v1/whoami", headers=auth).get_json()
    assert who["created_by"] == "boot@example.com"
    assert set(who["scopes"]) == {"tokens:read", "tokens:write", "audit:read", "members:read"}
    made = client.post("/api/v1/api_tokens", json={"name": "from api"}, headers=auth)
    assert made.status_code == 201
    unknown = _run(
        app, "tokens", "create", "--org", str(org_id), "--name", "x", "--owner", "no@example.com"
    )
    assert unknown.exit_code != 0 and "No member" in unknown.output


def test_cli_errors_are_clear_and_change_nothing(app, db, make_org):
    org = make_org()
    bad = _run(app, "tokens", "create", "--org", str(org.id), "--name", "x", "--never-expires")
    assert bad.exit_code != 0 and "requires an expiry date" in bad.output
    assert _run(app, "tokens", "revoke", "--org", str(org.id), "nope").exit_code != 0
    assert _run(app, "tokens", "list", "--org", "999999").exit_code != 0
    weak = _run(app, "create-user", "x@example.com", "X", "--password", "short")
    assert weak.exit_code != 0 and "12 characters" in weak.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


def test_expiring_command_reports_counts(app, make_org, make_token):
    org = make_org()
    make_token(org, expires_in_days=2)
    result = _run(app, "expiring")
    assert result.exit_code == 0 and result.output.startswith("1 token(s)")
    assert _run(app, "expiring").output.startswith("0 token(s)")


def test_expiring_queues_the_notices_for_the_delivery_worker(app, make_org, make_token):
    make_token(make_org(), expires_in_days=2)
    result = _run(app, "expiring")
    assert result.exit_code == 0 and "flask keysmith deliver" in result.output
