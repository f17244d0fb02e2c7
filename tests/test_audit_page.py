"""Connections → Audit log (SPEC §5): filters in the URL, paging, htmx, CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from models import AuditEvent, Membership
from services import audit
from tests.test_members import actor_for


@pytest.fixture
def org_with_events(db, make_org, make_user, make_member, make_token):
    org = make_org(owner=make_user(email="olive@example.com"), name="Acme")
    owner = db.session.scalar(sa.select(Membership))
    viewer = make_member(org, "viewer", user=make_user(email="vic@example.com"))
    sbx, _ = make_token(org, actor_for(owner), name="sandbox-ci", environment="sandbox")
    prod, _ = make_token(org, actor_for(owner), name="prod-ci", environment="production")
    return org, owner, viewer, sbx, prod


def _rows(html: str) -> int:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return body.count("<tr>")


def test_every_role_sees_the_log_newest_first(client, db, org_with_events):
    org, owner, viewer, sbx, prod = org_with_events
    client.sign_in("vic@example.com")
    html = client.get("/connections/audit-log").get_data(as_text=True)
    assert html.index("prod-ci") < html.index("sandbox-ci")
    assert "token.created" in html and "olive@example.com" in html
    assert 'title="' in html and "<time" in html  # relative time, exact in the title
    assert "127.0.0.1" in html and "pytest" in html


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("environment=production", "prod-ci", "sandbox-ci"),
        ("environment=sandbox", "sandbox-ci", "prod-ci"),
        ("action=token.created&actor=olive%40example.com", "prod-ci", "nobody-else"),
        ("actor=vic%40example.com", "No events match", "prod-ci"),
        ("action=token.created&actor=OLIVE", "prod-ci", "nobody-else"),  # part, any case
        ("actor=100%25", "No events match", "prod-ci"),  # % is a character, not a wildcard
    ],
)
def test_filters(client, db, org_with_events, query, shown, hidden):
    client.sign_in("olive@example.com")
    html = client.get(f"/connections/audit-log?{query}").get_data(as_text=True)
    results = html.split('id="audit-results"', 1)[1]
    assert shown in results and hidden not in results


def test_token_filter_and_date_range(client, db, org_with_events):
    org, owner, viewer, sbx, prod = org_with_events
    old = audit.record(
        actor_for(owner),
        "token.updated",
        environment="sandbox",
        target_type="token",
        target_id=sbx.id,
        target_label="sandbox-ci",
    )
    old.created_at = datetime(2020, 5, 17, 12, tzinfo=UTC)
    db.session.commit()
    client.sign_in("olive@example.com")
    html = client.get(f"/connections/audit-log?token={sbx.id}").get_data(as_text=True)
    assert _rows(html) == 2 and "prod-ci" not in html.split('id="audit-results"')[1]
    html = client.get("/connections/audit-log?from=2020-05-17&to=2020-05-17").get_data(as_text=True)
    assert _rows(html) == 1 and "token.updated" in html
    today = datetime.now(UTC).date().isoformat()
    html = client.get(f"/connections/audit-log?from={today}").get_data(as_text=True)
    assert "token.updated</code>" not in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=yesterday", "“From” must be a date"),
        ("to=2026-02-31", "“To” must be a date"),
        ("from=2026-03-02&to=2026-03-01", "on or after"),
        ("environment=staging", "Environment must be"),
        ("older=0", "page link is not valid"),
        ("newer=abc", "page link is not valid"),
    ],
)
def test_bad_filters_get_a_clear_message_not_a_500(client, org_with_events, query, message):
    client.sign_in("olive@example.com")
    response = client.get(f"/connections/audit-log?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    csv_response = client.get(f"/connections/audit-log.csv?{query}")
    assert csv_response.status_code == 400 and message in csv_response.get_data(as_text=True)


def test_htmx_answers_the_results_fragment(client, org_with_events):
    client.sign_in("olive@example.com")
    response = client.get(
        "/connections/audit-log?environment=sandbox", headers={"HX-Request": "true"}
    )
    html = response.get_data(as_text=True)
    assert "<html" not in html and 'id="audit-results"' in html and "sandbox-ci" in html
    restore = client.get(
        "/connections/audit-log?environment=sandbox",
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )
    assert "<html" in restore.get_data(as_text=True)


def test_paging_50_per_page_keeps_filters(client, db, org_with_events):
    org, owner, *_ = org_with_events
    for i in range(120):
        audit.record(
            actor_for(owner),
            "token.updated",
            environment="sandbox",
            target_type="token",
            target_id=f"t{i}",
            target_label=f"bulk-{i:03}",
        )
    db.session.commit()
    client.sign_in("olive@example.com")
    first = client.get("/connections/audit-log?environment=sandbox").get_data(as_text=True)
    assert _rows(first) == 50 and "121 events matching the filters" in first
    assert "bulk-119" in first and "bulk-069" not in first
    older = re.search(r'href="(/connections/audit-log\?environment=sandbox&amp;older=\d+)"', first)
    second = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "bulk-069" in second and "bulk-119" not in second and "Newer" in second
    older = re.search(r'href="(/connections/audit-log\?environment=sandbox&amp;older=\d+)"', second)
    third = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert _rows(third) == 21  # 120 + the sandbox token's creation
    assert 'rel="next"' not in third
    newer = re.search(r'href="(/connections/audit-log\?environment=sandbox&amp;newer=\d+)"', third)
    back = client.get(newer.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert _rows(back) == 50 and "bulk-069" in back  # the second page again


def test_csv_export_is_the_filtered_view_escaped_and_safe_from_formulas(
    client, db, org_with_events
):
    org, owner, viewer, sbx, prod = org_with_events
    audit.record(
        actor_for(owner),
        "token.updated",
        environment="production",
        target_type="token",
        target_id=prod.id,
        target_label='=HYPERLINK("x"), "quoted"',
    )
    audit.record(
        actor_for(owner),
        "token.updated",
        environment="production",
        target_type="token",
        target_id=prod.id,
        target_label="@SUM(1)\nline two",
    )
    db.session.commit()
    client.sign_in("vic@example.com")
    for url in (
        "/connections/audit-log.csv?environment=production",
        "/connections/audit-log?environment=production&format=csv",
    ):
        response = client.get(url)
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
        assert rows[0][:4] == ["time", "actor", "actor_type", "action"]
        labels = [row[6] for row in rows[1:]]
        assert labels == ["'@SUM(1)\nline two", '\'=HYPERLINK("x"), "quoted"', "prod-ci"]
        assert all(row[7] == "production" for row in rows[1:])


def test_csv_export_streams_every_event_in_batches(client, db, org_with_events, monkeypatch):
    import blueprints.audit

    monkeypatch.setattr(blueprints.audit, "CSV_BATCH", 7)  # so 24 events span four batches
    org, owner, *_ = org_with_events
    for i in range(23):
        audit.record(
            actor_for(owner),
            "token.updated",
            environment="sandbox",
            target_type="token",
            target_id=f"t{i}",
            target_label=f"bulk-{i:03}",
        )
    db.session.commit()
    client.sign_in("olive@example.com")
    response = client.get("/connections/audit-log.csv?environment=sandbox")
    assert "Content-Length" not in response.headers  # sent as it is read, not built whole
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    labels = [row[6] for row in rows[1:]]
    assert labels == [f"bulk-{i:03}" for i in reversed(range(23))] + ["sandbox-ci"]


def test_log_shows_only_the_current_organization(client, db, org_with_events, make_org, make_token):
    org, owner, *_ = org_with_events
    other = make_org(owner=owner.user, name="Second")
    make_token(other, name="second-org-token")
    client.sign_in("olive@example.com")
    first = client.get("/connections/audit-log").get_data(as_text=True)
    client.form(f"/organizations/{other.id}/switch", page="/connections/audit-log")
    second = client.get("/connections/audit-log").get_data(as_text=True)
    csv_text = client.get("/connections/audit-log.csv").get_data(as_text=True)
    assert "second-org-token" not in first and "prod-ci" in first
    assert "second-org-token" in second and "prod-ci" not in second
    assert "second-org-token" in csv_text and "prod-ci" not in csv_text


def test_audit_page_runs_the_same_queries_for_few_or_many_events(client, db, org_with_events):
    org, owner, *_ = org_with_events
    client.sign_in("olive@example.com")

    def count() -> int:
        seen = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        sa.event.listen(db.engine, "before_cursor_execute", listener)
        try:
            client.get("/connections/audit-log")
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    few = count()
    for i in range(60):
        audit.record(actor_for(owner), "token.updated", target_id=str(i), target_type="token")
    db.session.commit()
    assert count() == few
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) > 60


def test_sign_ins_and_failed_sign_ins_are_listed_without_the_password(client, db, org_with_events):
    client.form("/login", {"email": "olive@example.com", "password": "wrong-password-typed"})
    client.sign_in("olive@example.com")
    html = client.get("/connections/audit-log?action=user.sign_in_failed").get_data(as_text=True)
    assert "user.sign_in_failed" in html
    csv_text = client.get("/connections/audit-log.csv").get_data(as_text=True)
    assert "user.signed_in" in csv_text and "user.sign_in_failed" in csv_text
    assert "wrong-password-typed" not in csv_text


def test_the_log_shows_what_changed(client, db, org_with_events):
    from models import ApiToken
    from services import tokens as token_service

    owner = db.session.scalar(sa.select(Membership).where(Membership.role == "owner"))
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.name == "prod-ci"))
    token_service.rename_token(token, actor_for(owner), name="prod-deploy")
    db.session.commit()
    client.sign_in("olive@example.com")
    html = client.get("/connections/audit-log?action=token.updated").get_data(as_text=True)
    assert "prod-ci → prod-deploy" in html


@pytest.mark.parametrize("path", ["/connections/audit-log", "/connections/audit-log.csv"])
@pytest.mark.parametrize(
    "query", ["to=9999-12-31", "from=0001-01-01&to=9999-12-31", "from=9999-12-31"]
)
def test_dates_at_the_ends_of_the_calendar_are_answered_never_a_500(
    client, db, org_with_events, path, query
):
    """The last day of year 9999 has no "next day" to stop before: it means no end."""
    client.sign_in("olive@example.com")
    response = client.get(f"{path}?{query}")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    nothing = "No events match these filters" in body or body.count("\n") == 1  # CSV header
    assert nothing == query.startswith("from=9999")  # else every event, the newest included


@pytest.mark.parametrize("path", ["/connections/audit-log", "/connections/audit-log.csv"])
@pytest.mark.parametrize("query", ["to=10000-01-01", "from=-0001-01-01", "to=2026-02-30"])
def test_dates_no_calendar_holds_are_a_400_with_a_message(client, db, org_with_events, path, query):
    client.sign_in("olive@example.com")
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400
    assert "must be a date like 2026-01-31" in response.get_data(as_text=True)
