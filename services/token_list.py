"""The token page's list at any size (SPEC §3 "At any size", §8): filters, sorting, keyset
pages, true counts, and the selection a bulk action works on.

Every query is scoped to one organization and environment. A page is one statement whatever
the number of tokens: a UNION ALL of one LIMITed, index-ordered query per *segment* (a group of
the page, split where the sort column is NULL), so no query sorts or skips the whole list.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from extensions import db
from models import TOKEN_ROLES, TOKEN_TYPES, ApiToken, Organization, TokenCount, utcnow
from services import hygiene
from services.actor import Actor
from services.errors import NotFound, ValidationFailed

PER_PAGE = 50
PER_PAGE_CHOICES = (50, 100)
# Sort keys of the page and the column each orders by; NULLs ("never") come last either way.
SORTS = {
    "name": ApiToken.name,
    "created": ApiToken.created_at,
    "last_used": ApiToken.last_used_at,
    "expires": ApiToken.expires_at,
}
NULLABLE_SORTS = ("last_used", "expires")
DEFAULT_SORT, DEFAULT_DIRECTION = "created", "desc"
# The direction a column header's first click asks for.
FIRST_DIRECTION = {"name": "asc", "created": "desc", "last_used": "desc", "expires": "asc"}
STATUSES = ("active", "inactive", "expired", "revoked")
# The page's groups, in order: live tokens by role, highest first, then the revoked ones.
GROUPS = (*TOKEN_ROLES, "revoked")
BULK_ACTIONS = ("revoke", "suspend")
BULK_MAX = 1000  # tokens one bulk action changes at most (one transaction, one event each)


@dataclass(frozen=True)
class ListFilters:
    """What narrows the list: the search box, the hygiene chip, role, type and status."""

    q: str = ""
    hygiene: str | None = None
    role: str | None = None
    type: str | None = None
    status: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.q or self.hygiene or self.role or self.type or self.status)


@dataclass(frozen=True)
class ListOrder:
    sort: str = DEFAULT_SORT
    direction: str = DEFAULT_DIRECTION
    per_page: int = PER_PAGE

    @property
    def descending(self) -> bool:
        return self.direction == "desc"


@dataclass(frozen=True)
class Cursor:
    """A position in the list: the segment, the sort value (None in a NULL segment) and the id
    of a row. Pages are "after" or "before" such a row, so inserts and deletions elsewhere
    never shift what the next or previous page shows."""

    segment: int
    value: Any
    token_id: str

    def encode(self, order: ListOrder) -> str:
        value = self.value
        if isinstance(value, datetime):
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        raw = json.dumps([order.sort, self.segment, value, self.token_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BAD_CURSOR = "This page link is not valid (it may be from another sort): start from the first page."


def decode_cursor(text: object, order: ListOrder) -> Cursor:
    """ValidationFailed for anything this module did not make for this sort."""
    if not isinstance(text, str) or not text or len(text) > 400:
        raise ValidationFailed(details={"cursor": BAD_CURSOR})
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        sort, segment, value, token_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise ValidationFailed(details={"cursor": BAD_CURSOR}) from None
    ok = (
        sort == order.sort
        and isinstance(segment, int)
        and 0 <= segment < 2 * len(GROUPS)
        and isinstance(token_id, str)
        and token_id.isascii()
        and token_id.isalnum()
        and len(token_id) <= 32
    )
    if ok and value is not None:
        if order.sort == "name":
            ok = isinstance(value, str) and len(value) <= 200
        else:
            try:
                value = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            except (TypeError, ValueError):
                ok = False
    if not ok:
        raise ValidationFailed(details={"cursor": BAD_CURSOR})
    return Cursor(segment, value, token_id)


def _choice(field_name: str, value: object, choices: tuple[str, ...], message: str) -> str | None:
    if value in (None, "", "all"):
        return None
    if value not in choices:
        raise ValidationFailed(details={field_name: message})
    return value  # type: ignore[return-value]


def parse_filters(source: Mapping[str, str], *, q: str = "", hygiene_filter: str | None = None):
    """role, type and status from a query string or form (the search and hygiene chip are
    parsed by services.tokens); every wrong one named at once."""
    errors: dict[str, str] = {}
    values: dict[str, str | None] = {}
    for name, choices, message in (
        ("role", TOKEN_ROLES, "Role must be Admin, Writer or Viewer."),
        ("type", TOKEN_TYPES, "Type must be one of " + ", ".join(TOKEN_TYPES) + "."),
        ("status", STATUSES, "Status must be active, suspended, expired or revoked."),
    ):
        raw = source.get(name)
        if name == "status" and raw == "suspended":
            raw = "inactive"
        try:
            values[name] = _choice(name, raw, choices, message)
        except ValidationFailed as error:
            errors.update(error.details)
    if errors:
        raise ValidationFailed(details=errors)
    return ListFilters(q=q, hygiene=hygiene_filter, **values)


def parse_order(source: Mapping[str, str]) -> ListOrder:
    errors: dict[str, str] = {}
    sort = source.get("sort") or DEFAULT_SORT
    if sort not in SORTS:
        errors["sort"] = "Sort by name, created, last_used or expires."
        sort = DEFAULT_SORT
    direction = source.get("dir") or (
        DEFAULT_DIRECTION if sort == DEFAULT_SORT else FIRST_DIRECTION[sort]
    )
    if direction not in ("asc", "desc"):
        errors["dir"] = "Direction must be asc or desc."
    per_page = source.get("per_page") or str(PER_PAGE)
    if per_page not in {str(n) for n in PER_PAGE_CHOICES}:
        errors["per_page"] = "Show 50 or 100 tokens a page."
        per_page = str(PER_PAGE)
    if errors:
        raise ValidationFailed(details=errors)
    return ListOrder(sort=sort, direction=direction, per_page=int(per_page))


# ---------------------------------------------------------------- queries


def _opaque(column: Any) -> Any:
    """The column as SQLite's planner may not use for an index (`+column`): a search that
    starts from the trigram table's few candidates must not be read in index order instead."""
    return sa.literal_column(f"+{column.table.name}.{column.name}", type_=column.type)


