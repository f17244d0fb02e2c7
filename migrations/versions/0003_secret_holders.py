"""Remember who was shown each token's current secret and its previous one (SPEC §1:
removing or demoting a member revokes the tokens whose secrets they hold).

Existing tokens: their creator saw the current secret when it was made (a later rotation's
viewer is not known; the audit log has it).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("secret_shown_to_user_id", True),
    ("secret_shown_to_token_id", False),
    ("previous_secret_shown_to_user_id", True),
    ("previous_secret_shown_to_token_id", False),
)


def upgrade():
    with op.batch_alter_table("api_tokens") as batch_op:
        for name, is_user in COLUMNS:
            if is_user:
                batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
                batch_op.create_foreign_key(f"fk_api_tokens_{name}_users", "users", [name], ["id"])
            else:
                batch_op.add_column(sa.Column(name, sa.String(length=32), nullable=True))
            batch_op.create_index(f"ix_api_tokens_{name}", [name])
    op.execute(
        "UPDATE api_tokens SET secret_shown_to_user_id = created_by_user_id "
        "WHERE created_by_token_id IS NULL"
    )
    op.execute(
        "UPDATE api_tokens SET secret_shown_to_token_id = created_by_token_id "
        "WHERE created_by_token_id IS NOT NULL"
    )


def downgrade():
    with op.batch_alter_table("api_tokens") as batch_op:
        for name, is_user in reversed(COLUMNS):
            batch_op.drop_index(f"ix_api_tokens_{name}")
            if is_user:
                batch_op.drop_constraint(f"fk_api_tokens_{name}_users", type_="foreignkey")
            batch_op.drop_column(name)
