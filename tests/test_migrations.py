"""The migrations build exactly the schema the models describe (SPEC §7: schema changes
through migrations), on SQLite and on PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from models import Base


def _not_a_search_index(name, kind, _parent):
    # Migration 0007's trigram search (an FTS5 table on SQLite, GIN indexes on PostgreSQL)
    # is dialect-specific SQL that the models do not describe.
    return not (name or "").startswith(("api_tokens_fts", "ix_api_tokens_trgm_"))


def test_migrated_database_matches_the_models(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": _not_a_search_index})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_the_secret_holders_migration_replays_rotations_from_the_audit_log(tmp_path):
    """0003: a token rotated before the upgrade is held by whoever rotated it (the attack of
    issue 13), its previous secret in grace by who held it before, a token that rotated
    itself by who held it already."""
    import json

    import sqlalchemy as sa
    from flask_migrate import upgrade
    from hot_path_support import worker_config

    from app import create_app
    from extensions import db

    url = f"sqlite:///{tmp_path / 'old.db'}"
    app = create_app(worker_config(url), instance_path=str(tmp_path / "inst"))
    migrations = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "migrations")
    with app.app_context():
        upgrade(directory=migrations, revision="0002")
        now = "2026-12-01 00:00:00"
        statements = [
            "INSERT INTO users (id, email, name, password_hash, created_at) VALUES "
            f"(1, 'owner@example.com', 'O', 'x', '{now}'), "
            f"(2, 'admin@example.com', 'A', 'x', '{now}')",
            "INSERT INTO organizations (id, name, created_at, max_live_tokens, "
            "max_lifetime_days, allow_never_expires, rate_limit) "
            f"VALUES (1, 'Acme', '{now}', 100, 365, false, '1/second')",
        ]
        for token_id in ("rotatedbyadmin00", "selfrotated00000", "untouched0000000"):
            statements.append(
                "INSERT INTO api_tokens (id, organization_id, environment, name, role, scopes, "
                "type, active, prefix, secret_hash, created_at, updated_at, created_by_user_id, "
                f"created_by_label) VALUES ('{token_id}', 1, 'sandbox', '{token_id}', 'admin', "
                f"'[]', 'generic', true, 'ks_sbx_x', 'h', '{now}', '{now}', 1, 'owner@example.com')"
            )

        def rotated(target, user, token, grace):
            details = json.dumps({"grace_period_seconds": grace})
            token_sql = f"'{token}'" if token else "NULL"
            return (
                "INSERT INTO audit_events (organization_id, actor_type, actor_user_id, "
                "actor_token_id, actor_label, action, target_type, target_id, details, "
                f"created_at) VALUES (1, '{'token' if token else 'user'}', {user}, {token_sql}, "
                f"'x', 'token.rotated', 'token', '{target}', '{details}', '{now}')"
            )

        statements += [
            rotated("rotatedbyadmin00", 2, None, 604800),  # the admin, on the page
            rotated("selfrotated00000", 2, None, 0),  # the admin...
            rotated("selfrotated00000", 1, "selfrotated00000", 0),  # ...then it rotated itself
        ]
        for statement in statements:
            db.session.execute(sa.text(statement))
        db.session.commit()
        upgrade(directory=migrations)
        rows = {
            row.id: row[1:]
            for row in db.session.execute(
                sa.text(
                    "SELECT id, secret_shown_to_user_id, secret_shown_to_token_id, "
                    "previous_secret_shown_to_user_id FROM api_tokens"
                )
            )
        }
        db.session.remove()
        db.engine.dispose()
    assert rows == {
        "rotatedbyadmin00": (2, None, 1),
        "selfrotated00000": (2, None, None),
        "untouched0000000": (1, None, None),
    }