def _columns(filters: ListFilters) -> Any:
    from services.tokens import uses_trigram_index

    if filters.q and uses_trigram_index(filters.q):
        return _opaque
    return lambda column: column


def _filtered(
    organization: Organization, environment: str, filters: ListFilters, now: datetime
) -> list[sa.ColumnElement[bool]]:
    """The WHERE terms of the list, besides the segment's own."""
    from services.tokens import search_condition  # tokens imports this module's users

    c = _columns(filters)
    terms: list[sa.ColumnElement[bool]] = [
        c(ApiToken.organization_id) == organization.id,
        c(ApiToken.environment) == environment,
    ]
    if filters.q:
        terms.append(search_condition(filters.q))
    if filters.hygiene == "expiring":
        terms.append(hygiene.expiring_filter(now))
    elif filters.hygiene == "unused":
        terms.append(hygiene.unused_filter(now))
    if filters.role:
        terms.append(c(ApiToken.role) == filters.role)
    if filters.type:
        terms.append(c(ApiToken.type) == filters.type)
    if filters.status and filters.status != "revoked":
        not_expired = sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)
        if filters.status == "expired":
            terms.append(ApiToken.expires_at <= now)
        elif filters.status == "inactive":
            terms += [not_expired, ApiToken.active.is_(False)]
        else:
            terms += [not_expired, ApiToken.active.is_(True)]
    return terms


def groups_for(filters: ListFilters) -> tuple[str, ...]:
    groups = GROUPS
    if filters.status == "revoked":
        groups = ("revoked",)
    elif filters.status:
        groups = TOKEN_ROLES
    if filters.role:
        groups = tuple(g for g in groups if g in (filters.role, "revoked"))
    return groups


@dataclass(frozen=True)
class Segment:
    """One run of the list's order: a group, and for a nullable sort the rows with or without
    a value; `index` is its place in the whole order (stable across filters, so cursors are)."""

    index: int
    group: str
    nulls: bool

    def terms(self, column, c: Any = lambda column: column) -> list[sa.ColumnElement[bool]]:
        if self.group == "revoked":
            terms = [c(ApiToken.revoked_at).is_not(None)]
        else:
            terms = [c(ApiToken.revoked_at).is_(None), c(ApiToken.role) == self.group]
        if column is not None:
            terms.append(c(column).is_(None) if self.nulls else c(column).is_not(None))
        return terms


