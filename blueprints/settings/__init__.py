"""Settings → Members and Key policy (SPEC §1, §6). Placeholders until they land."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.get("/members")
@login_required
def members():
    return render_template("settings/members.html")


@bp.get("/policy")
@login_required
def policy():
    return render_template("settings/policy.html")
