"""The usage flush figures of `make bench` (issue 16): one worker's buffer holding 50,000
distinct tokens (each with a count for today and a last-used time) written by
services.usage.flush(), beside its 200 ms target, and the longest of its transactions (what
a revocation of one of those tokens may wait for), for the record. Best of three rounds on
one database."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from extensions import db
from models import ApiToken, TokenUsage, utcnow
from services import usage

TOKENS = 50_000
TARGET_SECONDS = 0.2
ROUNDS = 3


def _buffer_every_token(app, token_ids: list[str], at) -> None:
    buffer = usage._buffer(app)
    for i, token_id in enumerate(token_ids):
        buffer.add(token_id, f"10.0.{i // 250 % 250}.{i % 250}", at)


def run(setup, fresh_app: Callable, seed: Callable, report: Callable, dispose: Callable) -> None:
    app = fresh_app(setup, "usage_flush")
    seed(app, TOKENS)
    with app.app_context():
        token_ids = list(db.session.scalars(sa.select(ApiToken.id)))
        db.session.remove()
    times = []
    parts: list[float] = []
    write = usage._write

    def timed_write(*args):
        start = time.perf_counter()
        try:
            return write(*args)
        finally:
            parts.append(time.perf_counter() - start)

    usage._write = timed_write
    for round_ in range(ROUNDS):
        # Each round a later time, so every last_used_at is really written again.
        at = utcnow().replace(microsecond=0) + timedelta(seconds=round_)
        _buffer_every_token(app, token_ids, at)
        with app.app_context():
            start = time.perf_counter()
            written = usage.flush()
            times.append(time.perf_counter() - start)
            db.session.remove()
        assert written == len(token_ids), (written, len(token_ids))
    usage._write = write
    with app.app_context():
        size = usage.transaction_tokens(db.engine.dialect.name)
        total = db.session.scalar(sa.select(sa.func.sum(TokenUsage.count)))
        stale = db.session.scalar(sa.select(sa.func.count()).where(ApiToken.last_used_at.is_(None)))
        db.session.remove()
    ok = total == ROUNDS * len(token_ids) and stale == 0
    best = min(times)
    report(
        f"usage flush of {TOKENS:,} distinct tokens ({setup.database})",
        f"{best * 1000:.0f} ms" + ("" if ok else " (WRONG COUNTS)"),
        f"< {TARGET_SECONDS * 1000:.0f} ms",
        ok and best < TARGET_SECONDS,
    )
    report(
        f"longest flush transaction, {size:,} tokens ({setup.database})",
        f"{max(parts) * 1000:.0f} ms",
        "record",
        None,
    )
    dispose(app)
