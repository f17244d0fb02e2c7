"""Remember which expiry notices reached the organization's webhook, so a failed one is
sent again by the next `flask keysmith expiring` run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(sa.Column("expiry_webhook_sent_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_column("expiry_webhook_sent_at")