def segments_for(filters: ListFilters, order: ListOrder) -> list[Segment]:
    nullable = order.sort in NULLABLE_SORTS
    segments = []
    for group in groups_for(filters):
        position = GROUPS.index(group) * 2
        segments.append(Segment(position, group, False))
        if nullable:
            segments.append(Segment(position + 1, group, True))
    return segments


def _segment_query(
    segment: Segment,
    base: list[sa.ColumnElement[bool]],
    order: ListOrder,
    limit: int,
    after: Cursor | None,
    reverse: bool,
    c: Any,
) -> sa.Select:
    column = SORTS[order.sort]
    nullable = order.sort in NULLABLE_SORTS
    descending = order.descending != reverse
    terms = [*base, *segment.terms(column if nullable else None, c)]
    keys = [ApiToken.id] if segment.nulls else [column, ApiToken.id]
    if after is not None and after.segment == segment.index:
        position = [after.token_id] if segment.nulls else [after.value, after.token_id]
        row, mark = sa.tuple_(*keys), sa.tuple_(*position)
        terms.append(row < mark if descending else row > mark)
    order_by = [key.desc() if descending else key.asc() for key in keys]
    return (
        sa.select(ApiToken, sa.literal_column(str(int(segment.index))).label("segment"))
        .where(*terms)
        .order_by(*order_by)
        .limit(limit)
    )


