"""Connections → Audit log (SPEC §5): filters in the URL, paging, and a CSV export.

Every view reads the current organization's events only, through services.audit.events_of.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, Response, render_template, request, stream_with_context, url_for
from flask_login import login_required

from blueprints.forms import has_control_characters
from blueprints.web import current_org, is_htmx
from extensions import db
from models import ENVIRONMENTS, AuditEvent, Organization
from services import audit

bp = Blueprint("audit", __name__, url_prefix="/connections")

PER_PAGE = 50
CSV_BATCH = 1000  # rows fetched and sent at a time: the export never sits whole in memory
FILTERS = ("actor", "action", "token", "environment", "from", "to")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class AuditQuery:
    """The filters of the page, as typed, with what was wrong with any of them."""

    values: dict[str, str]
    page: int = 1
    since: datetime | None = None
    until: datetime | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def select(self, organization: Organization) -> sa.Select[tuple[AuditEvent]]:
        return audit.events_of(
            organization,
            environment=self.values["environment"] or None,
            actor=self.values["actor"] or None,
            action=self.values["action"] or None,
            target_id=self.values["token"] or None,
            since=self.since,
            until=self.until,
        )

    def url_args(self, **changes: object) -> str:
        """The query string of this view (only filters that are set), with changes."""
        args = {k: v for k, v in self.values.items() if v}
        if self.page > 1:
            args["page"] = str(self.page)
        for key, value in changes.items():
            if value in (None, "", 1) and key == "page":
                args.pop("page", None)
            elif value:
                args[key] = str(value)
        return urlencode(args)

    @property
    def active(self) -> bool:
        return any(self.values.values())


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_query(args) -> AuditQuery:
    values = {name: (args.get(name) or "").strip()[:254] for name in FILTERS}
    query = AuditQuery(values=values)
    for name, value in values.items():
        if has_control_characters(value):
            query.errors[name] = "Filters may not contain control characters."
    if values["environment"] and values["environment"] not in ENVIRONMENTS:
        query.errors["environment"] = "Environment must be Sandbox or Production."
    start = end = None
    if values["from"]:
        start = _parse_date(values["from"])
        if start is None:
            query.errors["from"] = "“From” must be a date like 2026-01-31."
    if values["to"]:
        end = _parse_date(values["to"])
        if end is None:
            query.errors["to"] = "“To” must be a date like 2026-01-31."
    if start and end and start > end:
        query.errors["to"] = "“To” must be on or after “From”."
    if start:
        query.since = datetime(start.year, start.month, start.day, tzinfo=UTC)
    if end and end < date.max:  # the whole "to" day is included; 9999-12-31 means no end
        query.until = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    page = args.get("page", "1")
    if page.isdigit() and 1 <= int(page) <= 1_000_000:
        query.page = int(page)
    else:
        query.errors["page"] = "Page must be a whole number from 1."
    return query


def _choices(organization: Organization) -> dict[str, list[str]]:
    """Actors and actions seen in this organization, for the filter menus (two queries)."""
    base = sa.select(AuditEvent).where(AuditEvent.organization_id == organization.id)
    actions = db.session.scalars(
        base.with_only_columns(AuditEvent.action).distinct().order_by(AuditEvent.action)
    )
    actors = db.session.scalars(
        base.with_only_columns(AuditEvent.actor_label)
        .distinct()
        .order_by(AuditEvent.actor_label)
        .limit(500)
    )
    return {"actions": list(actions), "actors": list(actors)}


@bp.get("/audit-log")
@login_required
def index():
    if request.args.get("format") == "csv":
        return export_csv()
    org = current_org()
    query = parse_query(request.args)
    events, total = [], 0
    if not query.errors:
        select = query.select(org)
        total = db.session.scalar(sa.select(sa.func.count()).select_from(select.subquery())) or 0
        events = list(
            db.session.scalars(select.limit(PER_PAGE).offset((query.page - 1) * PER_PAGE))
        )
    pages = max(1, -(-total // PER_PAGE))
    context = {
        "q": query,
        "events": events,
        "total": total,
        "pages": pages,
        "per_page": PER_PAGE,
        "environments": ENVIRONMENTS,
    }
    status = 400 if query.errors else 200
    # A history restore after Back asks for the whole page, not the fragment.
    if is_htmx() and request.headers.get("HX-History-Restore-Request") != "true":
        # Push a clean URL (no empty filters) so the view is easy to read and bookmark.
        args = query.url_args()
        clean = url_for("audit.index") + (f"?{args}" if args else "")
        return render_template("audit/_results.html", **context), 200, {"HX-Push-Url": clean}
    return render_template("audit/index.html", choices=_choices(org), **context), status


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


CSV_COLUMNS = (
    "time",
    "actor",
    "actor_type",
    "action",
    "target_type",
    "target_id",
    "target",
    "environment",
    "ip",
    "user_agent",
    "details",
    "request_id",
)


def _csv_row(event: AuditEvent) -> list[str]:
    return [
        _cell(value)
        for value in (
            event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            event.actor_label,
            event.actor_type,
            event.action,
            event.target_type,
            event.target_id,
            event.target_label,
            event.environment,
            event.ip,
            event.user_agent,
            json.dumps(event.details, sort_keys=True) if event.details else "",
            event.request_id,
        )
    ]


@bp.get("/audit-log.csv")
@login_required
def export_csv():
    org = current_org()
    query = parse_query(request.args)
    if query.errors:
        message = " ".join(query.errors.values())
        return Response(message + "\n", status=400, mimetype="text/plain")
    statement = query.select(org).execution_options(yield_per=CSV_BATCH)

    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for batch in db.session.scalars(statement).partitions():
            writer.writerows(_csv_row(event) for event in batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="keysmith-audit-log-{stamp}.csv"',
            "Cache-Control": "private, no-store",
        },
    )
