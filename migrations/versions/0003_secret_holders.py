"""Remember who was shown each token's current secret and its previous one (SPEC §1:
removing or demoting a member revokes the tokens whose secrets they hold).

Existing tokens: the creator saw the secret when it was made; the audit log's
`token.rotated` events say who was shown each later one (a token that rotated itself showed
it to whoever held it already), and who held the previous one kept through a grace period.

Revision ID: 0003
Revises: 0002
"""

import json

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
    _replay_rotations(op.get_bind())


def _replay_rotations(conn) -> None:
    """Who holds each rotated token's secrets, from its rotations in the audit log."""
    rotations = conn.execute(
        sa.text(
            "SELECT target_id, actor_user_id, actor_token_id, details FROM audit_events "
            "WHERE action = 'token.rotated' AND target_type = 'token' ORDER BY id"
        )
    ).fetchall()
    if not rotations:
        return
    holders: dict[str, tuple[tuple, tuple]] = {}
    creators = {
        row.id: ((None, row.created_by_token_id) if row.created_by_token_id else
                 (row.created_by_user_id, None))
        for row in conn.execute(
            sa.text("SELECT id, created_by_user_id, created_by_token_id FROM api_tokens")
        )
    }
    for target, user_id, token_id, details in rotations:
        if target not in creators:
            continue
        current, _ = holders.get(target, (creators[target], (None, None)))
        if isinstance(details, str):
            details = json.loads(details or "{}")
        grace = (details or {}).get("grace_period_seconds") or 0
        shown = current if token_id == target else ((None, token_id) if token_id else (user_id, None))
        holders[target] = (shown, current if grace else (None, None))
    update = sa.text(
        "UPDATE api_tokens SET secret_shown_to_user_id = :u, secret_shown_to_token_id = :t, "
        "previous_secret_shown_to_user_id = :pu, previous_secret_shown_to_token_id = :pt "
        "WHERE id = :id"
    )
    for target, ((u, t), (pu, pt)) in holders.items():
        conn.execute(update, {"u": u, "t": t, "pu": pu, "pt": pt, "id": target})


def downgrade():
    with op.batch_alter_table("api_tokens") as batch_op:
        for name, is_user in reversed(COLUMNS):
            batch_op.drop_index(f"ix_api_tokens_{name}")
            if is_user:
                batch_op.drop_constraint(f"fk_api_tokens_{name}_users", type_="foreignkey")
            batch_op.drop_column(name)