@dataclass
class TokenPage:
    """One page of the list, in order, with links to its neighbours and the true counts."""

    tokens: list[ApiToken]
    segments: list[int]
    order: ListOrder
    next_cursor: str | None = None
    previous_cursor: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def groups(self) -> list[tuple[str, list[ApiToken]]]:
        """The page's rows by group, in the page's order (a group may go on past the page)."""
        result: list[tuple[str, list[ApiToken]]] = []
        for token, segment in zip(self.tokens, self.segments, strict=True):
            group = GROUPS[segment // 2]
            if not result or result[-1][0] != group:
                result.append((group, []))
            result[-1][1].append(token)
        return result

    @property
    def found(self) -> int:
        return sum(self.counts.get(group, 0) for group in GROUPS)

    @property
    def live_found(self) -> int:
        return sum(self.counts.get(group, 0) for group in TOKEN_ROLES)


def page_of_tokens(
    organization: Organization,
    environment: str,
    filters: ListFilters = ListFilters(),
    order: ListOrder = ListOrder(),
    *,
    after: Cursor | None = None,
    before: Cursor | None = None,
    now: datetime | None = None,
    nothing: bool = False,
) -> TokenPage:
    """One page after `after` (or before `before`, or the first), in one statement."""
    now = now or utcnow()
    base = _filtered(organization, environment, filters, now)
    if nothing:
        base.append(sa.false())
    reverse = before is not None
    mark = before if reverse else after
    segments = segments_for(filters, order)
    if mark is not None:
        segments = [
            s for s in segments if (s.index <= mark.segment if reverse else s.index >= mark.segment)
        ]
    limit = order.per_page + 1  # one more says whether there is a next page
    members = [
        _segment_query(segment, base, order, limit, mark, reverse, _columns(filters)).subquery()
        for segment in segments
    ]
    rows: list[tuple[ApiToken, int]] = []
    if members:
        union = sa.union_all(*(sa.select(member) for member in members)).subquery()
        token = aliased(ApiToken, union)
        column = getattr(token, SORTS[order.sort].key)
        descending = order.descending != reverse
        outer = [union.c.segment.desc() if reverse else union.c.segment.asc()]
        outer += [
            key.desc() if descending else key.asc() for key in (column, token.id)
        ]  # a NULL segment's column is NULL throughout: its order is the id's
        rows = [
            (t, s)
            for t, s in db.session.execute(
                sa.select(token, union.c.segment).order_by(*outer).limit(limit)
            ).all()
        ]
    more = len(rows) > order.per_page
    rows = rows[: order.per_page]
    if reverse:
        rows.reverse()
    page = TokenPage(tokens=[t for t, _ in rows], segments=[s for _, s in rows], order=order)
    column_key = SORTS[order.sort].key

    def cursor(token: ApiToken, segment: int) -> str:
        nulls = segment % 2 == 1 and order.sort in NULLABLE_SORTS
        value = None if nulls else getattr(token, column_key)
        return Cursor(segment, value, token.id).encode(order)

    if rows and not reverse:
        page.next_cursor = cursor(*rows[-1]) if more else None
        page.previous_cursor = cursor(*rows[0]) if after is not None else None
    elif rows:
        page.next_cursor = cursor(*rows[-1])  # `before` itself follows
        page.previous_cursor = cursor(*rows[0]) if more else None
    page.counts = counts_of(organization, environment, filters, now=now, nothing=nothing)
    return page


def counts_of(
    organization: Organization,
    environment: str,
    filters: ListFilters = ListFilters(),
    *,
    now: datetime | None = None,
    nothing: bool = False,
) -> dict[str, int]:
    """The true size of each group of the filtered list, and the environment's hygiene
    counts (expiring, unused: the chips), in one statement of counts over indexed ranges."""
    now = now or utcnow()
    base = _filtered(organization, environment, filters, now)
    if nothing:
        base.append(sa.false())
    allowed = groups_for(filters)
    c = _columns(filters)

    def count(*terms) -> sa.ScalarSelect:
        return sa.select(sa.func.count()).select_from(ApiToken).where(*terms).scalar_subquery()

    columns: dict[str, Any] = {}
    if not (filters.q or filters.hygiene or filters.type or filters.status):
        # Unfiltered (or by role alone): the counts the database keeps (token_counts).
        for group in GROUPS:
            if group in allowed:
                roles = [filters.role] if filters.role else list(TOKEN_ROLES)
                columns[group] = stored_count(
                    organization,
                    environment,
                    roles=[group] if group != "revoked" else roles,
                    revoked=group == "revoked",
                )
    for group in TOKEN_ROLES:
        if group in allowed and group not in columns:
            columns[group] = count(*base, *Segment(0, group, False).terms(None, c))
    if "revoked" in allowed and "revoked" not in columns:
        # By role, so each count is a range of the (organization, environment, role,
        # revoked_at) index rather than a walk through every token of the environment.
        columns["revoked"] = sum(
            (
                count(*base, c(ApiToken.role) == role, c(ApiToken.revoked_at).is_not(None))
                for role in TOKEN_ROLES
                if role in allowed or filters.role is None
            ),
            sa.literal(0),
        )
    scope = [ApiToken.organization_id == organization.id, ApiToken.environment == environment]
    live = [*scope, ApiToken.revoked_at.is_(None)]
    columns["expiring"] = count(*scope, hygiene.expiring_filter(now))
    # hygiene.unused_filter, split where last_used_at is NULL: two ranges of one index.
    cutoff = now - hygiene.UNUSED_FOR
    sqlite = db.session.get_bind().dialect.name == "sqlite"
    created = _opaque(ApiToken.created_at) if sqlite else ApiToken.created_at  # the usage index
    columns["unused"] = count(
        *live, ApiToken.last_used_at.is_(None), ApiToken.created_at <= cutoff
    ) + count(*live, ApiToken.last_used_at <= cutoff, created <= cutoff)
    values = db.session.execute(sa.select(*(v.label(k) for k, v in columns.items()))).one()
    counts = {group: 0 for group in GROUPS}
    counts.update({key: int(value or 0) for key, value in zip(columns, values, strict=True)})
    return counts


def stored_count(
    organization: Organization,
    environment: str,
    *,
    roles: list[str] | None = None,
    revoked: bool | None = None,
) -> sa.ScalarSelect:
    """How many tokens of these roles (all if None), revoked or live (both if None), from the
    counts the database's triggers keep: one primary-key range, whatever the number of tokens."""
    query = sa.select(sa.func.coalesce(sa.func.sum(TokenCount.count), 0)).where(
        TokenCount.organization_id == organization.id, TokenCount.environment == environment
    )
    if roles is not None:
        query = query.where(TokenCount.role.in_(roles))
    if revoked is not None:
        query = query.where(TokenCount.revoked.is_(revoked))
    return query.scalar_subquery()


def matching_tokens(
    organization: Organization,
    environment: str,
    filters: ListFilters,
    *,
    ids: list[str] | None = None,
    now: datetime | None = None,
    limit: int = BULK_MAX + 1,
    action: str | None = None,
    actor: Actor | None = None,
) -> list[ApiToken]:
    """The tokens a bulk action would see: these ids (within the organization and
    environment) or every token matching the filters, in the page's order, at most `limit`.
    For "all matching", `action` and `actor` narrow it in SQL, before the limit, to the
    tokens that action would change and that actor may manage: otherwise the first 1,000
    could all be left out (already suspended, or someone else's) and the rest never reached."""
    now = now or utcnow()
    if ids is not None:
        query = sa.select(ApiToken).where(
            ApiToken.organization_id == organization.id,
            ApiToken.environment == environment,
            ApiToken.id.in_(ids),
        )
    else:
        # Bulk actions change live tokens only: revoked ones are never selected.
        terms = _filtered(organization, environment, filters, now)
        terms.append(ApiToken.revoked_at.is_(None))
        if filters.status == "revoked":
            terms.append(sa.false())
        if action == "suspend":
            terms.append(ApiToken.active.is_(True))
        if actor is not None and not actor.manages_all_tokens:
            terms.append(ApiToken.created_by_user_id == actor.user_id)
        query = sa.select(ApiToken).where(*terms)
    return list(
        db.session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id).limit(limit))
    )


