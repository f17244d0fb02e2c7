"""Settings → Account (SPEC §1): one's sessions, signing out elsewhere, the password; and
the one-time reset link an operator hands out (`flask keysmith reset-password`)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from blueprints.account.forms import ChangePasswordForm, EndSessionsForm, ResetPasswordForm
from blueprints.auth import throttled_page
from blueprints.web import client_ip, current_session_pk, end_this_session, show_errors
from extensions import db
from services import accounts, throttle
from services import sessions as session_service
from services.errors import NotFound, ValidationFailed

bp = Blueprint("account", __name__)

# A reset link is a credential: keep it out of caches and out of Referer headers to other
# sites (same-origin, not no-referrer: over HTTPS Flask-WTF wants a Referer on the post).
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}


def _session_rows() -> list[dict]:
    this = current_session_pk()
    rows = [
        {
            "record": record,
            "browser": session_service.describe_user_agent(record.user_agent),
            "current": record.id == this,
        }
        for record in session_service.sessions_of(current_user)
    ]
    return sorted(rows, key=lambda row: not row["current"])  # this browser first


@bp.get("/settings/account")
@login_required
def index():
    return render_template("account/index.html", sessions=_session_rows(), form=EndSessionsForm())


@bp.post("/settings/account/sessions/<id:session_id>/end")
@login_required
def end_session(session_id: int):
    form = EndSessionsForm()
    if not form.validate_on_submit():
        return render_template("account/index.html", sessions=_session_rows(), form=form), 400
    record = session_service.get_session_of_or_404(current_user, session_id)
    if record.id == current_session_pk():
        end_this_session()
        flash("You have been signed out.", "info")
        return redirect(url_for("auth.login"))
    browser = session_service.describe_user_agent(record.user_agent)
    session_service.end(record.id)
    db.session.commit()
    flash(f"Signed out the session of {browser}.", "success")
    return redirect(url_for(".index"))


@bp.post("/settings/account/sessions/end-all")
@login_required
def end_all_sessions():
    form = EndSessionsForm()
    if not form.validate_on_submit():
        return render_template("account/index.html", sessions=_session_rows(), form=form), 400
    session_service.end_all_of(current_user)
    db.session.commit()
    end_this_session()
    flash("You have been signed out everywhere, this browser included.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/settings/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        # Guesses at the current password are throttled like sign-ins (a borrowed session).
        attempt = throttle.begin(current_user.email, client_ip(), known_device=True)
        if attempt.refused:
            return throttled_page(attempt.retry_after)
        try:
            accounts.change_password(
                current_user,
                current_password=form.current_password.data,
                new_password=form.new_password.data,
                ip=client_ip(),
                user_agent=request.user_agent.string,
            )
        except ValidationFailed as exc:
            db.session.rollback()
            if "current_password" not in exc.details:
                throttle.succeeded(attempt)
            show_errors(form, _renamed(exc))
        else:
            throttle.succeeded(attempt)
            ended = session_service.end_all_of(current_user, except_pk=current_session_pk())
            db.session.commit()
            others = (
                f" {ended} other session{'s' if ended != 1 else ''} signed out." if ended else ""
            )
            flash(f"Your password was changed.{others}", "success")
            return redirect(url_for(".index"))
    status = 400 if form.errors or form.form_errors else 200
    return (
        render_template("account/password.html", form=form),
        status,
        {"Cache-Control": "no-store"},
    )


def _renamed(error: ValidationFailed) -> ValidationFailed:
    """The rules speak of `password`; this form calls the field `new_password`."""
    details = {("new_password" if k == "password" else k): v for k, v in error.details.items()}
    return ValidationFailed(error.message, details=details)


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    try:
        reset = accounts.reset_for_link(token)
    except NotFound as exc:
        return render_template("account/reset_gone.html", message=exc.message), 404, PRIVATE
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            user = accounts.use_password_reset(
                reset,
                form.new_password.data,
                ip=client_ip(),
                user_agent=request.user_agent.string,
            )
        except ValidationFailed as exc:
            db.session.rollback()
            show_errors(form, _renamed(exc))
        else:
            session_service.end_all_of(user)
            db.session.commit()
            if current_user.is_authenticated:
                end_this_session()
            flash("Your password was changed. Sign in with it now.", "success")
            return redirect(url_for("auth.login"))
    status = 400 if form.errors or form.form_errors else 200
    return (
        render_template("account/reset.html", form=form, email=reset.user.email, token=token),
        status,
        PRIVATE,
    )
