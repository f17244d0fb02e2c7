"""Sign up, sign in, sign out (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required

from blueprints.auth.forms import LoginForm, SignupForm, TwoFactorForm
from blueprints.web import (
    client_ip,
    end_this_session,
    preferred_membership,
    show_errors,
    start_session,
)
from extensions import db
from models import User
from services import accounts, throttle, two_factor
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
        if two_factor.is_enabled(user):
            # The password was right; the code comes next. The signed cookie of before sign-in
            # says so for a few minutes: it opens nothing by itself.
            session[PENDING] = {
                "user_id": user.id,
                "at": int(time.time()),
                "next": next_url,
                "password": _password_mark(user),
            }
            return redirect(url_for("auth.second_factor"))
        return _signed_in(user, next_url)
    status = 400 if form.errors else 200
    return render_template("auth/login.html", form=form, next_url=next_url), status


PENDING = "two_factor_pending"
PENDING_SECONDS = 300


def _password_mark(user) -> str:
    """Ties the code step to the password that opened it: once the password changes (the
    owner, a reset link, an operator), a step begun with the old one leads back to sign-in."""
    key = current_app.config["SECRET_KEY"].encode()
    message = f"two-factor-step:{user.id}:".encode() + user.password_hash.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signed_in(user, next_url: str | None):
    memberships = accounts.memberships_of(user)
    accounts.record_sign_in(
        user, success=True, ip=client_ip(), user_agent=request.user_agent.string
    )
    db.session.commit()
    chosen = preferred_membership(memberships)
    start_session(user, chosen.organization_id if chosen else None)
    response = redirect(next_url or url_for("tokens.index"))
    return _remember_device(response, user.email)


@bp.route("/login/two-factor", methods=["GET", "POST"])
def second_factor():
    pending = session.get(PENDING)
    user = None
    if isinstance(pending, dict) and time.time() - pending.get("at", 0) < PENDING_SECONDS:
        user = db.session.get(User, pending.get("user_id"))
    if (
        user is None
        or not two_factor.is_enabled(user)
        or not hmac.compare_digest(str(pending.get("password", "")), _password_mark(user))
    ):
        session.pop(PENDING, None)
        flash("Sign in again: the step with your code timed out.", "info")
        return redirect(url_for(".login"))
    form = TwoFactorForm()
    if form.validate_on_submit():
        ip = client_ip()
        # Code guesses count per email from anywhere too (unless this browser signed in to
        # it before), so many addresses cannot share out a brute force of six digits.
        attempt = throttle.begin(user.email, ip, known_device=_known_device(user.email))
        if attempt.refused:
            return throttled_page(attempt.retry_after)
        via = two_factor.verify(user, form.code.data)
        if via is None:
            db.session.rollback()
            accounts.record_sign_in(
                user, success=False, ip=ip, user_agent=request.user_agent.string
            )
            db.session.commit()
            form.code.errors = [
                *form.code.errors,
                "That code is not right. Try the one the app shows now.",
            ]
            return render_template("auth/two_factor.html", form=form), 401
        throttle.succeeded(attempt)
        session.pop(PENDING, None)
        response = _signed_in(user, safe_next(pending.get("next")))
        if via == "recovery code":  # after sign-in: the new session keeps the message
            left = two_factor.unused_recovery_codes(user)
            flash(f"You used a recovery code; {left} left.", "info")
        return response
    return render_template("auth/two_factor.html", form=form), 400 if form.errors else 200


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
    nobody can make without SECRET_KEY, and that says nothing about the email. It covers the
    password's hash too, so a password change or an operator's reset retires every mark."""
    key = current_app.config["SECRET_KEY"].encode()
    user = accounts.user_by_email(email)
    password = user.password_hash.encode() if user is not None else b""
    message = b"signed-in-device:" + accounts.normalize_email(email).encode() + b":" + password
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