# ---------------------------------------------------------------- bulk actions


@dataclass
class BulkSelection:
    """What a bulk action would change, and how many it leaves out (and why)."""

    action: str
    tokens: list[ApiToken]
    skipped: int = 0
    capped: bool = False


def parse_bulk_ids(values: list[str]) -> list[str]:
    ids = list(dict.fromkeys(v for v in values if v))
    if any(not (v.isascii() and v.isalnum() and len(v) <= 32) for v in ids):
        raise NotFound("No such token.")
    if len(ids) > BULK_MAX:
        raise ValidationFailed(details={"ids": f"Select at most {BULK_MAX:,} tokens at a time."})
    return ids


def _eligible(action: str, token: ApiToken) -> bool:
    return not token.is_revoked and (action == "revoke" or token.active)


def select_for_bulk(
    organization: Organization,
    environment: str,
    actor: Actor,
    action: str,
    *,
    ids: list[str] | None = None,
    filters: ListFilters | None = None,
    now: datetime | None = None,
) -> BulkSelection:
    """The tokens `action` would change. Named ids must all be this organization's and
    environment's (NotFound otherwise) and the actor's to manage (Forbidden otherwise);
    "all matching" takes the matching tokens the actor may manage. Either way, tokens the
    action would not change (already revoked, or suspended) are left out and counted."""
    from services import tokens as token_service

    if action not in BULK_ACTIONS:
        raise ValidationFailed(details={"action": "Choose Revoke or Suspend."})
    token_service.require_may_create(actor)
    if ids is not None:
        found = matching_tokens(organization, environment, ListFilters(), ids=ids, now=now)
        if len(found) != len(ids):
            raise NotFound("No such token.")  # another organization's or environment's id
        for token in found:
            token_service.require_manage(actor, token)
        chosen = [t for t in found if _eligible(action, t)]
        return BulkSelection(action, chosen, skipped=len(found) - len(chosen))
    found = matching_tokens(
        organization, environment, filters or ListFilters(), now=now, action=action, actor=actor
    )
    capped = len(found) > BULK_MAX
    found = found[:BULK_MAX]
    chosen = [t for t in found if _eligible(action, t) and token_service.can_manage(actor, t)]
    return BulkSelection(action, chosen, skipped=len(found) - len(chosen), capped=capped)


def apply_bulk(selection: BulkSelection, actor: Actor) -> int:
    """Revoke or suspend each token through the one-token services (permission, audit event,
    webhook and cache invalidation each); the caller commits once. Returns how many changed."""
    from services import tokens as token_service

    for token in selection.tokens:
        if selection.action == "revoke":
            token_service.revoke_token(token, actor)
        else:
            token_service.suspend_token(token, actor)
    return len(selection.tokens)
