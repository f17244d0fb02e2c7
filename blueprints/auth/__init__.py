"""Sign up, sign in, sign out (SPEC §3)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from blueprints.auth.forms import LoginForm, SignupForm
from blueprints.web import (
    client_ip,
    end_this_session,
    preferred_membership,
    show_errors,
    start_session,
)
from extensions import db
from services import accounts, throttle
from services.errors import ValidationFailed
from services.urls import safe_next

bp = Blueprint("auth", __name__)


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("tokens.index"))
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user, org = accounts.sign_up(
                email=form.email.data,
                password=form.password.data,
                name=form.name.data,
                organization=form.organization.data,
                default_rate_limit=_default_rate_limit(),
                ip=client_ip(),
                user_agent=request.user_agent.string,
            )
        except ValidationFailed as exc:
            db.session.rollback()
            show_errors(form, exc)
        else:
            db.session.commit()
            start_session(user, org.id)
            flash(
                f"Welcome to Keysmith, {user.name}. Create your first API token below.", "success"
            )
            return redirect(url_for("tokens.index"))
    status = 400 if form.errors else 200
    return render_template("auth/signup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next(request.args.get("next"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("tokens.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email, ip = form.email.data, client_ip()
        wait = throttle.retry_after(email, ip)
        if wait is not None:
            response = render_template("auth/throttled.html", retry_after=wait)
            return response, 429, {"Retry-After": str(wait)}
        user = accounts.authenticate(email, form.password.data)
        if user is None:
            throttle.record_failure(email, ip)
            known = accounts.user_by_email(email)
            if known is not None:
                accounts.record_sign_in(
                    known, success=False, ip=ip, user_agent=request.user_agent.string
                )
                db.session.commit()
            # The same words whether or not the email exists.
            form.form_errors.append("That email and password do not match an account.")
            return render_template("auth/login.html", form=form, next_url=next_url), 401
        memberships = accounts.memberships_of(user)
        accounts.record_sign_in(user, success=True, ip=ip, user_agent=request.user_agent.string)
        db.session.commit()
        chosen = preferred_membership(memberships)
        start_session(user, chosen.organization_id if chosen else None)
        return redirect(next_url or url_for("tokens.index"))
    status = 400 if form.errors else 200
    return render_template("auth/login.html", form=form, next_url=next_url), status


@bp.post("/logout")
@login_required
def logout():
    end_this_session()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


def _default_rate_limit() -> str:
    from flask import current_app

    return current_app.config["RATE_LIMIT_DEFAULT"]
