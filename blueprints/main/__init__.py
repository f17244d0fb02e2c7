"""The front door, the health check and the organization switcher."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from blueprints.forms import Form
from blueprints.health import health_check
from blueprints.web import (
    client_ip,
    current_actor,
    current_membership,
    current_org,
    remember_organization,
    role_required,
    show_errors,
)
from extensions import csrf, db
from services import accounts, leaks
from services.errors import ValidationFailed
from services.urls import safe_next

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("tokens.index"))
    return redirect(url_for("auth.login"))


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico before reading the page's icon link."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


@bp.get("/healthz")
@csrf.exempt
def healthz():
    """What blueprints/health.py answers before Flask, should a probe reach Flask."""
    if health_check(current_app).database_answers():
        return {"status": "ok"}
    return {"status": "unavailable"}, 503, {"Retry-After": "5"}


class NewOrganizationForm(Form):
    name = StringField(
        "Organization name",
        validators=[DataRequired(), Length(max=100)],
        description="Your company or team. You will be its owner.",
    )


@bp.route("/organizations/new", methods=["GET", "POST"])
@login_required
def new_organization():
    """Start an organization: for someone removed from their last one, or starting another."""
    form = NewOrganizationForm()
    if form.validate_on_submit():
        try:
            org = accounts.create_organization(
                current_user,
                name=form.name.data,
                default_rate_limit=current_app.config["RATE_LIMIT_DEFAULT"],
                ip=client_ip(),
                user_agent=request.user_agent.string,
                max_owned=current_app.config["MAX_OWNED_ORGANIZATIONS"],
            )
        except ValidationFailed as exc:
            db.session.rollback()
            show_errors(form, exc)
        else:
            db.session.commit()
            session["org_id"] = org.id
            flash(f"Created {org.name}. You are its owner.", "success")
            return remember_organization(redirect(url_for("tokens.index")), org.id)
    return render_template("main/new_organization.html", form=form), 400 if form.errors else 200


@bp.post("/organizations/<id:org_id>/switch")
@login_required
def switch_organization(org_id: int):
    membership = accounts.membership_in(current_user, org_id)
    if membership is None:
        abort(404)
    session["org_id"] = membership.organization_id
    current_membership()  # refresh g for anything rendered after
    response = redirect(safe_next(request.form.get("next")) or url_for("tokens.index"))
    return remember_organization(response, membership.organization_id)


@bp.post("/organizations/leak-alert/dismiss")
@login_required
@role_required("admin")
def dismiss_leak_alert():
    """Hide the leaked-token banner for everyone in the current organization (audited)."""
    leaks.dismiss_alert(current_org(), current_actor())
    db.session.commit()
    return redirect(safe_next(request.form.get("next")) or url_for("tokens.index"))
