"""Connections → API tokens (SPEC §3): one URL answers a whole page or, to htmx, a fragment.

Views load and authorise through get_token_or_404, call one service, commit once, render.
Every rule is in services/tokens.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required

from blueprints.tokens.forms import (
    GRACE_CHOICES,
    KEEP_EXPIRY,
    TYPE_CHOICES,
    AllowlistForm,
    CreateTokenForm,
    RenameForm,
    RotateForm,
)
from blueprints.web import (
    client_ip,
    commit_then,
    confirm_access,
    current_actor,
    current_org,
    is_htmx,
    show_errors,
)
from extensions import db
from models import ApiToken, AuditEvent, utcnow
from services import audit, hygiene, policy, token_list, tokens
from services.actor import Actor
from services.errors import DomainError, ValidationFailed

bp = Blueprint("tokens", __name__, url_prefix="/connections/api-tokens")

ROLE_TITLES = {
    "admin": ("Admin", "Full access, including members' data and the audit log."),
    "writer": ("Writer", "Reads everything and creates or changes tokens."),
    "viewer": ("Viewer", "Read only."),
}
# Why a token was revoked, where it was not simply by hand.
REVOKED_REASONS = {
    "leaked": "reported as leaked",
    "member_removed": "its creator was removed from the organization",
    "member_demoted": "its creator's new role could not have made it",
    "secret_holder_removed": "someone who held its secret was removed from the organization",
    "secret_holder_demoted": "someone who held its secret was demoted",
}
STATUS_LABELS = {
    "active": "Active",
    "inactive": "Suspended",
    "expired": "Expired",
    "revoked": "Revoked",
}
# The list's filter menus: (field, label, choices as (value, label)).
LIST_FILTERS = (
    ("role", "Access", [(r, ROLE_TITLES[r][0]) for r in ROLE_TITLES]),
    ("type", "Type", list(TYPE_CHOICES)),
    ("status", "Status", list(STATUS_LABELS.items())),
)
SORT_LABELS = {"name": "Name", "created": "Created", "last_used": "Last used", "expires": "Expires"}


@bp.after_request
def no_store_after_posts(response):
    # A POST here may answer with a secret: no cache (browser, proxy, back button) may keep it.
    if request.method == "POST":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def token_page_labels() -> dict:
    return {
        "role_titles": ROLE_TITLES,
        "status_labels": STATUS_LABELS,
        "type_labels": dict(TYPE_CHOICES),
        "grace_choices": GRACE_CHOICES,
        "revoked_reasons": REVOKED_REASONS,
        "sort_labels": SORT_LABELS,
    }


# ---------------------------------------------------------------- pages


@bp.get("")
@login_required
def index():
    environment = _environment_arg()
    return _search_answer(environment, _read_search(request.args))


@bp.post("/search")
@login_required
def search():
    """The search box posts, so a pasted secret never travels in a URL (history, proxy logs).

    A search that is not a secret is then shown at its bookmarkable GET address.
    """
    environment = _environment_or_default(request.form.get("environment"))
    found = _read_search(request.form)
    if not is_htmx() and not found.hides_list and not found.error:
        return redirect(found.url(environment), 303)
    return _search_answer(environment, found)


def _search_answer(environment: str, search: Search):
    # htmx's live search swaps the region; a history restore wants the whole page.
    fragment = is_htmx() and not request.headers.get("HX-History-Restore-Request")
    html, status = _page(
        environment, status=400 if search.error else 200, fragment=fragment, search=search
    )
    headers = {"Vary": "HX-Request"}  # one URL, two answers: caches must keep them apart
    if fragment:
        # The address bar gets a clean URL, and never a pasted secret (its prefix instead).
        headers["HX-Push-Url"] = "false" if search.error else search.url(environment, **search.at)
    if search.hides_list:
        headers |= {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return html, status, headers


@bp.get("/new")
@login_required
def new():
    environment = _environment_arg()
    tokens.require_may_create(current_actor())
    form = _create_form(environment)
    if is_htmx():
        return render_template("tokens/_create_form.html", form=form, environment=environment)
    return _page(environment, form=form)


@bp.post("")
@login_required
def create():
    organization, actor = current_org(), current_actor()
    tokens.require_may_create(actor)
    form = _create_form()
    environment = _environment_or_default(form.environment.data)
    if form.role.data == "admin" and (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    if form.validate():
        try:
            token, secret = tokens.create_token_from_form(
                organization,
                actor,
                name=form.name.data,
                environment=form.environment.data,
                role=form.role.data,
                scopes=form.scopes.data,
                type=form.type.data,
                expires_in_days=form.expires_in_days.data,
                expires_at=form.expires_at.data,
                allowed_ips=form.allowed_ips.data,
            )
        except DomainError as error:
            # A role above one's ceiling is the Access field's error, not a dead end.
            if error.status != 400 and set(error.details) != {"role"}:
                raise
            db.session.rollback()
            _show_errors(form, error)
        else:  # the page with the secret is made before the commit, which nothing can fail after
            page = _page(environment, secret=secret, secret_token=token, fragment=is_htmx())
            return commit_then(page)
    if is_htmx():
        # The form alone, in place: a one-time secret panel above it (an earlier create)
        # must not vanish with a re-rendered region. app.js swaps this 400 in.
        html = render_template("tokens/_create_form.html", form=form, environment=environment)
        return html, 400, {"HX-Retarget": "#add-form", "HX-Reswap": "outerHTML"}
    return _page(environment, form=form, status=400)


@bp.get("/<token_id>")
@login_required
def show(token_id: str):
    # A link may name the environment (the list's do): a token of another one is 404.
    token = tokens.get_token_or_404(current_org(), request.args.get("environment"), token_id)
    return _show_page(token)


def _show_page(token: ApiToken, *, form: AllowlistForm | None = None, status: int = 200):
    organization = current_org()
    events = db.session.scalars(audit.events_of(organization, target_id=token.id).limit(100))
    return render_template(
        "tokens/show.html",
        token=token,
        usage=tokens.requests_per_day(token),
        events=list(events),
        can_manage=tokens.can_manage(current_actor(), token),
        allowlist_form=form or _allowlist_form(token),
        client_ip=client_ip(),
        rate_limit=policy.token_rate_limit(token.rate_limit, organization.rate_limit),
        holders=tokens.secret_holders(token),
    ), status


@bp.post("/<token_id>/allowlist")
@login_required
def allowlist(token_id: str):
    """Replace the token's IP allowlist; bad entries answer 400 with the text as typed."""
    token = tokens.get_token_or_404(current_org(), request.form.get("environment"), token_id)
    actor = current_actor()
    tokens.require_manage(actor, token)
    if token.role == "admin" and (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    form = AllowlistForm()
    if form.validate():
        try:
            tokens.update_token(token, actor, allowed_ips=form.allowed_ips.data or None)
        except DomainError as error:
            if error.status != 400:
                raise
            db.session.rollback()
            form.allowed_ips.errors = [*error.details.values()] or [error.message]
        else:
            db.session.commit()
            if is_htmx():
                return _allowlist_fragment(token, _allowlist_form(token), saved=True)
            flash("IP allowlist saved.", "success")
            return redirect(
                url_for("tokens.show", token_id=token.id, environment=token.environment)
            )
    if is_htmx():
        return _allowlist_fragment(token, form, status=400)
    return _show_page(token, form=form, status=400)


def _allowlist_form(token: ApiToken) -> AllowlistForm:
    form = AllowlistForm(formdata=None)
    form.allowed_ips.data = "\n".join(token.allowed_ips or [])
    return form


def _allowlist_fragment(token: ApiToken, form: AllowlistForm, *, status: int = 200, **context):
    html = render_template(
        "tokens/_allowlist.html",
        token=token,
        can_manage=tokens.can_manage(current_actor(), token),
        allowlist_form=form,
        client_ip=client_ip(),
        **context,
    )
    return html, status


@bp.get("/<token_id>/rotate")
@login_required
def confirm_rotate(token_id: str):
    """The rotate form on its own (the hygiene badges open it): a fragment or a page."""
    token = tokens.get_token_or_404(current_org(), request.args.get("environment"), token_id)
    tokens.require_manage(current_actor(), token)
    return _rotate_form_answer(token, _rotate_form(token))


def _rotate_form(token: ApiToken) -> RotateForm:
    form = RotateForm()
    now = utcnow()
    expired = token.expires_at is not None and token.expires_at <= now
    if expired:
        keep = None
    elif token.expires_at is None:
        keep = "Keep the current expiry (never)"
    else:
        keep = f"Keep the current expiry ({token.expires_at:%Y-%m-%d})"
    form.offer_expiries(current_org(), keep=keep)
    return form


def _rotate_form_answer(token: ApiToken, form: RotateForm, *, status: int = 200):
    """The rotate form (with its errors or its question): inline to htmx, else its page.

    To htmx it replaces the form it came from, or opens above the list when the Actions
    menu's small form asked (that one has no room for the question).
    """
    now = utcnow()
    context = {
        "token": token,
        "form": form,
        "badges": hygiene.badges(token, now),
        "expired": token.expires_at is not None and token.expires_at <= now,
    }
    if not is_htmx():
        return render_template("tokens/rotate.html", **context), status
    html = render_template("tokens/_rotate_form.html", **context)
    if request.method == "GET":
        return html, status
    if request.form.get("from") == "rotate-form":
        return html, status, {"HX-Retarget": "#rotate-form", "HX-Reswap": "outerHTML"}
    return html, status, {"HX-Retarget": "#add-slot", "HX-Reswap": "innerHTML show:top"}


@bp.get("/<token_id>/revoke")
@login_required
def confirm_revoke(token_id: str):
    token = tokens.get_token_or_404(current_org(), request.args.get("environment"), token_id)
    tokens.require_manage(current_actor(), token)
    return render_template("tokens/confirm_revoke.html", token=token)


# ---------------------------------------------------------------- inline actions


@bp.post("/<token_id>/rotate")
@login_required
def rotate(token_id: str):
    organization, actor = current_org(), current_actor()
    token = tokens.get_token_or_404(organization, request.form.get("environment") or None, token_id)
    if token.role == "admin" and (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    tokens.require_manage(actor, token)
    form = _rotate_form(token)
    expired = token.expires_at is not None and token.expires_at <= utcnow()
    if expired and "expires_in_days" not in request.form:
        # The Actions menu's form knows no expiry: ask for one (SPEC §2: renew, not rotate).
        form.expires_in_days.errors = [
            "This token has expired: renew it with a new expiry to give it a new secret."
        ]
        return _rotate_form_answer(token, form, status=400)
    if form.grace_period_seconds.data == "0" and not expired and not form.stop_old_secret.data:
        form.stop_old_secret.errors = [
            "“None” stops the old secret at once: anything still using it fails. Tick this "
            "to go ahead, or choose a grace period."
        ]
        return _rotate_form_answer(token, form, status=400)
    try:
        grace = 0 if expired else tokens.grace_from_choice(form.grace_period_seconds.data)
        expiry = (
            tokens.UNSET
            if form.expires_in_days.data == KEEP_EXPIRY
            else tokens.expiry_from_choice(
                organization, form.expires_in_days.data, form.expires_at.data
            )
        )
        secret = tokens.rotate_token(token, actor, grace_seconds=grace, expires_at=expiry)
    except DomainError as error:
        if error.status != 400:
            raise
        db.session.rollback()
        details = dict(error.details)
        if "expires_at" in details and form.expires_in_days.data != tokens.EXPIRY_CUSTOM:
            details["expires_in_days"] = details.pop("expires_at")
        show_errors(form, DomainError(error.message, details=details))
        return _rotate_form_answer(token, form, status=400)
    db.session.commit()
    return _row_or_page(
        token, secret=secret, renewed=expired, notice=NOTICES["rotate"].format(name=token.name)
    )


@bp.post("/<token_id>/rename")
@login_required
def rename(token_id: str):
    form = RenameForm()
    return _act(
        token_id,
        "rename",
        lambda token, actor: tokens.rename_token(token, actor, name=form.name.data),
        typed=form.name.data,
    )


@bp.post("/<token_id>/suspend")
@login_required
def suspend(token_id: str):
    return _act(token_id, "suspend", tokens.suspend_token)


@bp.post("/<token_id>/resume")
@login_required
def resume(token_id: str):
    return _act(token_id, "resume", tokens.resume_token)


@bp.post("/<token_id>/revoke")
@login_required
def revoke(token_id: str):
    return _act(token_id, "revoke", tokens.revoke_token)


@bp.post("/bulk")
@login_required
def bulk():
    """Revoke or suspend many tokens: the ticked rows (`ids`) or every token matching the
    filters (`all_matching`). The first post answers a confirmation naming how many; the
    confirmation posts the ids with `confirm`, and all of them change in one transaction."""
    organization, actor = current_org(), current_actor()
    tokens.require_may_create(actor)  # viewers: 403 before anything is read
    environment = _environment_or_default(request.form.get("environment"))
    action = request.form.get("action", "")
    all_matching = request.form.get("all_matching") == "1" and not request.form.get("confirm")
    if all_matching:
        search = _read_search(request.form)
        if search.error:
            raise ValidationFailed(search.error)
        selection = token_list.select_for_bulk(
            organization, environment, actor, action, filters=search.filters
        )
    else:
        ids = token_list.parse_bulk_ids(request.form.getlist("ids"))
        if not ids:
            notice = "Select at least one token first, or “Select all”."
            return _bulk_answer(environment, notice=notice, status=400)
        selection = token_list.select_for_bulk(organization, environment, actor, action, ids=ids)
    if not selection.tokens:  # nothing to confirm: no "Suspend 0 tokens" button
        done = "revoked" if selection.action == "revoke" else "suspended or revoked"
        notice = f"None of these tokens would change: each is already {done}"
        notice += "." if actor.manages_all_tokens else ", or is not yours to manage."
        return _bulk_answer(environment, notice=notice, status=400)
    if not request.form.get("confirm"):
        context = {
            "action": selection.action,
            "tokens": selection.tokens,
            "skipped": selection.skipped,
            "capped": selection.capped,
            "bulk_max": token_list.BULK_MAX,
            "environment": environment,
        }
        template = "tokens/_bulk_confirm.html" if is_htmx() else "tokens/bulk_confirm.html"
        return render_template(template, **context)
    changed = token_list.apply_bulk(selection, actor)
    db.session.commit()
    done = "Revoked" if selection.action == "revoke" else "Suspended"
    notice = f"{done} {changed:,} {'token' if changed == 1 else 'tokens'}."
    if selection.skipped:
        notice += f" {selection.skipped:,} were already {done.lower()} or revoked."
    return _bulk_answer(environment, notice=notice)


def _bulk_answer(environment: str, *, notice: str, status: int = 200):
    html, status = _page(environment, status=status, fragment=is_htmx(), notice=notice)
    headers = {}
    if is_htmx():
        headers["HX-Push-Url"] = url_for("tokens.index", environment=environment)
    return html, status, headers


NOTICES = {
    "rotate": "Rotated “{name}”.",
    "rename": "Renamed to “{name}”.",
    "suspend": "Suspended “{name}”: requests with it now get 401 until you resume it.",
    "resume": "Resumed “{name}”.",
    "revoke": "Revoked “{name}”. It stays listed under Revoked for the record.",
}


def _act(
    token_id: str,
    action: str,
    change: Callable[[ApiToken, Actor], object],
    *,
    typed: str | None = None,
):
    """Load in scope (another org's or environment's id → 404), authorise, change, answer."""
    organization, actor = current_org(), current_actor()
    token = tokens.get_token_or_404(organization, request.form.get("environment") or None, token_id)
    tokens.require_manage(actor, token)
    try:
        result = change(token, actor)
    except DomainError as error:
        if error.status != 400:
            raise
        db.session.rollback()
        message = next(iter(error.details.values()), error.message)
        row_error = {"token_id": token.id, "action": action, "message": message, "value": typed}
        return _row_or_page(token, status=400, row_error=row_error)
    # The answer (a rotated secret, maybe) is made before the commit, from what was written.
    secret = result if isinstance(result, str) else None
    response = _row_or_page(token, secret=secret, notice=NOTICES[action].format(name=token.name))
    if action == "revoke" and is_htmx():  # the row stays in place; the count moves beside it
        html, status = response
        count = tokens.live_count_of(organization, token.environment)
        html += render_template(
            "tokens/_live_count.html", live_count=count, environment=token.environment, oob=True
        )
        response = html, status
    return commit_then(response)


# ---------------------------------------------------------------- rendering


def _row_or_page(token: ApiToken, *, status: int = 200, secret: str | None = None, **context):
    """htmx: the row alone, swapped in place; with a new secret, the region (row and panel).

    A plain form post: the whole page.
    """
    if is_htmx() and secret is None:
        actor = current_actor()
        now = utcnow()
        html = render_template(
            "tokens/_row.html",
            token=token,
            can_manage=lambda t: tokens.can_manage(actor, t),
            badges=lambda t: hygiene.badges(t, now),
            now=now,
            revoked_by=_revoked_by([token]) if token.revoked_at else {},
            **context,
        )
        return html, status
    if is_htmx():
        context.pop("notice", None)  # the panel says it; a notice would outlive later swaps
    html, status = _page(
        token.environment,
        status=status,
        fragment=is_htmx(),
        secret=secret,
        secret_token=token,
        rotated=True,
        **context,
    )
    headers = {"HX-Retarget": "#tokens-region", "HX-Reswap": "outerHTML"} if is_htmx() else {}
    return html, status, headers


@dataclass
class Search:
    """What the list was asked for: the search box, the hygiene chip, the role, type and status
    filters, the sort and the page (a cursor), each checked by the token services."""

    q: str = ""
    filter: str | None = None
    error: str | None = None
    lookup: tokens.TokenLookup | None = None
    typed: str = ""  # what the box shows back: never a whole secret
    errors: dict[str, str] = field(default_factory=dict)
    filters: token_list.ListFilters = field(default_factory=token_list.ListFilters)
    order: token_list.ListOrder = field(default_factory=token_list.ListOrder)
    after: token_list.Cursor | None = None
    before: token_list.Cursor | None = None
    at: dict[str, str] = field(default_factory=dict)  # the page's cursor, as in its URL

    @property
    def hides_list(self) -> bool:
        """A pasted secret is answered by the lookup card alone."""
        return self.lookup is not None and self.lookup.kind in ("secret", "malformed")

    @property
    def active(self) -> bool:
        return bool(self.q or self.filter or self.hides_list or self.filters.active)

    def params(self, environment: str, /, **change) -> dict[str, str]:
        """The query string of this view (only what differs from the defaults), with changes;
        any change but a page's cursor starts again from the first page."""
        order = self.order
        params = {
            "environment": environment,
            "q": self.typed,
            "filter": self.filter,
            "role": self.filters.role,
            "type": self.filters.type,
            "status": self.filters.status,
            "sort": order.sort if order.sort != token_list.DEFAULT_SORT else None,
            "dir": None,
            "per_page": order.per_page if order.per_page != token_list.PER_PAGE else None,
        }
        default_dir = token_list.FIRST_DIRECTION[order.sort]
        if order.sort == token_list.DEFAULT_SORT:
            default_dir = token_list.DEFAULT_DIRECTION
        if order.direction != default_dir:
            params["dir"] = order.direction
        params |= change
        if "sort" in change and "dir" not in change:
            params["dir"] = None
        return {k: str(v) for k, v in params.items() if v}

    def url(self, environment: str, /, **change) -> str:
        return url_for("tokens.index", **self.params(environment, **change))

    def sort_url(self, environment: str, sort: str) -> str:
        """A column header's link: that sort, or the other direction when it is the sort."""
        if self.order.sort == sort:
            direction = "asc" if self.order.descending else "desc"
        else:
            direction = token_list.FIRST_DIRECTION[sort]
        default = token_list.FIRST_DIRECTION[sort]
        if sort == token_list.DEFAULT_SORT:
            default = token_list.DEFAULT_DIRECTION
        return self.url(
            environment,
            sort=None if sort == token_list.DEFAULT_SORT else sort,
            dir=None if direction == default else direction,
        )


def _read_search(source: Mapping[str, str]) -> Search:
    """The search box's `q`, the hygiene chip's `filter`, role, type, status, sort, dir,
    per_page and a page's `after`/`before`, from a query string or a form."""
    search = Search()
    raw = source.get("q", "")
    try:
        search.q = tokens.parse_search(raw)
    except ValidationFailed as error:
        search.errors.update(error.details)
        search.typed = raw.replace("\x00", "")[: tokens.SEARCH_MAX]
    try:
        search.filter = tokens.parse_hygiene_filter(source.get("filter"))
    except ValidationFailed as error:
        search.errors.update(error.details)
    try:
        search.filters = token_list.parse_filters(source)
    except ValidationFailed as error:
        search.errors.update(error.details)
    try:
        search.order = token_list.parse_order(source)
    except ValidationFailed as error:
        search.errors.update(error.details)
    if search.errors:
        # Bad input changes nothing: the whole list, and the reason beside the box.
        search.q, search.filter = "", None
        search.filters, search.order = token_list.ListFilters(), token_list.ListOrder()
        search.error = " ".join(search.errors.values())
        return search
    for name in ("after", "before"):
        if source.get(name):
            try:
                setattr(search, name, token_list.decode_cursor(source[name], search.order))
                search.at[name] = source[name]
            except ValidationFailed as error:
                search.errors.update(error.details)
                search.error = " ".join(search.errors.values())
    if search.after and search.before:
        search.before = None
        search.at.pop("before", None)
    search.typed = search.q
    search.filters = replace(search.filters, q=search.q, hygiene=search.filter)
    search.lookup = tokens.identify_token(current_org(), search.q) if search.q else None
    if search.hides_list:
        # Show (and push) the prefix, never the secret itself.
        token = search.lookup.token
        search.typed = token.prefix if token is not None and search.lookup.verified else ""
        search.q = ""
        search.filters = replace(search.filters, q="")
    return search


def _page(
    environment: str,
    *,
    status: int = 200,
    fragment: bool = False,
    form: CreateTokenForm | None = None,
    search: Search | None = None,
    **context,
):
    organization, actor = current_org(), current_actor()
    search = search or Search()
    now = utcnow()
    page = token_list.page_of_tokens(
        organization,
        environment,
        search.filters,
        search.order,
        after=search.after,
        before=search.before,
        now=now,
        nothing=search.hides_list,  # the lookup card answers; the list has nothing to add
    )
    template = "tokens/_region.html" if fragment else "tokens/index.html"
    html = render_template(
        template,
        environment=environment,
        page=page,
        counts=page.counts,
        found=page.found,
        badges=lambda t: hygiene.badges(t, now),
        search=search,
        fragment=fragment,
        may_create=tokens.may_create(actor),
        manages_all=actor.manages_all_tokens,
        can_manage=lambda t: tokens.can_manage(actor, t),
        form=form,
        list_filters=LIST_FILTERS,
        now=now,
        revoked_by=_revoked_by(page.tokens) if page.tokens else {},
        **context,
    )
    return html, status


def _revoked_by(shown: list[ApiToken]) -> dict[str, AuditEvent]:
    """Who revoked each revoked token shown, from the audit log: one statement for the whole
    page (run whenever the page has rows, so a page's statements never depend on its rows)."""
    ids = [t.id for t in shown if t.revoked_at is not None]
    events = db.session.scalars(
        sa.select(AuditEvent)
        .where(
            AuditEvent.organization_id == current_org().id,
            AuditEvent.action == "token.revoked",
            AuditEvent.target_type == "token",
            AuditEvent.target_id.in_(ids),
        )
        .order_by(AuditEvent.id)
    )
    return {event.target_id: event for event in events}  # the last revocation wins


def _create_form(environment: str | None = None) -> CreateTokenForm:
    form = CreateTokenForm()
    form.offer_roles(tokens.grantable_roles(current_actor()))
    form.offer_expiries(current_org())
    if environment is not None and not form.is_submitted():
        form.environment.data = environment
    return form


def _show_errors(form: CreateTokenForm, error: DomainError) -> None:
    """Errors beside their fields; an expiry error beside the choice the person made."""
    details = dict(error.details)
    if "expires_at" in details and form.expires_in_days.data != tokens.EXPIRY_CUSTOM:
        details["expires_in_days"] = details.pop("expires_at")
    if "environment" in details:  # a hidden field: say it above the form
        form.form_errors.append(details.pop("environment"))
    if details or not error.details:
        show_errors(form, DomainError(error.message, details=details))


def _environment_arg() -> str:
    try:
        return tokens.parse_environment(request.args.get("environment", "sandbox"))
    except ValidationFailed as error:
        raise ValidationFailed(
            "There is no such environment. Choose Sandbox or Production."
        ) from error


def _environment_or_default(value: object) -> str:
    try:
        return tokens.parse_environment(value)
    except ValidationFailed:
        return "sandbox"
