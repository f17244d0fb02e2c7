"""`make bench`, issue 18: the token page, its search, the list API and the audit log at size.

Measured in-process (Flask's test client, the app's own database of each size), as ratios of
medians taken in interleaved rounds, so drift of the machine hits both sizes alike:

- the token page (signed in, default sort) at 100,000 tokens / at 100, and its size;
- the search (`?q=` a name fragment) at 100,000 / at 100;
- GET /api/v1/api_tokens at 100,000 tokens: via `starting_after` at the end / at offset 0,
  and at offset 0 at 100,000 / at 100;
- the audit log page at 1,000,000 events / at 1,000, first page and a page deep in the log;
- the process's resident memory (RSS) while it streams a 1,000,000-row CSV export.

Rows go in by bulk inserts: executemany in batches (psycopg pipelines them), and COPY for
the million audit events on PostgreSQL.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from extensions import db
from models import ApiToken, AuditEvent, Membership, Organization, utcnow
from services import accounts, tokens
from services import secrets as token_secrets
from services.actor import Actor

PASSWORD = "correct horse battery"
NO_LIMIT = "10000000/minute;1000000/second"
ROUNDS = 7  # interleaved rounds of each measurement
PER_ROUND = 5  # requests per size and round
PAGE = "/connections/api-tokens?environment=sandbox"
SEARCH = "/connections/api-tokens?environment=sandbox&q=Payments-API"
MAX_PAGE_BYTES = 300 * 1024
TYPES = ("generic", "ci", "integration", "onboarding")


def _owner_and_org(app, limit: int):
    with app.app_context():
        user, org = accounts.sign_up(
            email=f"scale-{uuid.uuid4().hex[:8]}@example.com",
            password=PASSWORD,
            name="Scale",
            organization="Scale",
            default_rate_limit=NO_LIMIT,
        )
        org.rate_limit = NO_LIMIT
        org.max_live_tokens = limit + 10
        db.session.flush()
        membership = db.session.scalar(
            sa.select(Membership).where(Membership.organization_id == org.id)
        )
        actor = Actor(organization=org, membership=membership, ip="127.0.0.1")
        token, secret = tokens.create_token(
            org,
            actor,
            name="scale-caller",
            environment="sandbox",
            role="admin",
            expires_at=tokens.expiry_from_days(30),
        )
        db.session.commit()
        return user.id, user.email, org.id, secret


def seed_tokens(app, count: int) -> dict:
    """`count` sandbox tokens of every role, type and status (a tenth revoked, a twentieth
    suspended, half used), in bulk; ten of them, spread over the table, named `payments-api-<k>`:
    what the search looks for, so it finds as many at 100 tokens as at 100,000."""
    user_id, email, org_id, secret = _owner_and_org(app, count)
    now = utcnow()
    rows = []
    every = count // 10
    for i in range(count):
        token_id = "".join(random.choices(token_secrets.ALPHABET, k=token_secrets.ID_LENGTH))
        rows.append(
            {
                "id": token_id,
                "organization_id": org_id,
                "environment": "sandbox",
                # Ten tokens at any size are the search's answer ("payments-api-0" to "-9").
                "name": f"payments-api-{i // every}" if i % every == 3 else f"deploy-{i}",
                "role": ("admin", "writer", "viewer")[min(i % 7, 2)] if i else "admin",
                "scopes": [],
                "type": TYPES[i % 4],
                "active": i % 20 != 5,
                "prefix": token_secrets.visible_prefix("sandbox", token_id),
                "secret_hash": token_id,
                "created_at": now - timedelta(seconds=i * 30),
                "updated_at": now,
                "expires_at": now + timedelta(days=1 + i % 365),
                "last_used_at": now - timedelta(minutes=i % 5000) if i % 2 else None,
                "revoked_at": now - timedelta(minutes=i) if i % 10 == 3 else None,
                "created_by_user_id": user_id,
                "created_by_label": email,
            }
        )
    with app.app_context():
        for start in range(0, len(rows), 5000):
            db.session.execute(sa.insert(ApiToken), rows[start : start + 5000])
        db.session.commit()
        db.session.remove()
        settle(db.engine, "api_tokens")
    return {"email": email, "secret": secret, "org_id": org_id}


def settle(engine: sa.Engine, table: str) -> None:
    """On PostgreSQL, what autovacuum does within a minute of a bulk load: statistics for the
    planner and the visibility map for index-only scans. (Without them every plan assumes an
    empty table: a seq scan and a sort of 100,000 rows.)"""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def seed_events(app, count: int) -> dict:
    user_id, email, org_id, secret = _owner_and_org(app, 10)
    now = utcnow()
    columns = (
        "organization_id",
        "environment",
        "actor_type",
        "actor_user_id",
        "actor_label",
        "action",
        "target_type",
        "target_id",
        "target_label",
        "ip",
        "user_agent",
        "details",
        "created_at",
    )
    actions = ("token.created", "token.updated", "token.rotated", "token.revoked")

    def row(i: int) -> tuple:
        return (
            org_id,
            ("sandbox", "production")[i % 2],
            "user",
            user_id,
            email,
            actions[i % 4],
            "token",
            f"tok{i % 5000:013d}",
            f"deploy-{i % 5000}",
            "203.0.113.7",
            "curl/8.5",
            json.dumps({"reason": "bench"}) if i % 4 == 3 else "{}",
            now - timedelta(seconds=count - i),
        )

    with app.app_context():
        engine = db.engine
        db.session.remove()
    batch = 20_000
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            statement = f"COPY audit_events ({', '.join(columns)}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for i in range(count):
                    copy.write_row(row(i))
            raw.commit()
        finally:
            raw.close()
        settle(engine, "audit_events")
    else:
        raw = engine.raw_connection()
        try:
            marks = ", ".join("?" for _ in columns)
            statement = f"INSERT INTO audit_events ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            cursor = raw.cursor()
            for start in range(0, count, batch):
                stop = min(count, start + batch)
                cursor.executemany(statement, [_sqlite_row(row(i)) for i in range(start, stop)])
            raw.commit()
        finally:
            raw.close()
    return {"email": email, "secret": secret, "org_id": org_id}


def _sqlite_row(values: tuple) -> tuple:
    """SQLAlchemy's SQLite format for the timestamp (the last column)."""
    return (*values[:-1], values[-1].strftime("%Y-%m-%d %H:%M:%S.%f"))


