"""Accepting an invite: /invites/<token> (SPEC §1, §3).

A new person gives a name and password; a signed-in person with the invited email just
accepts; anyone else gets a clear page. Used, cancelled or expired links answer 410.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from blueprints.forms import Form
from blueprints.web import client_ip, show_errors, start_session
from extensions import db
from models import Invite
from services import accounts
from services import members as member_service
from services.accounts import PASSWORD_HINT, PASSWORD_MIN
from services.errors import DomainError, ValidationFailed

bp = Blueprint("invites", __name__, url_prefix="/invites")

# The link is a credential: keep it out of caches and out of Referer headers to other
# sites. (Not no-referrer: over HTTPS, Flask-WTF refuses a form post without a same-origin
# Referer, so the form on this page could not be sent.)
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}


class JoinForm(Form):
    name = StringField(
        "Your name",
        validators=[DataRequired("Your name is required."), Length(max=100)],
        render_kw={"autocomplete": "name"},
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Password is required."),
            Length(
                min=PASSWORD_MIN, message=f"Password must be at least {PASSWORD_MIN} characters."
            ),
        ],
        description=PASSWORD_HINT,
        render_kw={"autocomplete": "new-password"},
    )


class AcceptForm(Form):
    """Only the CSRF token: a signed-in person accepts with one button."""


def _page(template: str, invite: Invite, status: int = 200, **context):
    return (
        render_template(template, invite=invite, token=request.view_args["token"], **context),
        status,
        PRIVATE,
    )


def _gone(error: DomainError):
    return (
        render_template("invites/gone.html", message=error.message, status=error.status),
        error.status,
        PRIVATE,
    )


def _join(membership, message: str):
    session["org_id"] = membership.organization_id
    flash(message, "success")
    return redirect(url_for("tokens.index"))


@bp.route("/<token>", methods=["GET", "POST"])
def accept(token: str):
    try:
        invite = member_service.invite_for_link(token)
    except DomainError as exc:
        if exc.status not in (404, 410):
            raise
        return _gone(exc)
    org_name = invite.organization.name

    if current_user.is_authenticated:
        if current_user.email != invite.email:
            return _page("invites/wrong_account.html", invite, 403)
        form = AcceptForm()
        if request.method == "POST" and form.validate_on_submit():
            try:
                joined = member_service.accept_invite(
                    invite, current_user, ip=client_ip(), user_agent=request.user_agent.string
                )
            except member_service.InviteGone as exc:
                db.session.rollback()
                return _gone(exc)
            db.session.commit()
            if joined.already_member:
                return _join(joined.membership, f"You were already a member of {org_name}.")
            return _join(joined.membership, f"You joined {org_name} as {joined.membership.role}.")
        return _page("invites/accept.html", invite, 400 if form.errors else 200, form=form)

    if accounts.user_by_email(invite.email) is not None:
        # An existing account signs in first, then comes back to accept.
        return _page(
            "invites/sign_in.html", invite, login_url=url_for("auth.login", next=request.path)
        )

    form = JoinForm()
    if form.validate_on_submit():
        try:
            user, membership = member_service.accept_invite_as_new_user(
                invite,
                name=form.name.data,
                password=form.password.data,
                ip=client_ip(),
                user_agent=request.user_agent.string,
            )
        except member_service.InviteGone as exc:
            db.session.rollback()
            return _gone(exc)
        except ValidationFailed as exc:
            db.session.rollback()
            if "email" in exc.details:
                return _page(
                    "invites/sign_in.html",
                    invite,
                    400,
                    login_url=url_for("auth.login", next=request.path),
                )
            show_errors(form, exc)
        else:
            db.session.commit()
            start_session(user, membership.organization_id)
            return _join(membership, f"Welcome to {org_name}, {user.name}.")
    return _page("invites/join.html", invite, 400 if form.errors else 200, form=form)
