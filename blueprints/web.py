"""What every HTML page shares: the signed-in member, the current organization, errors."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, generate_csrf
from markupsafe import Markup
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from blueprints import server_session
from blueprints.hook_scopes import web_only
from blueprints.last_resort import is_database_outage
from extensions import db, login_manager
from models import ROLE_RANK, Membership, Organization, User, utcnow
from services import accounts, throttle
from services import sessions as session_service
from services.actor import Actor
from services.errors import DomainError, ValidationFailed

login_manager.user_loader(server_session.load_user)


def current_membership() -> Membership | None:
    """The signed-in person's membership in the current organization, checked every request.

    A removed member loses the organization on their very next request.
    """
    if "membership" in g:
        return g.membership
    membership = None
    if current_user.is_authenticated:
        org_id = session.get("org_id")
        if isinstance(org_id, int):
            membership = accounts.membership_in(current_user, org_id)
        if membership is None:
            memberships = accounts.memberships_of(current_user)
            membership = memberships[0] if memberships else None
            session["org_id"] = membership.organization_id if membership else None
    g.membership = membership
    return membership


def current_org() -> Organization:
    membership = current_membership()
    if membership is None:
        abort(403, "You are not a member of any organization.")
    return membership.organization


def client_ip() -> str | None:
    return request.remote_addr


def current_actor() -> Actor:
    membership = current_membership()
    if membership is None:
        abort(403, "You are not a member of any organization.")
    return Actor(
        organization=membership.organization,
        membership=membership,
        ip=client_ip(),
        user_agent=request.user_agent.string,
    )


def show_errors(form: Any, error: DomainError) -> None:
    """Each field's error beside its field, the rest above the form (every form alike)."""
    for name, message in error.details.items():
        field = form._fields.get(name)
        if field is not None and name != "csrf_token":
            field.errors = [*field.errors, message]
        else:
            form.form_errors.append(message)
    if not error.details:
        form.form_errors.append(error.message)


LAST_ORG_COOKIE = "ks_last_org"


def preferred_membership(memberships: list[Membership]) -> Membership | None:
    """The organization to sign in to: the one last used in this browser if the person is
    still in it (the cookie only says which; membership decides), else the first."""
    last = request.cookies.get(LAST_ORG_COOKIE, "")
    for membership in memberships:
        if str(membership.organization_id) == last:
            return membership
    return memberships[0] if memberships else None


def remember_organization(response, organization_id: int):
    """Note the current organization in this browser for the next sign-in (not a secret)."""
    response.set_cookie(
        LAST_ORG_COOKIE,
        str(organization_id),
        max_age=365 * 86400,
        httponly=True,
        samesite="Lax",
        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
    )
    return response


def start_session(user: User, organization_id: int | None) -> None:
    """Sign in with a fresh server-side session (nothing from before carries over, and a
    session this browser had before is ended), in this organization."""
    previous = server_session.signed_in_session_pk(session)
    if previous is not None:
        session_service.end(previous)
    record, session_id = session_service.start(
        user, ip=client_ip(), user_agent=request.user_agent.string
    )
    db.session.commit()
    session.begin(record, session_id)
    login_user(user)
    session["org_id"] = organization_id
    # Made now, the CSRF token is written with the session's first save, not by the next page
    # (the one in `g` belonged to the signed-out session).
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
    generate_csrf()


SUDO_WINDOW = timedelta(minutes=10)
SUDO_FIELDS = ("sudo_password", "sudo_code", "csrf_token")


def confirm_access():
    """Sudo mode (SPEC §1, as GitHub): None if the person gave their password (and code) in
    the last 10 minutes, or gives them now with this very submission; otherwise the page to
    answer with, which asks for them and then sends the same submission again."""
    from services import throttle, two_factor

    given_at = getattr(session, "authenticated_at", None)
    if given_at is not None and utcnow() - given_at < SUDO_WINDOW:
        return None
    error = None
    needs_code = two_factor.is_enabled(current_user)
    if "sudo_password" in request.form:
        attempt = throttle.begin(current_user.email, client_ip(), known_device=True)
        if attempt.refused:
            error = "Too many attempts. Wait a few minutes, then try again."
        elif not accounts.password_matches(current_user, request.form.get("sudo_password", "")):
            error = "That is not your password."
        elif (
            needs_code
            and two_factor.verify(current_user, request.form.get("sudo_code", "")) is None
        ):
            db.session.commit()  # nothing was used
            error = "That code is not right."
        else:
            throttle.succeeded(attempt)
            pk = current_session_pk()
            if pk is not None:
                session_service.mark_authenticated(pk)
                session.authenticated_at = utcnow()
            db.session.commit()
            return None
    fields = [
        (name, value)
        for name, values in request.form.lists()
        if name not in SUDO_FIELDS
        for value in values
    ]
    if not any(name == "organization_id" for name, _ in fields):
        # The page this came from was made for the current organization (htmx said so in a
        # header): the confirmation says it in a field, so a switch in another tab before
        # it is answered is refused (refuse_stale_organization), not made elsewhere.
        membership = current_membership()
        if membership is not None:
            fields.append(("organization_id", str(membership.organization_id)))
    context = {"fields": fields, "action": request.full_path.rstrip("?"), "error": error,
               "needs_code": needs_code}  # fmt: skip
    if is_htmx():  # the confirmation takes the page; its form is a plain post
        html = render_template("account/_sudo.html", **context)
        return html, 200, {"HX-Retarget": "#main", "HX-Reswap": "innerHTML"}
    return render_template("account/sudo.html", **context), 401 if error else 200


