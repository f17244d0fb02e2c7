"""Scrub webhook URLs from the audit log (security review of issue 15): `policy.updated`
events written before webhooks became endpoints carry `details.webhook_url` as {from, to}
with the full URLs, which can be secrets themselves (Slack-style hooks), and every role
reads the audit log. Each such value becomes "changed", as endpoint URL changes are
recorded now. Webhook events (`webhook.*`) had the endpoint's host as their target label;
a per-user subdomain can be a secret too, so it becomes the endpoint's id.

There is no way back: what was scrubbed is gone (downgrading leaves the rows as they are).

Revision ID: 0006
Revises: 0005
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

audit_events = sa.table(
    "audit_events",
    sa.column("id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("target_type", sa.String),
    sa.column("target_id", sa.String),
    sa.column("target_label", sa.String),
    sa.column("details", sa.JSON),
)


def _as_dict(value):
    if isinstance(value, str):  # a driver that hands JSON back as text
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(audit_events.c.id, audit_events.c.details).where(
            audit_events.c.action == "policy.updated"
        )
    ).all()
    for row in rows:
        details = _as_dict(row.details)
        if details is None or "webhook_url" not in details:
            continue
        details["webhook_url"] = "changed"
        connection.execute(
            sa.update(audit_events).where(audit_events.c.id == row.id).values(details=details)
        )
    connection.execute(
        sa.update(audit_events)
        .where(audit_events.c.target_type == "webhook")
        .values(target_label=audit_events.c.target_id)
    )


def downgrade():
    pass  # the URLs are gone for good, as they should be
