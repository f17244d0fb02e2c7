"""The token page at 100,000 tokens (issue 18): keyset-order indexes for each group and sort
key, range indexes for the hygiene counts, and substring search by trigrams.

Search: on PostgreSQL, `pg_trgm` GIN indexes on name, prefix and created_by_label, which
serve the page's `x ILIKE '%q%'` as it is (skipped, with the search then scanning, where the
extension is not available). On SQLite, an FTS5
table with the trigram tokenizer over the same three columns, kept current by triggers; the
search looks candidates up in it, then checks them as before (services.tokens.search_condition).

Revision ID: 0007
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0009"  # re-chained after merging main (0008, 0009 landed first)
branch_labels = None
depends_on = None

SORT_COLUMNS = (
    ("name", "name"),
    ("created", "created_at"),
    ("last_used", "last_used_at"),
    ("expires", "expires_at"),
)
# The page's true counts: each group, expiring soon, unused (covering, so counts read no rows).
COUNT_INDEXES = {
    "ix_api_tokens_groups": ["role", "revoked_at"],  # narrow: the unfiltered counts read least
    "ix_api_tokens_expiry": ["revoked_at", "expires_at"],
    "ix_api_tokens_usage": ["revoked_at", "last_used_at", "created_at"],
}
SEARCHED = ("name", "prefix", "created_by_label")
LIVE, REVOKED = "revoked_at IS NULL", "revoked_at IS NOT NULL"


def _partial(name: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        "api_tokens",
        columns,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


KEY = "organization_id, environment, role, revoked"
UPSERT = (
    f"INSERT INTO token_counts ({KEY}, count) "
    "VALUES (new.organization_id, new.environment, new.role, new.revoked_at IS NOT NULL, 1) "
    f"ON CONFLICT ({KEY}) DO UPDATE SET count = token_counts.count + 1"
)
DECREMENT = (
    "UPDATE token_counts SET count = count - 1 WHERE organization_id = old.organization_id "
    "AND environment = old.environment AND role = old.role "
    "AND revoked = (old.revoked_at IS NOT NULL)"
)
COUNTED = "organization_id, environment, role, revoked_at"


def _token_counts() -> None:
    """token_counts, filled from what is there and kept by triggers from now on."""
    op.create_table(
        "token_counts",
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "environment", "role", "revoked", name=op.f("pk_token_counts")
        ),
    )
    op.execute(
        f"INSERT INTO token_counts ({KEY}, count) SELECT organization_id, environment, role, "
        "revoked_at IS NOT NULL, count(*) FROM api_tokens "
        "GROUP BY organization_id, environment, role, revoked_at IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION api_tokens_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {DECREMENT}; END IF; "
            f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {UPSERT}; END IF; "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER api_tokens_count AFTER INSERT OR DELETE OR UPDATE OF {COUNTED} "
            "ON api_tokens FOR EACH ROW EXECUTE FUNCTION api_tokens_count()"
        )
        return
    op.execute(f"CREATE TRIGGER api_tokens_count_insert AFTER INSERT ON api_tokens BEGIN {UPSERT}; END")
    op.execute(f"CREATE TRIGGER api_tokens_count_delete AFTER DELETE ON api_tokens BEGIN {DECREMENT}; END")
    op.execute(
        f"CREATE TRIGGER api_tokens_count_update AFTER UPDATE OF {COUNTED} ON api_tokens "
        f"BEGIN {DECREMENT}; {UPSERT}; END"
    )


def upgrade():
    for key, column in SORT_COLUMNS:
        _partial(
            f"ix_api_tokens_live_{key}",
            ["organization_id", "environment", "role", column, "id"],
            LIVE,
        )
        _partial(
            f"ix_api_tokens_revoked_{key}",
            ["organization_id", "environment", column, "id"],
            REVOKED,
        )
    for name, columns in COUNT_INDEXES.items():
        op.create_index(name, "api_tokens", ["organization_id", "environment", *columns])
    _token_counts()
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        available = bind.scalar(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
        )
        if not available:
            return  # the search scans one environment's rows instead
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in SEARCHED:
            op.execute(
                f"CREATE INDEX ix_api_tokens_trgm_{column} ON api_tokens "
                f"USING gin ({column} gin_trgm_ops)"
            )
    elif bind.dialect.name == "sqlite":
        columns = ", ".join(SEARCHED)
        new = ", ".join(f"new.{c}" for c in SEARCHED)
        old = ", ".join(f"old.{c}" for c in SEARCHED)
        op.execute(
            f"CREATE VIRTUAL TABLE api_tokens_fts USING fts5({columns}, "
            "content='api_tokens', content_rowid='rowid', tokenize='trigram')"
        )
        op.execute(
            "CREATE TRIGGER api_tokens_fts_insert AFTER INSERT ON api_tokens BEGIN "
            f"INSERT INTO api_tokens_fts(rowid, {columns}) VALUES (new.rowid, {new}); END"
        )
        op.execute(
            "CREATE TRIGGER api_tokens_fts_delete AFTER DELETE ON api_tokens BEGIN "
            f"INSERT INTO api_tokens_fts(api_tokens_fts, rowid, {columns}) "
            f"VALUES ('delete', old.rowid, {old}); END"
        )
        op.execute(
            f"CREATE TRIGGER api_tokens_fts_update AFTER UPDATE OF {columns} ON api_tokens BEGIN "
            f"INSERT INTO api_tokens_fts(api_tokens_fts, rowid, {columns}) "
            f"VALUES ('delete', old.rowid, {old}); "
            f"INSERT INTO api_tokens_fts(rowid, {columns}) VALUES (new.rowid, {new}); END"
        )
        op.execute("INSERT INTO api_tokens_fts(api_tokens_fts) VALUES ('rebuild')")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS api_tokens_count ON api_tokens")
        op.execute("DROP FUNCTION IF EXISTS api_tokens_count()")
    else:
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS api_tokens_count_{trigger}")
    op.drop_table("token_counts")
    if bind.dialect.name == "postgresql":
        for column in SEARCHED:
            op.execute(f"DROP INDEX IF EXISTS ix_api_tokens_trgm_{column}")
    elif bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS api_tokens_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS api_tokens_fts")
    for name in COUNT_INDEXES:
        op.drop_index(name, table_name="api_tokens")
    for key, _column in SORT_COLUMNS:
        op.drop_index(f"ix_api_tokens_revoked_{key}", table_name="api_tokens")
        op.drop_index(f"ix_api_tokens_live_{key}", table_name="api_tokens")