def signed_in_client(app, email: str):
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert response.status_code == 302, response.status_code
    return client


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def interleaved(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median milliseconds of each call, measured in interleaved rounds after a warm-up."""
    for call in calls.values():
        call()
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            for _ in range(PER_ROUND):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: _median_ms(values) for name, values in samples.items()}


def _get(client, path: str, headers: dict | None = None, status: int = 200):
    def call():
        response = client.get(path, headers=headers or {})
        if response.status_code != status:
            raise RuntimeError(f"{path} answered {response.status_code}")
        return response

    return call


def _ratio(report, label: str, large: float, small: float, target: float = 1.5) -> None:
    ratio = large / small
    report(label, f"{ratio:.2f} ({large:.1f}/{small:.1f} ms)", f"<= {target}", ratio <= target)


def bench_token_page(setup, fresh_app, report, dispose) -> None:
    apps, seeded, clients = {}, {}, {}
    for count in (100, 100_000):
        apps[count] = fresh_app(setup, f"scale_tokens_{count}")
        seeded[count] = seed_tokens(apps[count], count)
        clients[count] = signed_in_client(apps[count], seeded[count]["email"])
    name = setup.database
    times = interleaved(
        {
            "page_small": _get(clients[100], PAGE),
            "page_large": _get(clients[100_000], PAGE),
            "search_small": _get(clients[100], SEARCH),
            "search_large": _get(clients[100_000], SEARCH),
        }
    )
    _ratio(
        report,
        f"token page, 100,000 tokens / 100 ({name})",
        times["page_large"],
        times["page_small"],
    )
    size = len(clients[100_000].get(PAGE).get_data())
    report(
        f"token page size at 100,000 tokens ({name})",
        f"{size / 1024:.0f} KB",
        "< 300 KB",
        size < MAX_PAGE_BYTES,
    )
    _ratio(
        report,
        f"token search, 100,000 tokens / 100 ({name})",
        times["search_large"],
        times["search_small"],
    )

    # The list API: the last page reached by cursor against the first, and against 100 tokens.
    auth = {"Authorization": f"Bearer {seeded[100_000]['secret']}"}
    with apps[100_000].app_context():
        last = db.session.scalars(
            tokens.tokens_of(db.session.get(Organization, seeded[100_000]["org_id"]), "sandbox")
            .order_by(None)
            .order_by(ApiToken.created_at.asc(), ApiToken.id.desc())
            .limit(101)
        ).all()[-1]
        db.session.remove()
    small_auth = {"Authorization": f"Bearer {seeded[100]['secret']}"}
    api = interleaved(
        {
            "first": _get(clients[100_000], "/api/v1/api_tokens", auth),
            "end": _get(clients[100_000], f"/api/v1/api_tokens?starting_after={last.id}", auth),
            "small": _get(clients[100], "/api/v1/api_tokens", small_auth),
        }
    )
    _ratio(
        report,
        f"list API at 100,000: cursor at the end / offset 0 ({name})",
        api["end"],
        api["first"],
    )
    _ratio(report, f"list API offset 0, 100,000 tokens / 100 ({name})", api["first"], api["small"])
    for app in apps.values():
        dispose(app)


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench_audit(setup, fresh_app, report, dispose) -> None:
    apps, seeded, clients = {}, {}, {}
    for count in (1_000, 1_000_000):
        apps[count] = fresh_app(setup, f"scale_audit_{count}")
        started = time.monotonic()
        seeded[count] = seed_events(apps[count], count)
        if count > 1_000:
            print(f"  (seeded {count:,} audit events in {time.monotonic() - started:.0f} s)")
        clients[count] = signed_in_client(apps[count], seeded[count]["email"])
    name = setup.database
    with apps[1_000_000].app_context():
        deep = db.session.scalar(
            sa.select(AuditEvent.id)
            .where(AuditEvent.organization_id == seeded[1_000_000]["org_id"])
            .order_by(AuditEvent.id)
            .offset(1000)
            .limit(1)
        )
        db.session.remove()
    with apps[1_000].app_context():
        deep_small = db.session.scalar(
            sa.select(AuditEvent.id)
            .where(AuditEvent.organization_id == seeded[1_000]["org_id"])
            .order_by(AuditEvent.id)
            .offset(100)
            .limit(1)
        )
        db.session.remove()
    times = interleaved(
        {
            "small": _get(clients[1_000], "/connections/audit-log"),
            "large": _get(clients[1_000_000], "/connections/audit-log"),
            "deep_small": _get(clients[1_000], f"/connections/audit-log?older={deep_small}"),
            "deep_large": _get(clients[1_000_000], f"/connections/audit-log?older={deep}"),
        }
    )
    _ratio(report, f"audit page, 1,000,000 events / 1,000 ({name})", times["large"], times["small"])
    _ratio(
        report,
        f"audit page deep in the log, 1,000,000 / 1,000 ({name})",
        times["deep_large"],
        times["deep_small"],
    )

    before = _rss_kb()
    peak, rows, started = before, 0, time.monotonic()
    response = clients[1_000_000].get("/connections/audit-log.csv", buffered=False)
    for chunk in response.response:
        rows += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
        peak = max(peak, _rss_kb())
    response.close()
    growth = (peak - before) / 1024
    report(
        f"RSS while streaming a {rows - 1:,}-row CSV export ({name})",
        f"+{growth:.0f} MB (peak {peak / 1024:.0f} MB, {time.monotonic() - started:.0f} s)",
        "< +64 MB",
        growth < 64 and rows - 1 >= 1_000_000,
    )
    for app in apps.values():
        dispose(app)


def bench_scale(setup, *, fresh_app, report, dispose) -> None:
    bench_token_page(setup, fresh_app, report, dispose)
    bench_audit(setup, fresh_app, report, dispose)
