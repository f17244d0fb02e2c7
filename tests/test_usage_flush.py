"""The usage flush writes a whole buffer in a fixed number of statements a part of 2,000
tokens, however many tokens a part holds (issue 16: one statement per token took 1.3 s on
SQLite and 4 s on PostgreSQL for 50,000), each part in a transaction of its own, and still
writes every count and last-used time right, once. Its speed is `make bench`'s figure; here,
what it writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hot_path_support import owner_actor, statements, writes

from models import ApiToken, TokenUsage, utcnow
from services import usage

MANY = 1_200


def _seed(db, org, count: int) -> list[str]:
    """`count` live tokens of the organization, inserted in one statement (a create each took
    most of these tests' time: what is flushed is the point here, not how tokens are made)."""
    owner = owner_actor(org)
    now = utcnow()
    ids = [f"usage{i:011d}" for i in range(count)]
    db.session.execute(
        sa.insert(ApiToken),
        [
            {
                "id": token_id,
                "organization_id": org.id,
                "environment": "sandbox",
                "name": f"t{i}",
                "role": "viewer",
                "scopes": [],
                "type": "generic",
                "active": True,
                "prefix": f"ks_sbx_{token_id[:8]}",
                "secret_hash": "0" * 64,
                "created_at": now,
                "updated_at": now,
                "expires_at": now + timedelta(days=30),
                "created_by_user_id": owner.membership.user_id,
                "created_by_label": "owner@example.com",
            }  # fmt: skip
            for i, token_id in enumerate(ids)
        ],
    )
    db.session.commit()
    return ids


def test_many_tokens_are_written_in_two_statements(db, make_org):
    ids = _seed(db, make_org(), MANY)
    at = datetime(2026, 5, 4, 12, 0, 0, 123456, tzinfo=UTC)
    for i, token_id in enumerate(ids):
        for _ in range(i % 3 + 1):
            usage.record_use(type("T", (), {"id": token_id}), f"10.0.{i // 250}.{i % 250}", now=at)

    with statements(db.engine) as seen:
        assert usage.flush() == MANY

    # One upsert of the counts and one update of last used: no statement (nor look-up) per
    # token, nor per chunk of tokens; on SQLite one read of the tokens' order in the table.
    assert len(writes(seen)) == 2
    reads = [s for s in seen if not s.lstrip().upper().startswith(("SET", "INSERT", "UPDATE"))]
    assert len(reads) == (1 if db.engine.dialect.name == "sqlite" else 0), reads
    counts = dict(db.session.execute(sa.select(TokenUsage.token_id, TokenUsage.count)).all())
    assert counts == {token_id: i % 3 + 1 for i, token_id in enumerate(ids)}
    rows = db.session.execute(
        sa.select(ApiToken.id, ApiToken.last_used_at, ApiToken.last_used_ip)
    ).all()
    assert {r.id: (r.last_used_at, r.last_used_ip) for r in rows} == {
        token_id: (at, f"10.0.{i // 250}.{i % 250}") for i, token_id in enumerate(ids)
    }


def test_a_batch_moves_only_older_last_used_times(db, make_org):
    ids = _seed(db, make_org(), 3)
    base = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    for token_id in ids:
        usage.record_use(type("T", (), {"id": token_id}), "10.0.0.1", now=base)
    usage.flush()
    # One token is seen later, one earlier (another worker's older buffer), one at the same time.
    later, earlier = base + timedelta(seconds=30), base - timedelta(seconds=30)
    for token_id, at in zip(ids, (later, earlier, base), strict=True):
        usage.record_use(type("T", (), {"id": token_id}), "10.0.0.2", now=at)
    usage.flush()

    db.session.expire_all()
    seen = {t.id: (t.last_used_at, t.last_used_ip) for t in db.session.scalars(sa.select(ApiToken))}
    assert seen == {
        ids[0]: (later, "10.0.0.2"),
        ids[1]: (base, "10.0.0.1"),
        ids[2]: (base, "10.0.0.1"),
    }


def test_a_time_in_another_zone_is_stored_as_utc(db, make_org):
    (token_id,) = _seed(db, make_org(), 1)
    from zoneinfo import ZoneInfo

    at = datetime(2026, 5, 4, 14, 0, tzinfo=ZoneInfo("Europe/Paris"))
    usage.record_use(type("T", (), {"id": token_id}), None, now=at)
    usage.flush()

    db.session.expire_all()
    token = db.session.get(ApiToken, token_id)
    assert token.last_used_at == datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert token.last_used_ip is None


def test_parts_cover_every_buffered_token_once_in_the_order_given():
    counts = {("a", datetime(2026, 5, 4).date()): 1, ("gone", datetime(2026, 5, 4).date()): 2}
    last_used = {t: (datetime(2026, 5, 4, tzinfo=UTC), None) for t in ("a", "b", "c", "gone")}
    # "gone" was deleted (not in the table's order): it comes last, and its part still holds it.
    parts = list(usage._parts(counts, last_used, 2, ["c", "a", "b"]))
    assert [sorted(seen) for _, seen in parts] == [["a", "c"], ["b", "gone"]]
    assert [sorted(key[0] for key in part) for part, _ in parts] == [["a"], ["gone"]]
    assert [list(seen) for _, seen in usage._parts(counts, last_used, 3)] == [
        ["a", "b", "c"],
        ["gone"],
    ]


def test_sqlite_parts_follow_the_table_order(db, make_org):
    ids = _seed(db, make_org(), 5)
    if db.engine.dialect.name != "sqlite":
        assert usage._order({t: None for t in ids}) is None  # id order: rows locked alike
        return
    stored = list(reversed(ids))
    assert usage._order({t: None for t in stored + ["missing"]}) == ids


def _use_all(ids: list[str], at: datetime) -> None:
    for i, token_id in enumerate(ids):
        for _ in range(i % 3 + 1):
            usage.record_use(type("T", (), {"id": token_id}), "10.0.0.9", now=at)


def _stored_counts(db) -> dict[str, int]:
    db.session.expire_all()
    return dict(db.session.execute(sa.select(TokenUsage.token_id, TokenUsage.count)).all())


def test_a_flush_commits_in_parts_so_a_revocation_waits_for_one_part_at_most(app, db, make_org):
    ids = _seed(db, make_org(), MANY)
    app.config["USAGE_FLUSH_TRANSACTION_TOKENS"] = 500
    _use_all(ids, datetime(2026, 5, 4, 12, 0, tzinfo=UTC))
    commits: list[int] = []

    def note_commit(conn):
        commits.append(1)

    sa.event.listen(db.engine, "commit", note_commit)
    try:
        with statements(db.engine) as seen:
            assert usage.flush() == MANY
    finally:
        sa.event.remove(db.engine, "commit", note_commit)
    # 1,200 tokens in parts of 500: three transactions of two statements each.
    assert len(commits) == 3 and len(writes(seen)) == 6
    assert _stored_counts(db) == {token_id: i % 3 + 1 for i, token_id in enumerate(ids)}


def test_a_part_that_fails_is_written_next_time_and_none_twice(app, db, make_org):
    ids = _seed(db, make_org(), MANY)
    app.config["USAGE_FLUSH_TRANSACTION_TOKENS"] = 500
    _use_all(ids, datetime(2026, 5, 4, 12, 0, tzinfo=UTC))
    written: list[str] = []

    def fail_the_second_part(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            written.append(statement)
            if len(written) == 3:  # the second part's first statement
                raise sa.exc.OperationalError(statement, parameters, Exception("gone"))

    sa.event.listen(db.engine, "before_cursor_execute", fail_the_second_part)
    try:
        try:
            usage.flush()
        except sa.exc.OperationalError:
            pass
        else:
            raise AssertionError("the second part did not fail")
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", fail_the_second_part)

    # The first part (500 tokens, in token order) is stored; the rest waits in the buffer.
    first = sorted(ids)[:500]
    assert _stored_counts(db) == {t: (ids.index(t) % 3) + 1 for t in first}
    assert usage.pending() == MANY - 500

    assert usage.flush() == MANY - 500
    assert _stored_counts(db) == {token_id: i % 3 + 1 for i, token_id in enumerate(ids)}
