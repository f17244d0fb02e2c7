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
COUNT_UP_TO = 10_000  # the page counts this far ("10,000+"): counting a million costs a scan
CHOICES_FROM = 1_000  # the filter menus offer what the newest 1,000 events name, and
# every action Keysmith records (so a rare one of long ago can still be chosen)
KNOWN_ACTIONS = (
    "invite.cancelled",
    "leak_alert.dismissed",
    "member.invited",
    "member.joined",
    "member.removed",
    "member.role_changed",
    "policy.updated",
    "token.created",
    "token.expiring",
    "token.ip_denied",
    "token.kept",
    "token.leaked",
    "token.resumed",
    "token.revoked",
    "token.rotated",
    "token.suspended",
    "token.updated",
    "user.password_changed",
    "user.sign_in_failed",
    "user.signed_in",
    "user.two_factor_disabled",
    "user.two_factor_enabled",
    "webhook.created",
    "webhook.deleted",
    "webhook.redelivered",
    "webhook.secret_revealed",
    "webhook.secret_rolled",
    "webhook.updated",
)
CSV_BATCH = 1000  # rows fetched and sent at a time: the export never sits whole in memory
FILTERS = ("actor", "action", "token", "environment", "from", "to")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class AuditQuery:
    """The filters of the page, as typed, with what was wrong with any of them."""

    values: dict[str, str]
    older: int | None = None  # the page of events just older than this event (its id)
    newer: int | None = None  # the page just newer than this one
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
        for key, value in changes.items():
            if value:
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
    for name in ("older", "newer"):
        value = args.get(name)
        if value is None:
            continue
        if value.isascii() and value.isdigit() and 1 <= int(value) < 2**63:
            setattr(query, name, int(value))
        else:
            query.errors[name] = "This page link is not valid: start from the newest events."
    return query


def _choices(organization: Organization) -> dict[str, list[str]]:
    """Actors of the newest events and every action, for the filter menus (two bounded
    queries: a distinct over a million events would read them all)."""
    newest = (
        sa.select(AuditEvent.action, AuditEvent.actor_label)
        .where(AuditEvent.organization_id == organization.id)
        .order_by(AuditEvent.created_at.desc())
        .limit(CHOICES_FROM)
        .subquery()
    )
    actions = db.session.scalars(sa.select(newest.c.action).distinct().order_by(newest.c.action))
    actors = db.session.scalars(
        sa.select(newest.c.actor_label).distinct().order_by(newest.c.actor_label).limit(500)
    )
    return {"actions": sorted({*actions, *KNOWN_ACTIONS}), "actors": list(actors)}


def _keyset_page(organization: Organization, query: AuditQuery):
    """One page of events by keyset (no OFFSET): older than `older`, or newer than `newer`,
    or the newest; with whether there are older and newer ones."""
    select = query.select(organization)
    mark_id = query.older or query.newer
    key = sa.tuple_(AuditEvent.created_at, AuditEvent.id)
    if mark_id is not None:
        mark = db.session.execute(
            sa.select(AuditEvent.created_at, AuditEvent.id).where(
                AuditEvent.organization_id == organization.id, AuditEvent.id == mark_id
            )
        ).one_or_none()
        if mark is None:
            query.errors["older" if query.older else "newer"] = (
                "This page link is not valid: start from the newest events."
            )
            return [], False, False
        position = sa.tuple_(mark.created_at, mark.id)
        if query.older:
            select = select.where(key < position)
        else:
            select = select.where(key > position).order_by(None)
            select = select.order_by(AuditEvent.created_at.asc(), AuditEvent.id.asc())
    events = list(db.session.scalars(select.limit(PER_PAGE + 1)))
    more = len(events) > PER_PAGE
    events = events[:PER_PAGE]
    if query.newer:
        events.reverse()
        return events, True, more
    return events, more, mark_id is not None


@bp.get("/audit-log")
@login_required
def index():
    if request.args.get("format") == "csv":
        return export_csv()
    org = current_org()
    query = parse_query(request.args)
    events, total, older, newer = [], 0, False, False
    if not query.errors:
        events, older, newer = _keyset_page(org, query)
    if not query.errors:
        capped = (
            query.select(org)
            .with_only_columns(AuditEvent.id)
            .order_by(None)
            .limit(COUNT_UP_TO + 1)
            .subquery()
        )
        total = db.session.scalar(sa.select(sa.func.count()).select_from(capped)) or 0
    context = {
        "q": query,
        "events": events,
        "total": total,
        "count_up_to": COUNT_UP_TO,
        "older": events[-1].id if older and events else None,
        "newer": events[0].id if newer and events else None,
        "per_page": PER_PAGE,
        "environments": ENVIRONMENTS,
    }
    status = 400 if query.errors else 200
    # A history restore after Back asks for the whole page, not the fragment.
    if is_htmx() and request.headers.get("HX-History-Restore-Request") != "true":
        # Push a clean URL (no empty filters) so the view is easy to read and bookmark.
        args = query.url_args(older=query.older, newer=query.newer)
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


def _csv_row(event: sa.Row) -> list[str]:
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
    # Plain rows, not ORM objects: a million of those took minutes to build (issue 18).
    statement = (
        query.select(org)
        .with_only_columns(*AuditEvent.__table__.c)
        .execution_options(yield_per=CSV_BATCH)
    )

    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for batch in db.session.execute(statement).partitions():
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