def current_session_pk() -> int | None:
    """The row id of this browser's server-side session, if signed in."""
    return server_session.signed_in_session_pk(session)


def end_this_session() -> None:
    """Sign out for good: the row goes now, so a copy of the cookie opens nothing."""
    pk = current_session_pk()
    if pk is not None:
        session_service.end(pk)
        db.session.commit()
    logout_user()
    session.clear()
    session.mark_ended()


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def role_required(minimum: str):
    """Allow the view only to members of at least this role in the current organization."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            membership = current_membership()
            if membership is None or ROLE_RANK[membership.role] < ROLE_RANK[minimum]:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _wants_json() -> bool:
    return request.path.startswith("/api/")


class RowIdConverter(IntegerConverter):
    """`<id:...>`: a row id. One past what a 32-bit integer column holds names no row (0), so
    the view answers 404, never a database error."""

    MAX = 2**31 - 1

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        return number if 1 <= number <= self.MAX else 0


def init_app(app: Flask) -> None:
    server_session.init_app(app)
    register_filters(app)
    app.url_map.converters["id"] = RowIdConverter

    @app.template_global()
    def organization_field() -> Markup:
        """The hidden `organization_id` of a form that changes something in the current
        organization: posted from a tab that another tab has since switched away from, it
        is refused (refuse_stale_organization) instead of acting where nobody is looking.
        htmx requests say it in the X-Keysmith-Org header too; this covers plain posts."""
        membership = current_membership() if current_user.is_authenticated else None
        if membership is None:
            return Markup("")
        field = Markup('<input type="hidden" name="organization_id" value="{}">')
        return field.format(membership.organization_id)  # format() escapes what it is given

    @app.context_processor
    def inject_membership() -> dict[str, Any]:
        membership = current_membership() if current_user.is_authenticated else None
        return {
            "membership": membership,
            "organization": membership.organization if membership else None,
            "all_memberships": (
                accounts.memberships_of(current_user) if current_user.is_authenticated else []
            ),
        }

    @app.before_request
    @web_only
    def offer_a_new_organization():
        """Someone in no organization (removed from their last one) is offered to start one,
        rather than a dead end."""
        if (
            request.method == "GET"
            and request.blueprint in ("tokens", "audit", "settings")
            and current_user.is_authenticated
            and current_membership() is None
        ):
            flash("You are not a member of any organization now. Start one, or ask for an invite.")
            return redirect(url_for("main.new_organization"))
        return None

    @app.before_request
    @web_only
    def require_two_factor():
        """An organization whose policy requires two-factor sign-in sends a member without it
        to set it up; only their account pages and signing out stay open."""
        if request.blueprint in (None, "api", "auth", "account") or request.endpoint in (
            "static",
            "main.healthz",
            "main.favicon",
            "main.switch_organization",
        ):
            return None
        if not current_user.is_authenticated:
            return None
        membership = current_membership()
        if membership is None or not membership.organization.require_two_factor:
            return None
        from services import two_factor

        if two_factor.is_enabled(current_user):
            return None
        target = url_for("account.set_up_two_factor")
        if request.method == "GET":
            flash(
                f"{membership.organization.name} requires two-factor sign-in. "
                "Set it up to continue.",
                "info",
            )
        if is_htmx():
            return "", 200, {"HX-Redirect": target}
        return redirect(target)

    @app.before_request
    @web_only
    def refuse_stale_organization() -> None:
        """A page says which organization it was made for (the X-Keysmith-Org header of htmx,
        or a form's organization_id); if another tab has switched since, refuse the change
        rather than make it in an organization the person is not looking at."""
        if request.method != "POST" or request.path.startswith("/api/"):
            return
        claimed = request.headers.get("X-Keysmith-Org") or request.form.get("organization_id")
        if not claimed or not current_user.is_authenticated:
            return
        if request.endpoint == "main.switch_organization":
            return
        membership = current_membership()
        if membership is None or str(membership.organization_id) != claimed:
            abort(409)

    @app.after_request
    def page_headers(response):
        """What a page carries besides every answer's headers (blueprints/answer_headers.py)."""
        if response.mimetype != "text/html":
            return response  # a JSON answer (the API) never loads the user nor the session
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
            "base-uri 'none'; object-src 'none'",
        )
        if current_user.is_authenticated:
            # Pages of a signed-in person are private; secret-bearing ones say no-store themselves.
            response.headers.setdefault("Cache-Control", "private, no-cache")
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        if _wants_json():
            return _api_error(error)
        return _error_page(
            "Your form expired",
            "This form was missing its security token or it had expired. "
            "Go back, reload the page and try again.",
            400,
        )

    @app.errorhandler(DomainError)
    def domain_error(error: DomainError):
        if _wants_json():
            return _api_error(error)
        return _error_page(_TITLES.get(error.status, "Error"), error.message, error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # An error after the view (saving the session, an after_request hook) comes as a 500
        # wrapping what happened: a database outage there is a 503 like anywhere else.
        original = getattr(error, "original_exception", None)
        if original is not None and is_database_outage(original):
            return database_unavailable(original)
        if _wants_json():
            return _api_error(error)
        code = error.code or 500
        message = (
            error.description if code in (403, 429) else _MESSAGES.get(code, error.description)
        )
        kept = ("Allow", "Retry-After", "WWW-Authenticate")
        headers = {k: v for k, v in error.get_response().headers.items() if k in kept}
        return _error_page(_TITLES.get(code, error.name), message, code, headers)

    @app.errorhandler(DataError)
    def unstorable_value(error: DataError):
        # The database refused a value a client sent (a NUL byte, a number out of range):
        # the client's mistake, so a 400, never a 500. Forms catch these before this point.
        app.logger.warning("Database refused a value on %s %s", request.method, request.path)
        db.session.rollback()
        if _wants_json():
            return _api_error(ValidationFailed("A value in the request cannot be stored."))
        return _error_page(
            "Bad request",
            "A value you sent cannot be stored (it may hold a control character). "
            "Nothing was changed; go back, correct it and try again.",
            400,
        )

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error: Exception):
        app.logger.error(
            "Database unavailable on %s %s: %s", request.method, request.path, type(error).__name__
        )
        throttle.refund_unanswered()  # no password was judged: the attempt does not count
        if _wants_json():
            _forget_session_state()
            return _api_error(error)
        return _database_down_page()

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        if is_database_outage(error):  # e.g. a connection ended mid-statement
            return database_unavailable(error)
        app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        if _wants_json():
            return _api_error(error)
        return _error_page(
            "Something went wrong",
            "An unexpected error happened. Nothing you typed was saved; please try again.",
            500,
        )


