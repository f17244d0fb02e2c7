"""The front door, the health check and the organization switcher."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, redirect, request, session, url_for
from flask_login import current_user, login_required

from blueprints.web import current_actor, current_membership, current_org, role_required
from extensions import csrf, db
from services import accounts, leaks
from services.urls import safe_next

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("tokens.index"))
    return redirect(url_for("auth.login"))


@bp.get("/healthz")
@csrf.exempt
def healthz():
    try:
        db.session.execute(sa.text("SELECT 1"))
    except Exception:
        db.session.rollback()
        return jsonify({"status": "unavailable"}), 503
    return jsonify({"status": "ok"})


@bp.post("/organizations/<int:org_id>/switch")
@login_required
def switch_organization(org_id: int):
    membership = accounts.membership_in(current_user, org_id)
    if membership is None:
        abort(404)
    session["org_id"] = membership.organization_id
    current_membership()  # refresh g for anything rendered after
    return redirect(safe_next(request.form.get("next")) or url_for("tokens.index"))


@bp.post("/organizations/leak-alert/dismiss")
@login_required
@role_required("admin")
def dismiss_leak_alert():
    """Hide the leaked-token banner for everyone in the current organization (audited)."""
    leaks.dismiss_alert(current_org(), current_actor())
    db.session.commit()
    return redirect(safe_next(request.form.get("next")) or url_for("tokens.index"))
