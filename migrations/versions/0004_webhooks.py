"""Webhooks (SPEC §9): endpoints, the outbox of events and their deliveries. The key
policy's single expiry-notice URL becomes an endpoint subscribed to `token.expiring`,
keeping the signing secret its receiver already checks; the per-token "notice sent" mark
goes, since each delivery now keeps its own state.

Revision ID: 0004
Revises: 0003
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _id(prefix):
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(16))


def upgrade():
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_salt", sa.String(length=64), nullable=False),
        sa.Column("previous_secret_salt", sa.String(length=64), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(), nullable=True),
        sa.Column("failing_since", sa.DateTime(), nullable=True),
        sa.Column("created_by_label", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_endpoints_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_webhook_endpoints_organization_id"), "webhook_endpoints", ["organization_id"]
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_events_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index(
        "ix_webhook_events_org_created", "webhook_events", ["organization_id", "created_at"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_duration_ms", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_webhook_events"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_deliveries_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index(
        "ix_webhook_deliveries_endpoint_created", "webhook_deliveries", ["endpoint_id", "created_at"]
    )
    op.create_index(op.f("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"])

    # Data: each policy URL becomes an endpoint for token.expiring. Its salt is the
    # organization's id, which derives exactly the secret the old notices were signed with
    # (HMAC(WEBHOOK_SIGNING_KEY, "keysmith webhook <org id>")), so its receiver keeps working.
    bind = op.get_bind()
    organizations = sa.table(
        "organizations", sa.column("id", sa.Integer), sa.column("webhook_url", sa.String)
    )
    endpoints = sa.table(
        "webhook_endpoints",
        sa.column("id", sa.String),
        sa.column("organization_id", sa.Integer),
        sa.column("url", sa.String),
        sa.column("events", sa.JSON),
        sa.column("enabled", sa.Boolean),
        sa.column("secret_salt", sa.String),
        sa.column("created_by_label", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("updated_at", sa.DateTime),
    )
    now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, as the models do
    rows = bind.execute(
        sa.select(organizations.c.id, organizations.c.webhook_url).where(
            organizations.c.webhook_url.is_not(None), organizations.c.webhook_url != ""
        )
    ).all()
    for org_id, url in rows:
        bind.execute(
            endpoints.insert().values(
                id=_id("we_"),
                organization_id=org_id,
                url=url,
                events=["token.expiring"],
                enabled=True,
                secret_salt=str(org_id),
                created_by_label="key policy (migrated)",
                created_at=now,
                updated_at=now,
            )
        )
    # Plain ALTER TABLE (SQLite >= 3.35 and PostgreSQL): no table rebuild, which would
    # re-create api_tokens' partial unique index from reflection.
    op.execute("ALTER TABLE organizations DROP COLUMN webhook_url")
    op.execute("ALTER TABLE api_tokens DROP COLUMN expiry_webhook_sent_at")


def downgrade():
    op.add_column("api_tokens", sa.Column("expiry_webhook_sent_at", sa.DateTime(), nullable=True))
    op.add_column("organizations", sa.Column("webhook_url", sa.String(length=500), nullable=True))
    bind = op.get_bind()
    # The oldest endpoint that takes token.expiring goes back on the policy.
    for org_id, url, events in bind.execute(
        sa.text(
            "SELECT organization_id, url, events FROM webhook_endpoints ORDER BY created_at, id"
        )
    ).all():
        if "token.expiring" in str(events):
            bind.execute(
                sa.text(
                    "UPDATE organizations SET webhook_url = :url "
                    "WHERE id = :id AND webhook_url IS NULL"
                ),
                {"url": url, "id": org_id},
            )
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
