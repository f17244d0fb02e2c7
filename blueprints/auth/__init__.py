"""Sign up, sign in, sign out (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
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
        # Counted before the account is made, so parallel sign-ups cannot outrun it.
        attempt = throttle.begin_sign_up(client_ip())
        if attempt.refused:
            response = render_template(
                "auth/signup_throttled.html", retry_after=attempt.retry_after
            )
            return response, 429, {"Retry-After": str(attempt.retry_after)}
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
            throttle.succeeded(attempt)  # nothing was made: a typo costs no sign-up
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
        # Counted before the password is checked, so parallel guesses cannot outrun it.
        attempt = throttle.begin(email, ip, known_device=_known_device(email))
        if attempt.refused:
            return throttled_page(attempt.retry_after)
        user = accounts.authenticate(email, form.password.data)
        if user is None:
            known = accounts.user_by_email(email)
            if known is not None:
                accounts.record_sign_in(
                    known, success=False, ip=ip, user_agent=request.user_agent.string
                )
                db.session.commit()
            # The same words whether or not the email exists.
            form.form_errors.append("That email and password do not match an account.")
            return render_template("auth/login.html", form=form, next_url=next_url), 401
        throttle.succeeded(attempt)
        memberships = accounts.memberships_of(user)
        accounts.record_sign_in(user, success=True, ip=ip, user_agent=request.user_agent.string)
        db.session.commit()
        chosen = preferred_membership(memberships)
        start_session(user, chosen.organization_id if chosen else None)
        response = redirect(next_url or url_for("tokens.index"))
        return _remember_device(response, user.email)
    status = 400 if form.errors else 200
    return render_template("auth/login.html", form=form, next_url=next_url), status


@bp.post("/logout")
@login_required
def logout():
    end_this_session()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


def throttled_page(retry_after: int):
    response = render_template("auth/throttled.html", retry_after=retry_after)
    return response, 429, {"Retry-After": str(retry_after)}


DEVICE_COOKIE = "ks_device"


def _device_mark(email: str) -> str:
    """What the `ks_device` cookie holds for a browser that signed in to `email`: an HMAC
    nobody can make without SECRET_KEY, and that says nothing about the email."""
    key = current_app.config["SECRET_KEY"].encode()
    message = b"signed-in-device:" + accounts.normalize_email(email).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _known_device(email: str) -> bool:
    marks = request.cookies.get(DEVICE_COOKIE, "").split(".")
    return any(hmac.compare_digest(mark, _device_mark(email)) for mark in marks if mark)


def _remember_device(response, email: str):
    """Note in this browser that it signed in to `email` (OWASP's device cookie): the
    per-email limit then never holds it back. Up to 5 accounts per browser."""
    mark = _device_mark(email)
    marks = [m for m in request.cookies.get(DEVICE_COOKIE, "").split(".") if m and m != mark]
    response.set_cookie(
        DEVICE_COOKIE,
        ".".join([mark, *marks][:5]),
        max_age=365 * 86400,
        httponly=True,
        samesite="Lax",
        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
    )
    return response


def _default_rate_limit() -> str:
    return current_app.config["RATE_LIMIT_DEFAULT"]
