"""Settings → Account (SPEC §1): one's sessions, signing out elsewhere, the password; and
the one-time reset link an operator hands out (`flask keysmith reset-password`)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from blueprints.account.forms import (
    ChangePasswordForm,
    ConfirmTwoFactorForm,
    EndSessionsForm,
    PasswordCheckForm,
    ResetPasswordForm,
)
from blueprints.auth import throttled_page
from blueprints.web import (
    client_ip,
    confirm_access,
    current_session_pk,
    end_this_session,
    show_errors,
)
from extensions import db
from services import accounts, throttle, two_factor
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
    return _index_page(EndSessionsForm())


def _index_page(form, status: int = 200, **extra):
    return render_template(
        "account/index.html",
        sessions=_session_rows(),
        form=form,
        two_factor_on=two_factor.is_enabled(current_user),
        recovery_left=two_factor.unused_recovery_codes(current_user),
        disable_form=extra.pop("disable_form", None) or PasswordCheckForm(),
        **extra,
    ), status


@bp.post("/settings/account/sessions/<id:session_id>/end")
@login_required
def end_session(session_id: int):
    form = EndSessionsForm()
    if not form.validate_on_submit():
        return _index_page(form, 400)
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
        return _index_page(form, 400)
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


# ---------------------------------------------------------------- two-factor sign-in

NO_STORE = {"Cache-Control": "no-store"}


@bp.route("/settings/account/two-factor", methods=["GET", "POST"])
@login_required
def set_up_two_factor():
    if two_factor.is_enabled(current_user):
        return redirect(url_for(".index"))
    form = ConfirmTwoFactorForm()
    if request.method == "GET":
        found = two_factor.begin_enrolment(current_user)  # a new secret on each visit
        db.session.commit()
    else:
        # Sudo mode: a borrowed session must not enrol its own app (and lock the owner out).
        if (confirm := confirm_access()) is not None:
            return confirm
        found = two_factor.two_factor_of(current_user)
        if found is None:
            return redirect(url_for(".set_up_two_factor"))
        if form.validate_on_submit():
            try:
                codes = two_factor.confirm(
                    current_user,
                    form.code.data,
                    actor_ip=client_ip(),
                    user_agent=request.user_agent.string,
                )
            except ValidationFailed as exc:
                db.session.rollback()
                show_errors(form, exc)
            else:
                db.session.commit()
                return render_template("account/recovery_codes.html", codes=codes), 200, NO_STORE
    uri = two_factor.provisioning_uri(found, current_user)
    status = 400 if form.errors else 200
    return (
        render_template(
            "account/two_factor.html",
            form=form,
            qr=two_factor.qr_svg_data_uri(uri),
            secret=two_factor.secret_of(found),
        ),
        status,
        NO_STORE,  # the page shows the shared secret
    )


@bp.post("/settings/account/two-factor/disable")
@login_required
def disable_two_factor():
    if (confirm := confirm_access()) is not None:  # sudo mode: password and code
        return confirm
    form = PasswordCheckForm()
    if form.validate_on_submit():
        attempt = throttle.begin(current_user.email, client_ip(), known_device=True)
        if attempt.refused:
            return throttled_page(attempt.retry_after)
        if accounts.password_matches(current_user, form.current_password.data):
            throttle.succeeded(attempt)
            two_factor.disable(current_user, ip=client_ip(), user_agent=request.user_agent.string)
            db.session.commit()
            flash("Two-factor sign-in is off. Your password alone now signs you in.", "info")
            return redirect(url_for(".index"))
        form.current_password.errors = ["That is not your current password."]
    return _index_page(EndSessionsForm(), 400, disable_form=form)