# A commit that fails may have reached the database (SPEC §4 is a promise only the API's
# Idempotency-Key keeps): the page never claims nothing was changed.
_DATABASE_DOWN = (
    "Keysmith cannot reach its database just now. What you asked for may not have been "
    "saved: reload the page in a moment to see, then try again if needed."
)


def commit_then(answer):
    """Commit, then return `answer`, made before the commit from what was written (a page
    with a new secret): nothing after the commit may fail it (issue 16). A failed commit
    raises, and the answer is the 503, with nothing stored."""
    db.session.commit()
    g.answer_committed = True  # the session's save may not turn this answer into an error
    return answer


def _error_page(title: str, message: str, status: int, headers: dict | None = None):
    """An error page with the site's layout. The layout reads the signed-in person from the
    database; if that is gone too, the answer is the 503 page, never a bare 500."""
    try:
        body = render_template("errors/error.html", title=title, message=message)
    except (OperationalError, InterfaceError):
        return _database_down_page()
    return body, status, headers or {}


def _forget_session_state() -> None:
    """Roll back a broken transaction and treat the visitor as signed out for the rest of
    the request, so nothing else tries the database."""
    with contextlib.suppress(Exception):  # the connection may be gone with the database
        db.session.rollback()
    g._login_user = login_manager.anonymous_user()
    g.membership = None


def _database_down_page():
    _forget_session_state()
    body = render_template("errors/error.html", title="Unavailable", message=_DATABASE_DOWN)
    return body, 503, {"Retry-After": "5"}


def _api_error(error: Exception):
    from blueprints.api.errors import response_for

    return response_for(error)


_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Another organization is current",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Unavailable",
}
_MESSAGES = {
    404: "There is nothing here. It may have been removed, or it belongs to another organization.",
    405: "This page cannot be used that way.",
    409: "This page was made for another organization, and another tab has switched since. "
    "Nothing was changed: reload the page to see the organization that is current now.",
    413: "The request was larger than the 1 MiB Keysmith accepts.",
}


def _iso(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _exact(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _relative(value) -> str:
    from models import utcnow

    if not value:
        return ""
    seconds = (value - utcnow()).total_seconds()
    future, seconds = seconds > 0, abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            # Round what is ahead ("in 90 days" for a 90-day token made a moment ago),
            # floor what is behind ("1 day ago" until two full days have passed).
            count = round(seconds / size) if future else int(seconds // size)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "in a moment" if future else "just now"


def register_filters(app: Flask) -> None:
    app.add_template_filter(_iso, "iso")
    app.add_template_filter(_exact, "exact")
    app.add_template_filter(_relative, "relative")
    from blueprints.labels import register_labels

    register_labels(app)  # words for rate limits, durations, audit actions (issue 20)
